"""The verdict matrix for a terminal: rows fixture × format, columns runtime."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from harness.artifact import one_line
from harness.records import CaseResult

STYLE = {
    "pass": "green", "xfail": "yellow", "skip": "dim", "unsupported": "dim", "inconclusive": "bold cyan",
    "fail": "bold red", "error": "red", "crash": "bold magenta", "timeout": "magenta", "xpass": "bold yellow",
}
# Worst first: the cell shows the worst verdict over its batches.
ORDER = ["crash", "timeout", "error", "fail", "xpass", "inconclusive", "xfail", "unsupported", "skip", "pass"]


def _max_error(result: CaseResult) -> float | None:
    return result.max_abs


# Short verdicts, so that eleven runtime columns read at 100 columns; the causes are listed below the table.
SHORT = {"pass": "✓", "fail": "FAIL", "error": "ERR", "crash": "CRASH", "timeout": "T/O", "xpass": "XPASS", "inconclusive": "INC",
         "xfail": "xf", "unsupported": "n/a", "skip": "skip"}
def codes_of(runtimes: dict) -> dict[str, str]:
    """Each runtime's column code as a run records it (run.json `runtimes`, from the runtime's table
    entry); the legend under the table spells them out. A runtime without one is shown by its name."""
    return {rt: info["code"] for rt, info in runtimes.items() if isinstance(info, dict) and isinstance(info.get("code"), str) and info["code"]}


def _worst(results: list[CaseResult]) -> CaseResult:
    return min(results, key=lambda r: ORDER.index(r.status) if r.status in ORDER else 0)


def snr_judged(result: CaseResult) -> bool:
    """Judged by SNR (quantised formats): its box shows the SNR, not an absolute error."""
    rules = (result.tolerance or {}).values()
    return bool(rules) and all("atol" not in t and "rtol" not in t for t in rules)


def min_snr(result: CaseResult) -> float | None:
    values = [float(v) for m in result.metrics.values() for v in [m.number("snr_db")] if v is not None]
    return min(values) if values else None


def cell(results: list[CaseResult]) -> str:
    """The worst verdict over the batches, and for a pass what it was judged by: the largest error's
    order of magnitude, or the lowest SNR for quantised formats (judged by SNR)."""
    status = _worst(results).status or ""
    text = f"[{STYLE.get(status, '')}]{SHORT.get(status, status)}[/]"
    if status == "pass" and all(snr_judged(r) for r in results):
        snrs = [s for s in (min_snr(r) for r in results) if s is not None]
        if snrs:
            text += "∞dB" if min(snrs) == float("inf") else f"{min(snrs):.0f}dB"
        return text
    errors = [e for e in (_max_error(r) for r in results) if e is not None]
    if status == "pass" and errors:
        text += _magnitude(max(errors))
    return text


def _magnitude(x: float) -> str:
    """An error's order of magnitude in at most four characters: 3e-8, 0."""
    if x <= 0:
        return "0"
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _ms(v: float) -> str:
    """A latency in at most five characters: 71.5, 0.38, 34µ (below 0.01 ms in microseconds)."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.3g}"
    if v >= 0.01:
        return f"{v:.2f}"
    us = v * 1000
    if us < 1:
        return f"{us:.1g}µ"
    return f"{us:.1f}µ" if us < 9.95 else f"{us:.0f}µ"  # never `1e+01µ`: 9.96 µs is 10µ


def p50_cell(results: list[CaseResult]) -> str:
    """p50 (ms) at the smallest batch that was timed; `emu` for a worker under an emulator, whose time
    is the emulator's and is never set beside native ones (results.jsonl keeps it)."""
    if results and all(r.emulated for r in results):
        return "emu"
    timed = [(r.batch, p50) for r in results for p50 in [r.timing.stat("p50_ms")] if p50 is not None]
    if not timed:
        return ""
    return _ms(min(timed, key=lambda t: t[0])[1])


def display_name(fixture: str) -> str:
    """A fixture's name in the matrix: a generated fuzz regression (`fuzz-<model>-<format>-<runtime>-<hash>`,
    50 characters and more) by its hash alone (`fuzz-1beb18bf87`); the legend under the matrix spells it out."""
    if fixture.startswith("fuzz-") and len(fixture) > 24:
        return "fuzz-" + fixture.rsplit("-", 1)[-1][:12]
    return fixture


