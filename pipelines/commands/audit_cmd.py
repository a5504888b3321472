"""``cmtp audit``: how many pairs each threshold keeps, per source, with the pairs at the cut to read."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum

import numpy as np
import typer
from rich.table import Table

from cmtp.schemas.errors import CmtpError
from cmtp.schemas.ranges import check_value

from ..audit.proxy import ProxyConfig
from ..audit.stats import ALL, collect, grid_from_quantiles, label, open_scored, sample_near_threshold, threshold_grid
from ..console import err, out
from .options import config_options


def _floats(spec: str | None, flag: str) -> list[float]:
    if not spec:
        return []
    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError as exc:
        raise CmtpError(f"{flag} {spec!r}: give a comma list of numbers") from exc


HELP = """Audit a filtering threshold on scored pairs (cmtp score output, local or any fsspec URL), streaming
the files with bounded memory.

Examples:

  cmtp audit work/score

  cmtp audit work/score --thresholds 0.30:0.60:0.01 --report audit.html --plot hist.png

  cmtp audit work/score --target-keep-rate 0.7

  cmtp audit work/score --compare work/score-text2vec --format json

  cmtp audit work/score --proxy --proxy-keep-rates 0.9,0.8,0.6 --report audit.html

  cmtp audit work/score --proxy --proxy-input before-dedup=work/extract --proxy-seeds 5

