"""What a proxy audit shows: the table (terminal), the plot of proxy quality against the threshold beside the kept
share (PNG or inline SVG in the audit's HTML report), and the HTML section."""

from __future__ import annotations

import html

from rich.table import Table

from .proxy import ProxyReport


def _cell(diff: dict | None) -> str:
    if diff is None:
        return ""
    text = f"{diff['delta']:+.2f} ± {diff['spread']:.2f}" if diff["spread"] == diff["spread"] else \
        f"{diff['delta']:+.2f}"
    return text + ("" if diff["measurable"] else " (n.s.)")


def proxy_table(report: ProxyReport) -> Table:
    rows = report.rows()
    tasks = list(rows[0]["tasks"]) if rows else []
    table = Table(title=f"proxy audit: {report.config['model']}, {report.config['steps']} steps x "
                        f"{report.config['batch_size']} pairs, {report.config['seeds']} seeds "
                        "(scores x 100; n.s. = below 2 pooled SDs: no measurable difference)")
    for column in ["variant", "pairs", "dev avg (mean ± sd)", "vs floor", f"vs {report.baseline}", *tasks]:
        table.add_column(column, justify="left" if column == "variant" else "right")
    table.add_row("untrained proxy (floor)", "", f"{report.floor.dev_average:.2f}", "", "",
                  *[f"{report.floor.scores.get(t, float('nan')):.2f}" for t in tasks])
    for r in rows:
        table.add_row(r["name"], f"{r['pairs']:,}",
                      f"{r['dev_mean']:.2f} ± {r['dev_sd']:.2f}", _cell(r["vs_floor"]), _cell(r["vs_baseline"]),
                      *[f"{r['tasks'][t]:.2f}" for t in tasks])
    return table


def proxy_figure(report: ProxyReport):
    """Proxy dev average (mean ± sd over seeds) against the threshold, for the cuts and their random controls,
    with no filter and the floor as horizontal lines; the kept share on the right axis."""
    from .report import _matplotlib

    plt = _matplotlib()
    rows = report.rows()
    if not any(r["kind"] == "threshold" for r in rows):
        return _variants_figure(plt, report, rows)
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    base = next(r for r in rows if r["name"] == report.baseline)
    ax.axhspan(base["dev_mean"] - base["dev_sd"], base["dev_mean"] + base["dev_sd"], color="grey", alpha=0.2)
    ax.axhline(base["dev_mean"], color="grey", linewidth=1.5, label=f"{report.baseline} {base['dev_mean']:.2f}")
    ax.axhline(report.floor.dev_average, color="black", linestyle=":", linewidth=1.2,
               label=f"untrained proxy {report.floor.dev_average:.2f}")
    for kind, style in [("threshold", dict(color="crimson", marker="o", label="kept by the cut")),
                        ("random", dict(color="steelblue", marker="s", linestyle="--",
                                        label="random subset of the same size"))]:
        points = sorted((r["threshold"], r["dev_mean"], r["dev_sd"]) for r in rows if r["kind"] == kind)
        if points:
            x, y, e = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=e, capsize=4, linewidth=1.5, **style)
    ax.set_xlabel("threshold")
    ax.set_ylabel("proxy dev average (x 100)")
    ax.set_title("Does the cut make a better model? (proxy student, mean ± sd over seeds)")
    cuts = sorted((r["threshold"], r["keep_rate"]) for r in rows if r["kind"] == "threshold")
    if cuts:
        share = ax.twinx()
        share.plot([c[0] for c in cuts], [c[1] for c in cuts], color="darkgreen", alpha=0.5, marker="^",
                   label="share kept")
        share.set_ylabel("share kept", color="darkgreen")
        share.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def _variants_figure(plt, report: ProxyReport, rows: list[dict]):
    """Variants without a threshold (a build's ablation): one bar each, mean ± sd over seeds, the baseline's band and
    the untrained proxy as lines."""
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.45 * len(rows)), dpi=110)
    names = [r["name"] for r in rows][::-1]
    means = [r["dev_mean"] for r in rows][::-1]
    sds = [r["dev_sd"] for r in rows][::-1]
    colors = ["grey" if n == report.baseline else "crimson" for n in names]
    ax.barh(names, means, xerr=sds, color=colors, alpha=0.7, capsize=4)
    base = next(r for r in rows if r["name"] == report.baseline)
    ax.axvspan(base["dev_mean"] - base["dev_sd"], base["dev_mean"] + base["dev_sd"], color="grey", alpha=0.15)
    ax.axvline(report.floor.dev_average, color="black", linestyle=":", linewidth=1.2,
               label=f"untrained proxy {report.floor.dev_average:.2f}")
    low = min(min(m - s for m, s in zip(means, sds, strict=True)), report.floor.dev_average)
    high = max(m + s for m, s in zip(means, sds, strict=True))
    ax.set_xlim(low - 0.1 * (high - low + 1), high + 0.1 * (high - low + 1))
    ax.set_xlabel("proxy dev average (x 100), mean ± sd over seeds")
    ax.set_title(f"Which variant trains a better model? (against {report.baseline}, grey)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_proxy_png(path: str, report: ProxyReport) -> None:
    import io

    from ..outputs import write_file
    from .report import _matplotlib

    fig = proxy_figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _matplotlib().close(fig)
    write_file(path, buf.getvalue())


def proxy_html(report: ProxyReport) -> str:
    """The report's section: verdict, plot and table."""
    from .report import _svg

    rows = report.rows()
    tasks = list(rows[0]["tasks"]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in
                   ["variant", "pairs", "dev avg", "sd", "vs floor", f"vs {report.baseline}", *tasks])
    body = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td class=num>{r['pairs']:,}</td><td class=num>{r['dev_mean']:.2f}</td>"
        f"<td class=num>{r['dev_sd']:.2f}</td><td class=num>{html.escape(_cell(r['vs_floor']))}</td>"
        f"<td class=num>{html.escape(_cell(r['vs_baseline']))}</td>"
        + "".join(f"<td class=num>{r['tasks'][t]:.2f}</td>" for t in tasks) + "</tr>"
        for r in rows)
    c = report.config
    return (f"<h2>Proxy-model ablation</h2><p><b>{html.escape(report.verdict())}</b></p>"
            f"<p>{html.escape(c['model'])} trained {c['steps']} steps x {c['batch_size']} pairs "
            f"(lr {c['learning_rate']:g}, "
            f"temperature {c['temperature']:g}) on each variant, {c['seeds']} seeds; untrained: "
            f"{report.floor.dev_average:.2f}. A difference below twice the pooled standard deviation is marked "
            "n.s. (no measurable difference).</p>"
            f"<div class=\"plot\">{_svg(proxy_figure(report))}</div><table><tr>{head}</tr>{body}</table>")