def _grid(results: list[CaseResult], title: str, render, console: Console, codes: dict[str, str]) -> None:
    from rich import box

    from harness.runners.table import in_table_order

    runtimes = in_table_order(r.runtime for r in results)  # columns by language, as the table lists them
    rows: dict[tuple[str, str], dict[str, list[CaseResult]]] = {}
    for r in results:
        rows.setdefault((r.fixture, r.format), {}).setdefault(r.runtime, []).append(r)
    cells = {key: {rt: render(rs) for rt, rs in by_rt.items()} for key, by_rt in rows.items()}

    def make(group: list[str], part: str = "") -> Table:
        table = Table(title=title + part, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, title_justify="left", collapse_padding=True)
        table.add_column("fixture", no_wrap=True)
        table.add_column("format", no_wrap=True)
        for rt in group:
            table.add_column(codes.get(rt, rt), no_wrap=True)
        for (fixture, fmt), by_rt in cells.items():
            if any(rt in by_rt for rt in group):
                table.add_row(display_name(fixture), fmt, *[by_rt.get(rt, "") for rt in group])
        return table

    # More runtimes than the console's width holds: consecutive groups of columns (in table order),
    # one table each, rather than cut cells.
    from rich.measure import Measurement

    groups: list[list[str]] = [[]]
    for rt in runtimes:
        if groups[-1] and Measurement.get(console, console.options.update_width(10_000), make(groups[-1] + [rt])).maximum > console.width:
            groups.append([])
        groups[-1].append(rt)
    for i, group in enumerate(groups):
        console.print(make(group, f" ({i + 1}/{len(groups)})" if len(groups) > 1 else ""))


def print_matrix(results: list[CaseResult], console: Console | None = None,
                 title: str = "verdicts", codes: dict[str, str] | None = None) -> None:
    """The verdict matrix; `codes` names the runtime columns (codes_of a run's runtimes)."""
    console = console or Console()
    codes = codes or {}
    _grid(results, title, cell, console, codes)
    runtimes = list(dict.fromkeys(r.runtime for r in results))
    legend = [f"{codes[rt]}={rt}" for rt in codes if rt in runtimes and codes[rt] != rt]
    if legend:
        console.print("runtimes: " + ", ".join(legend), highlight=False, soft_wrap=False)
    shortened = [f"{display_name(f)} = {f}" for f in dict.fromkeys(r.fixture for r in results) if display_name(f) != f]
    if shortened:
        console.print("fixtures: " + ", ".join(shortened), highlight=False)
    console.print("verdicts (worst over batches): ✓ pass with the largest abs error vs the baseline, or the lowest SNR where the "
                  "format is judged by SNR; ERR error, T/O timeout, INC inconclusive, xf xfail, n/a unsupported", highlight=False)


def print_latency(results: list[CaseResult], console: Console | None = None, codes: dict[str, str] | None = None) -> None:
    """p50 per case (ms, worker-measured, smallest timed batch; µ: microseconds), laid out like the verdicts."""
    if any(r.timing.stat("p50_ms") is not None for r in results):
        _grid(results, "p50 ms", p50_cell, console or Console(), codes or {})


_PATH = re.compile(r"(?<![\w.`])/(?:[\w.@+-]+/)+[\w.@+-]*")


def cause(result: CaseResult) -> str:
    """What a non-pass result says, without what differs from case to case (paths, case ids): one line,
    shortened as the engine shortens a summary (keeping the sentence that says what is wrong), so a record
    with only its whole error reads the same in the terminal, the page and report.md."""
    status = result.status
    text = (result.reason if status in ("xfail", "xpass", "skip", "inconclusive") else None) or result.summary \
        or result.error or result.reason or ""
    text = one_line(text)
    return _PATH.sub("…", text.replace(result.id, "<case>"))


def cause_groups(results: list[CaseResult]) -> list[dict]:
    """Non-pass results grouped by identical cause, worst first, then the most cases: one entry per
    cause with its status, stage, culprit, cause text and the fixtures, formats and runtimes it covers.
    The terminal prints them as lines, the page as its "what did not pass, and why" table."""
    groups: dict[tuple, list[CaseResult]] = {}
    for r in results:
        if r.status == "pass":
            continue
        groups.setdefault((r.status, r.stage, r.culprit, cause(r)), []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 0, -len(kv[1])))
    return [{"status": status, "stage": stage, "culprit": culprit, "cause": text, "cases": len(members),
             "ids": [r.id for r in members],
             "fixtures": list(dict.fromkeys(r.fixture for r in members)), "formats": list(dict.fromkeys(r.format for r in members)),
             "runtimes": list(dict.fromkeys(r.runtime for r in members))}
            for (status, stage, culprit, text), members in ordered]


def print_causes(results: list[CaseResult], console: Console | None = None) -> None:
    """Non-pass results grouped by identical cause, worst first: one line per cause, naming the
    formats and runtimes it covers, its stage and culprit."""
    console = console or Console()
    for g in cause_groups(results):
        where = f" at {g['stage']}" if g["stage"] else ""
        who = f", {g['culprit']}" if g["culprit"] else ""
        n = g["cases"]
        console.print(f"  [{STYLE.get(g['status'], '')}]{g['status']}[/]{where}{who}: {n} case{'s' if n > 1 else ''} "
                      f"({', '.join(g['fixtures'])}: {'/'.join(g['formats'])} on {', '.join(g['runtimes'])}) — {g['cause']}", highlight=False)