--proxy trains a small proxy student (builtin:me5-small-l2) with the same budget on each cut, on no filter and on
a random subset of each cut's size, over several seeds, and says which cut makes a measurably better model.
"""

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _default_threshold(dataset) -> float:
    if "threshold" in dataset.schema.names:
        for batch in dataset.to_batches(columns=["threshold"], batch_size=1):
            if batch.num_rows:
                return float(batch.column("threshold")[0].as_py())
    return 0.43


def _bar_chart(stats, threshold: float, bins: int = 24) -> Table:
    s = stats[ALL]
    lo, hi = max(-1.0, s.minimum - 1e-4), min(1.0, s.maximum + 1e-4)
    edges = np.linspace(lo, hi + 1e-9, bins + 1)
    centres = -1 + (np.arange(len(s.hist)) + 0.5) * 2 / len(s.hist)
    counts, _ = np.histogram(centres, bins=edges, weights=s.hist)
    table = Table(title="score histogram (all sources)", show_header=False, box=None)
    peak = max(counts.max(), 1)
    for left, right, n in zip(edges[:-1], edges[1:], counts, strict=True):
        mark = " <- threshold" if left <= threshold < right else ""
        table.add_row(f"[{left:+.3f}, {right:+.3f})", "█" * int(round(40 * n / peak)), f"{int(n):,}{mark}")
    return table


def rethreshold_command(inputs: list[str], threshold: float) -> str:
    """The command that applies ``threshold`` to these scores without re-scoring."""
    import shlex

    source = inputs[0].rstrip("/") if len(inputs) == 1 else "SCORE_DIR"
    target = shlex.quote(f"{source}-t{threshold:.4f}")
    return f"cmtp score --rethreshold {threshold:.4f} {shlex.quote(source)} --out {target}"


def _summary(stats, threshold: float, target: float | None) -> dict:
    summary = {"threshold": threshold, "sources": {}}
    for name, s in stats.items():
        summary["sources"][name] = {
            "count": s.count, "mean": s.mean, "min": s.minimum, "max": s.maximum,
            "quantiles": {str(q): s.quantile(q) for q in QUANTILES},
            "keep": [{"threshold": float(t), "kept": int(k), "rate": float(k / max(s.count, 1))}
                     for t, k in zip(s.thresholds, s.at_or_above, strict=True)],
        }
        if target is not None:
            summary["sources"][name]["threshold_for_target"] = s.threshold_for_keep_rate(target)
    if target is not None:
        summary["target_keep_rate"] = target
        summary["suggested_threshold"] = stats[ALL].threshold_for_keep_rate(target)
    return summary


def _print_tables(stats, summary: dict, threshold: float) -> None:
    names = sorted(stats, key=lambda n: n != ALL)
    keep = Table(title=f"keep rate by threshold (current {threshold:g})")
    keep.add_column("threshold", justify="right")
    for name in names:
        keep.add_column(f"{name}\n(n={stats[name].count:,})", justify="right")
    first = stats[ALL]
    for i, t in enumerate(first.thresholds):
        marker = " (current)" if np.float32(t) == np.float32(threshold) else ""
        keep.add_row(f"{label(t)}{marker}", *[
            f"{stats[n].at_or_above[i] / max(stats[n].count, 1):6.1%} ({stats[n].at_or_above[i]:,})" for n in names])
    out.print(keep)
    quant = Table(title="score quantiles (resolution 1e-4)")
    for column in ["source", "n", "mean", *[f"p{int(q * 100)}" for q in QUANTILES]]:
        quant.add_column(column, justify="right")
    for name in names:
        s = stats[name]
        quant.add_row(name, f"{s.count:,}", f"{s.mean:.3f}", *[f"{s.quantile(q):.3f}" for q in QUANTILES])
    out.print(quant)
    out.print(_bar_chart(stats, threshold))
    if "suggested_threshold" in summary:
        out.print(f"To keep {summary['target_keep_rate']:.1%} of all pairs, use threshold "
                  f"{summary['suggested_threshold']:.4f}:")
        out.print(summary["apply_with"], markup=False, soft_wrap=True)


def _print_comparison(c) -> None:
    out.print(f"compare: {c.common:,} common pairs ({c.only_a:,} only in A, {c.only_b:,} only in B); "
              f"Spearman rho {c.spearman:.4f}; A keeps {c.kept_a:.1%} at {c.threshold_a:g}, B keeps {c.kept_b:.1%} at "
              f"{c.threshold_b:g}; they agree on {c.agreement:.1%} of pairs")
    table = Table(title="pairs the two runs rank most differently")
    for column in ["score A", "score B", "rank shift", "title", "passage"]:
        table.add_column(column)
    for d in c.disagreements:
        table.add_row(f"{d['score_a']:.4f}", f"{d['score_b']:.4f}", f"{d['rank_shift']:+.2f}",
                      (d.get("title") or "")[:40], (d.get("passage") or "")[:60])
    out.print(table)


@config_options(ProxyConfig)
def audit(
    scored: list[str] = typer.Argument(..., help="scored Parquet: cmtp score output directory, files or globs"),
    threshold: float = typer.Option(None, help="the threshold to audit (default: the one the scores were cut at)"),
    thresholds: str = typer.Option(None, help="START:STOP:STEP or a comma list (default: the scores' 1st to 99th "
                                              "percentile on a round step, at most 30 rows)"),
    report: str = typer.Option(None, help="write a self-contained HTML report here"),
    plot: str = typer.Option(None, help="write the score histogram as PNG here"),
    samples: int = typer.Option(20, min=0, help="pairs shown just above and just below the threshold in the report"),
    window: float = typer.Option(0.02, min=0, help="'just above/below' means within this distance of the threshold"),
    seed: int = typer.Option(0, help="seed of the sampled pairs"),
    target_keep_rate: float = typer.Option(None, help="suggest the threshold that keeps this share (0-1)"),
    compare_with: str = typer.Option(None, "--compare", help="another scored run over the same pairs"),
    top: int = typer.Option(10, min=0, help="disagreeing pairs shown by --compare"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv"),
    proxy: bool = typer.Option(False, "--proxy", help="train a proxy student on each cut and compare (minutes)"),
    proxy_thresholds: str = typer.Option(None, help="cuts for --proxy as scores, a comma list"),
    proxy_keep_rates: str = typer.Option(None, help="cuts for --proxy as shares kept, a comma list "
                                                    "(default 0.9,0.8,0.7,0.6 when no --proxy-thresholds)"),
    proxy_work: str = typer.Option(None, help="cache of the proxy runs (default: SCORED-proxy beside the input)"),
    proxy_plot: str = typer.Option(None, help="write the proxy quality plot as PNG here"),
    **flags,  # the proxy run's options, generated from ProxyConfig's fields
) -> None:
    check_value("--target-keep-rate", target_keep_rate, gt=0, le=1)
    proxy_config = None
    given = {name: value for name, value in flags.items() if value not in (None, [], ())}
    if proxy:
        proxy_config = ProxyConfig(thresholds=_floats(proxy_thresholds, "--proxy-thresholds"),
                                   keep_rates=_floats(proxy_keep_rates, "--proxy-keep-rates"), **given)
    elif given or proxy_thresholds or proxy_keep_rates or proxy_plot:
        raise CmtpError("--proxy-* options, --tasks, --suite, --max-per-task and --device need --proxy")
    from ..outputs import check_writable

    for path, what in [(report, "--report"), (plot, "--plot"), (proxy_plot, "--proxy-plot")]:
        if path:
            check_writable(path, what)
    grid = threshold_grid(thresholds) if thresholds else np.zeros(0, np.float32)
    for value in [*grid.tolist(), threshold]:
        check_value("threshold", value, "scores are cosines", ge=-1, le=1)
    dataset = open_scored(scored)
    threshold = _default_threshold(dataset) if threshold is None else threshold
    if not thresholds:  # a first pass for the quantiles, the grid from them, then exact counts on it
        grid = threshold_grid(grid_from_quantiles(collect(dataset, np.array([threshold], np.float32))[ALL]))
    grid = np.unique(np.append(grid, np.float32(threshold)))
    stats = collect(dataset, grid)
    summary = _summary(stats, threshold, target_keep_rate)
    if "suggested_threshold" in summary:
        summary["apply_with"] = rethreshold_command(scored, summary["suggested_threshold"])
    comparison = None
    if compare_with:
        from ..audit.compare import compare

        comparison = compare(dataset, open_scored([compare_with]), threshold, None, top)
        summary["compare"] = comparison.to_dict()
    proxy_report = None
    if proxy_config is not None:
        proxy_report = _run_proxy(dataset, scored, proxy_config, proxy_work)
        summary["proxy"] = proxy_report.to_dict()
        if proxy_plot:
            from ..audit.proxy_report import write_proxy_png

            write_proxy_png(proxy_plot, proxy_report)
            err.print(f"proxy plot written to {proxy_plot}")
    if report:
        from ..audit.report import write_html

        near = sample_near_threshold(dataset, threshold, samples, seed, window)
        extra = ""
        if proxy_report is not None:
            from ..audit.proxy_report import proxy_html

            extra = proxy_html(proxy_report)
        write_html(report, stats, threshold, near, window, scored, extra)
        err.print(f"report written to {report}")
    if plot:
        from ..audit.report import write_png

        write_png(plot, stats, threshold)
        err.print(f"histogram written to {plot}")
    if fmt is OutputFormat.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2, default=float))
    elif fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["source", "threshold", "kept", "rate"])
        for name, s in summary["sources"].items():
            for k in s["keep"]:
                writer.writerow([name, f"{k['threshold']:.4f}", k["kept"], f"{k['rate']:.6f}"])
        print(buf.getvalue(), end="")
    else:
        _print_tables(stats, summary, threshold)
        if comparison:
            _print_comparison(comparison)
        if proxy_report is not None:
            from ..audit.proxy_report import proxy_table

            out.print(proxy_table(proxy_report))
            out.print(f"verdict: {proxy_report.verdict()}")


def _run_proxy(dataset, inputs: list[str], config, work: str | None):
    from ..audit.proxy import run_proxy_audit

    if work is None:
        if len(inputs) != 1 or "://" in inputs[0]:
            raise CmtpError("--proxy needs --proxy-work DIR when the input is not one local folder")
        work = inputs[0].rstrip("/") + "-proxy"
    return run_proxy_audit(dataset, config, work, log=lambda line: err.print(line, markup=False, highlight=False))
