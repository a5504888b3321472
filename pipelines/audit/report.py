"""Rendering an audit: a self-contained HTML report (inline SVG plots, sample pairs) and a PNG histogram.

Plots are drawn with matplotlib (Agg) and embedded as SVG text, so the HTML file has no external assets.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime

import numpy as np

from .stats import ALL, BINS, HIGH, LOW, SourceStats

PLOT_BINS = 100  # bins shown: the 1e-4 histogram is summed into these


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display_range(stats: dict[str, SourceStats]) -> tuple[float, float]:
    s = stats[ALL]
    lo, hi = max(LOW, s.minimum - 0.02), min(HIGH, s.maximum + 0.02)
    return (lo, hi) if hi > lo else (LOW, HIGH)


def _coarse(hist: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    first = int((lo - LOW) / (HIGH - LOW) * BINS)
    last = max(first + 1, int(np.ceil((hi - LOW) / (HIGH - LOW) * BINS)))
    edges = np.linspace(first, last, PLOT_BINS + 1).astype(int)
    counts = np.add.reduceat(hist[first:last], edges[:-1] - first)
    return LOW + edges * (HIGH - LOW) / BINS, counts


def histogram_figure(stats: dict[str, SourceStats], threshold: float):
    plt = _matplotlib()
    lo, hi = _display_range(stats)
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for name, s in sorted(stats.items(), key=lambda kv: kv[0] != ALL):
        edges, counts = _coarse(s.hist, lo, hi)
        density = counts / max(s.count, 1)
        style = dict(color="black", linewidth=2.2) if name == ALL else dict(linewidth=1.3)
        ax.stairs(density, edges, label=f"{name} (n={s.count:,})", **style)
    ax.axvline(threshold, color="crimson", linestyle="--", linewidth=1.5, label=f"threshold {threshold:g}")
    ax.set_xlabel("title-passage cosine")
    ax.set_ylabel("share of pairs per bin")
    ax.set_title("Score distribution by source")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def keep_rate_figure(stats: dict[str, SourceStats], threshold: float):
    plt = _matplotlib()
    lo, hi = _display_range(stats)
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for name, s in sorted(stats.items(), key=lambda kv: kv[0] != ALL):
        above = np.cumsum(s.hist[::-1])[::-1] / max(s.count, 1)
        x = LOW + np.arange(BINS) * (HIGH - LOW) / BINS
        window = (x >= lo) & (x <= hi)
        style = dict(color="black", linewidth=2.2) if name == ALL else dict(linewidth=1.3)
        ax.plot(x[window], above[window], label=name, **style)
    overall = stats[ALL]
    rate = overall.at_or_above[np.argmin(np.abs(overall.thresholds - threshold))] / max(overall.count, 1)
    ax.axvline(threshold, color="crimson", linestyle="--", linewidth=1.5)
    ax.annotate(f"threshold {threshold:g}: keeps {rate:.1%}", (threshold, rate), xytext=(10, 10),
                textcoords="offset points", color="crimson")
    ax.set_xlabel("threshold")
    ax.set_ylabel("share kept (score >= threshold)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Keep rate by threshold")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    _matplotlib().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def write_png(path: str, stats: dict[str, SourceStats], threshold: float) -> None:

    from ..outputs import write_file

    fig = histogram_figure(stats, threshold)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _matplotlib().close(fig)
    write_file(path, buf.getvalue())


def _samples_table(rows: list[dict], title: str) -> str:
    if not rows:
        return f"<h3>{html.escape(title)}</h3><p>No pairs in this window.</p>"
    body = "".join(
        f"<tr><td class=num>{r['score']:.4f}</td><td>{html.escape(str(r.get('source', '')))}</td>"
        f"<td>{html.escape(r.get('title') or '')}</td><td>{html.escape((r.get('passage') or '')[:300])}</td></tr>"
        for r in rows
    )
    return (f"<h3>{html.escape(title)}</h3><table><tr><th>score</th><th>source</th><th>title</th>"
            f"<th>passage (first 300 characters)</th></tr>{body}</table>")


def write_html(path: str, stats: dict[str, SourceStats], threshold: float, samples: dict[str, list[dict]],
               window: float, inputs: list[str], extra: str = "") -> None:
    """The self-contained report; ``extra`` is further HTML placed after the summary (the proxy ablation)."""

    overall = stats[ALL]
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=num>{s.count:,}</td><td class=num>{s.mean:.4f}</td>"
        + "".join(f"<td class=num>{s.quantile(q):.4f}</td>" for q in (0.05, 0.25, 0.5, 0.75, 0.95))
        + f"<td class=num>{s.at_or_above[np.argmin(np.abs(s.thresholds - threshold))] / max(s.count, 1):.2%}</td></tr>"
        for name, s in sorted(stats.items(), key=lambda kv: kv[0] != ALL)
    )
    page = f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>cmtp audit: threshold {threshold:g}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.plot svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>Filtering-threshold audit</h1>
<p>{overall.count:,} scored pairs from {html.escape(", ".join(inputs))}; threshold <b>{threshold:g}</b>;
written {datetime.now(UTC).isoformat(timespec="seconds")}.</p>
<h2>Summary</h2>
<table><tr><th>source</th><th>pairs</th><th>mean</th><th>p5</th><th>p25</th><th>p50</th><th>p75</th><th>p95</th>
<th>kept at {threshold:g}</th></tr>{rows}</table>
{extra}
<h2>Score histogram</h2><div class="plot">{_svg(histogram_figure(stats, threshold))}</div>
<h2>Keep-rate curve</h2><div class="plot">{_svg(keep_rate_figure(stats, threshold))}</div>
<h2>Pairs at the cut</h2>
<p>Random samples (seeded) of the pairs within {window:g} of the threshold: read them and judge the cut.</p>
{_samples_table(samples.get("above", []), f"Just above (kept): score in [{threshold:g}, {threshold + window:g})")}
{_samples_table(samples.get("below", []), f"Just below (dropped): score in [{threshold - window:g}, {threshold:g})")}
</body></html>"""
    from ..outputs import write_file

    write_file(path, page)