def bench_id(result: CaseResult) -> str:
    """A case's id without what every bench row shares (`-cpu`): fixture, format, runtime, batch, threads."""
    return result.id.replace(f"-{result.device}-b", "-b", 1) if result.device == "cpu" else result.id


def _float_peak_applies(result: CaseResult) -> bool:
    """% of the float32 GEMM peak means something for formats computed in floating point only: int8 and
    dynamic-range formats compute in integers, and no int8 peak is measured. The tolerance class the
    case was judged in, as its record says, tells which."""
    classes = {t.get("class") for t in (result.tolerance or {}).values()}
    return not classes & {"int8", "dynamic-range"}


def print_bench(results: list[CaseResult], peaks: dict, console: Console | None = None) -> None:
    """Latency per case (the median of the round medians, its 95% interval and the between-round noise),
    p90, cold start and load, GFLOP/s against the machine's float32 GEMM peak at that thread count
    (float formats only), peak RSS — readable at 100 columns: the case column wraps, never cuts."""
    from rich import box

    console = console or Console()
    table = Table(title="benchmark (worker-measured; ms; peak = NumPy float32 GEMM on this machine)", box=box.SIMPLE_HEAD,
                  padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left")
    table.add_column("case", overflow="fold", min_width=24)
    for col in ("p50", "95% CI", "noise", "p90", "first", "load", "GFLOP/s", "%peak", "MiB"):
        table.add_column(col, justify="right", no_wrap=True)
    integer_formats = False
    for r in results:
        t = r.timing
        if not t.p50_ms:
            continue
        peak = peaks.get(str(t.threads or 0)) or peaks.get(str(max((int(k) for k in peaks), default=0)))
        gf = r.gflops
        ci = t.p50_ci_ms
        applies = _float_peak_applies(r)
        integer_formats |= bool(gf) and not applies
        table.add_row(
            bench_id(r), _ms(t.p50_ms), f"{_ms(ci[0])}–{_ms(ci[1])}" if ci and len(ci) == 2 else "–",
            f"{100 * t.round_cv:.1f}%" if t.round_cv is not None else "–", _ms(t.p90_ms) if t.p90_ms else "",
            _ms(t.first_ms) if t.first_ms else "", _ms(t.load_ms) if t.load_ms else "",
            f"{gf:.3g}" if gf else "", f"{100 * gf / peak:.0f}" if gf and peak and applies else "",
            f"{(r.peak_rss_bytes or 0) / 2**20:.0f}",
        )
    console.print(table)
    console.print("p50: median of the round medians; 95% CI: bootstrap over rounds; noise: the case's between-round "
                  "coefficient of variation (– with one round); µ: microseconds", highlight=False)
    if integer_formats:
        console.print("%peak: float formats only — int8 and dynamic-range cases compute in integers, and no int8 peak is measured",
                      highlight=False)
    console.print("machine peak GFLOP/s by threads: " + ", ".join(f"{k}: {v:.1f}" if v else f"{k}: ?" for k, v in peaks.items()), highlight=False)
    from harness.bench import peak_notes

    for note in peak_notes(peaks):
        console.print(f"[yellow]note:[/] {note} (this machine's BLAS does not gain from more threads here)", highlight=False)


def print_pairs(pairs: list[dict], labels: list[str], console: Console | None = None) -> None:
    """Paired benchmark: B against A per case, as the median per-round ratio with its 95% interval."""
    console = console or Console()
    table = Table(title=f"paired: B = {labels[1]} against A = {labels[0]} (ratio of per-round medians, B/A)")
    for col in ("case (A)", "A p50 ms", "B p50 ms", "B/A", "95% interval", "rounds", "verdict"):
        table.add_column(col, justify="left" if col in ("case (A)", "verdict") else "right")
    for p in pairs:
        lo, hi = p.get("ci") or (None, None)
        style = "red" if p.get("verdict") == "B slower" else ("green" if p.get("verdict") == "B faster" else "")
        table.add_row(p["a"], f"{p['a_p50_ms']:.4g}", f"{p['b_p50_ms']:.4g}", f"{p['ratio']:.3f}",
                      f"{lo:.3f}–{hi:.3f}" if lo is not None else "–", str(p["rounds"]),
                      f"[{style}]{p.get('verdict', 'too few rounds')}[/]" if style else p.get("verdict", "too few rounds"))
    console.print(table)
