"""Charts for the reports, drawn by matplotlib and inlined as SVG (the page must open offline)."""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from harness.compare import ERROR_HIST_DECADES  # noqa: E402

plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False})
PALETTE = matplotlib.color_sequences["tab10"]
RUNTIME_COLOURS = list(matplotlib.color_sequences["tab10"]) + list(matplotlib.color_sequences["Dark2"])


def runtime_colour(name: str):
    """One colour per runtime on every chart of a page: its place in the table of runtimes."""
    from harness.runners.table import RUNTIMES

    order = list(RUNTIMES)
    base = name.split(" · ")[-1].split("~")[0]
    i = order.index(base) if base in order else len(order) + sum(map(ord, base))
    return RUNTIME_COLOURS[i % len(RUNTIME_COLOURS)]


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inlined in HTML
    # Each figure's ids (clip paths) must be unique within the page.
    token = f"f{id(buf):x}"
    return re.sub(r'id="([^"]+)"', rf'id="{token}-\1"', text).replace('url(#', f'url(#{token}-').replace('href="#', f'href="#{token}-')


def error_histogram(counts: list[int], title: str) -> str:
    """A small inline SVG of the |error| histogram, drawn directly (no matplotlib): one per output of
    every case, so it must cost microseconds, not the ~0.2 s of a matplotlib figure."""
    labels = ["<1e-10"] + [f"1e{k}" for k in ERROR_HIST_DECADES[1:]] + ["≥100"]
    width, height, left, bottom, top = 420, 150, 42, 40, 18
    n = len(counts)
    step = (width - left - 8) / n
    peak = max(counts) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<title>{_esc(title)}</title>',
             f'<text x="{width / 2}" y="12" font-size="11" text-anchor="middle">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 8}" y2="{height - bottom}" stroke="#444"/>',
             f'<text x="4" y="{top + 8}" font-size="9">{peak}</text>',
             f'<text x="4" y="{height - bottom}" font-size="9">0</text>']
    for i, (count, label) in enumerate(zip(counts, labels)):
        h = (height - bottom - top) * count / peak
        x = left + i * step
        label = _esc(label)
        parts.append(f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}" fill="#1f77b4">'
                     f'<title>{label}: {count} elements</title></rect>')
        parts.append(f'<text font-size="8" text-anchor="end" transform="translate({x + step / 2 + 3:.1f},{height - bottom + 6}) rotate(-60)">{label}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 2}" font-size="9" text-anchor="middle">|error| below (bin\'s upper edge)</text></svg>')
    return "".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def latency_chart(rows: list[dict], title: str) -> str:
    """Horizontal p50 bars with p10–p90 whiskers (log scale) and the cold first call as a dot.
    rows: {label, runtime, p10, p50, p90, first}."""
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 0.9))
    for i, r in enumerate(rows):
        color = runtime_colour(r["runtime"])
        ax.barh(i, r["p50"], color=color, alpha=0.85)
        ax.errorbar(r["p50"], i, xerr=[[r["p50"] - r["p10"]], [r["p90"] - r["p50"]]], fmt="none", ecolor="black", capsize=2, lw=0.8)
        if r.get("first"):
            ax.plot(r["first"], i, "o", color="black", markersize=3)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (bar: p50, whiskers: p10–p90, dot: first call, cold)")
    ax.set_title(title)
    return _svg(fig)


def scaling_chart(series: dict[str, list[tuple[float, float]]], title: str, ylabel: str = "p50 ms", xlabel: str = "batch") -> str:
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    for i, (label, points) in enumerate(sorted(series.items())):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", ms=3, lw=1, label=label, color=runtime_colour(label.split(" · ")[1] if " · " in label else label),
                ls=["-", "--", ":", "-."][i % 4])
    ax.set_xscale("log", base=2 if xlabel == "batch" else 10)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # Beside the axes, never over the data; colour is the runtime (as on every chart), line style the format.
    ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 + len(series) // 14)
    return _svg(fig)


def history_chart(runs: list[str], counts: dict[str, list[int]], p50: dict[str, list[float | None]]) -> str:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
    bottom = [0] * len(runs)
    colors = {"pass": "#2e7d32", "xfail": "#f9a825", "fail": "#c62828", "error": "#ef6c00", "crash": "#6a1b9a",
              "timeout": "#8e24aa", "skip": "#9e9e9e", "unsupported": "#bdbdbd", "xpass": "#fdd835", "inconclusive": "#00acc1"}
    for status, values in counts.items():
        ax1.bar(range(len(runs)), values, bottom=bottom, label=status, color=colors.get(status))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set_xticks(range(len(runs)), runs, rotation=45, ha="right", fontsize=6)
    ax1.set_title("verdicts per run")
    ax1.legend(fontsize=6, frameon=False)
    for label, series in sorted(p50.items()):
        points = [(x, v) for x, v in enumerate(series) if v is not None and math.isfinite(v)]
        ax2.plot([x for x, _ in points], [v for _, v in points], marker="o", ms=3, lw=1, label=label, color=runtime_colour(label))
    ax2.set_xticks(range(len(runs)), runs, rotation=45, ha="right", fontsize=6)
    ax2.set_yscale("log")
    ax2.set_title("median p50 per runtime (ms)")
    ax2.legend(fontsize=6, frameon=False)
    return _svg(fig)


def gflops_chart(rows: list[dict], peaks: dict[str, float], title: str) -> str:
    """Achieved GFLOP/s per case, with this machine's measured GEMM peak per thread count as lines.
    rows: {label, gflops}."""
    fig, ax = plt.subplots(figsize=(7.5, 0.26 * len(rows) + 1.0))
    ax.barh(range(len(rows)), [r["gflops"] for r in rows], color=PALETTE[2])
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    for i, (threads, peak) in enumerate(sorted(peaks.items())):
        if peak:
            ax.axvline(peak, color=PALETTE[3 + i], ls="--", lw=1, label=f"GEMM peak, {threads} thread(s): {peak:.0f}")
    ax.set_xlabel("GFLOP/s (at p50)")
    ax.set_title(title)
    if any(peaks.values()):
        ax.legend(fontsize=6, frameon=False)
    return _svg(fig)
