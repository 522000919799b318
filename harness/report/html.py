"""`harness report`: index.html (self-contained: inline CSS, JS and SVG), report.md and summary.json,
read from a run folder only."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jinja2

from harness.cases import BAD_STATUSES, STATUSES
from harness.report.terminal import CODES, min_snr, snr_judged
from harness.store import RunData, read_run, sanitize

METRIC_KEYS = ("max_abs", "max_rel", "mean_abs", "rmse", "max_ulp", "cosine", "snr_db", "frac_out_of_tol",
               "nan_mismatch", "inf_mismatch", "required_atol", "required_rtol", "top1", "top5", "top3")

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _num(value, digits: int = 3) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _bytes(value) -> str:  # noqa: D103
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value / 2**20:.0f} MiB"


_env.globals.update(snr_judged=snr_judged, min_snr=min_snr, inf=float("inf"))
_env.filters["num"] = _num
_env.filters["mib"] = _bytes


def dom_id(case_id: str) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_-]", "_", case_id)


def max_error(result: dict) -> float | None:
    values = [v for m in (result.get("metrics") or {}).values() if isinstance(m, dict)
              for v in [m.get("max_abs")] if isinstance(v, (int, float))]
    return max(values) if values else None


def _p(result: dict, key: str):
    value = (result.get("timing") or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def summary(run: RunData) -> dict:
    counts: dict[str, int] = {}
    for r in run.results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "run_id": run.run_id,
        "started": run.meta.get("started"),
        "finished": run.meta.get("finished"),
        "environment": run.meta.get("environment", {}),
        "state": run.state,
        "planned": len(run.planned),
        "missing": run.missing,
        "cases": len(run.results),
        "counts": counts,
        "ok": run.state == "complete" and not run.missing and not any(counts.get(s) for s in BAD_STATUSES + ("inconclusive",)),
        "problems": run.problems,
        "failing": [{"id": r["id"], "status": r["status"], "stage": r.get("stage"), "culprit": r.get("culprit"), "summary": r.get("summary"),
                     "error": r.get("error")} for r in run.results if r["status"] in BAD_STATUSES + ("inconclusive",)],
        "results": [
            {"id": r["id"], "status": r["status"], "p50_ms": _p(r, "p50_ms"), "first_ms": _p(r, "first_ms"),
             "max_abs": max_error(r), "peak_rss_bytes": r.get("peak_rss_bytes")}
            for r in run.results
        ],
    }


def _context(run: RunData, history: list[RunData], previous: RunData | None) -> dict:
    from harness.report import plots

    results = run.results
    from harness.runners.table import in_table_order

    runtimes = in_table_order(r["runtime"] for r in results)  # columns by language, as the table lists them
    matrix: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in results:
        matrix.setdefault((r["fixture"], r["format"]), {}).setdefault(r["runtime"], []).append(r)
    for row in matrix.values():
        for cell in row.values():
            cell.sort(key=lambda r: r.get("batch", 0))

    cases = []
    for r in results:
        outputs = []
        for name, m in (r.get("metrics") or {}).items():
            if not isinstance(m, dict):
                continue
            hist = plots.error_histogram(m["error_hist"], f"|error| of {name}") if m.get("error_hist") else None
            outputs.append({"name": name, "metrics": [(k, m[k]) for k in METRIC_KEYS if k in m], "hist": hist,
                            "shape": m.get("shape"), "oracle": [(k, (r.get("oracle_metrics") or {}).get(name, {}).get(k))
                                                                for k in ("max_abs", "max_rel", "snr_db") if (r.get("oracle_metrics") or {}).get(name)]})
        timing = r.get("timing") or {}
        cases.append({"r": r, "dom": dom_id(r["id"]), "outputs": outputs, "max_abs": max_error(r),
                      "timing": [(k, timing[k]) for k in ("load_ms", "first_ms", "min_ms", "p10_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "iqr_ms", "throughput_per_s") if k in timing],
                      "samples": len(timing.get("samples_ms") or [])})

    latency, scaling, gflops = [], [], []
    for fixture in dict.fromkeys(r["fixture"] for r in results):
        mine = [r for r in results if r["fixture"] == fixture and _p(r, "p50_ms")]
        if not mine:
            continue
        smallest = min(r["batch"] for r in mine)
        rows = [{"label": f"{r['format']} · {r['runtime']}" + (f" · t{r['threads']}" if r.get("threads") else ""), "runtime": r["runtime"], "p10": _p(r, "p10_ms") or _p(r, "p50_ms"),
                 "p50": _p(r, "p50_ms"), "p90": _p(r, "p90_ms") or _p(r, "p50_ms"), "first": _p(r, "first_ms")}
                for r in mine if r["batch"] == smallest]
        latency.append({"fixture": fixture, "batch": smallest, "svg": plots.latency_chart(rows, f"{fixture}, batch {smallest}")})
        series: dict[str, list[tuple[float, float]]] = {}
        for r in mine:
            label = f"{r['format']} · {r['runtime']}" + (f" · t{r['threads']}" if r.get("threads") else "")
            series.setdefault(label, []).append((r["batch"], _p(r, "p50_ms")))
        series = {k: v for k, v in series.items() if len(v) > 1}
        if series:
            scaling.append({"fixture": fixture, "svg": plots.scaling_chart(series, f"{fixture}: p50 by batch")})
        rated = [r for r in mine if isinstance(r.get("gflops"), (int, float))]
        if rated:
            largest = max(r["batch"] for r in rated)
            rows = [{"label": f"{r['format']} · {r['runtime']}" + (f" · t{r['threads']}" if r.get("threads") else ""), "gflops": r["gflops"]}
                    for r in rated if r["batch"] == largest]
            gflops.append({"fixture": fixture, "svg": plots.gflops_chart(rows, run.meta.get("machine_peak_gflops") or {}, f"{fixture}, batch {largest}: GFLOP/s")})

    # Size sweep: the same computation at growing sizes (gemm64/256/272/512): cost against work.
    sized: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r["fixture"].startswith("gemm") and isinstance(r.get("flops"), (int, float)) and _p(r, "p50_ms") and r.get("batch") == 1:
            label = f"{r['format']} · {r['runtime']}" + (f" · t{r['threads']}" if r.get("threads") else "")
            sized.setdefault(label, []).append((r["flops"], _p(r, "p50_ms")))
    sized = {k: v for k, v in sized.items() if len(v) > 1}
    if sized:
        scaling.append({"fixture": "gemm sweep", "svg": plots.scaling_chart(sized, "gemm size sweep: p50 by FLOPs per call", xlabel="FLOPs per call")})

    memory: dict[str, float] = {}
    for r in results:
        if isinstance(r.get("peak_rss_bytes"), (int, float)):
            memory[r["runtime"]] = max(memory.get(r["runtime"], 0), r["peak_rss_bytes"])

    history_svg = None
    if len(history) >= 2:
        ids = [h.run_id for h in history]
        counts = {s: [sum(1 for r in h.results if r["status"] == s) for h in history] for s in STATUSES}
        counts = {s: v for s, v in counts.items() if any(v)}
        p50: dict[str, list] = {}
        for rt in dict.fromkeys(r["runtime"] for h in history for r in h.results):
            values = []
            for h in history:
                xs = sorted(v for r in h.results if r["runtime"] == rt for v in [_p(r, "p50_ms")] if v)
                values.append(xs[len(xs) // 2] if xs else None)
            p50[rt] = values
        history_svg = plots.history_chart(ids, counts, p50)

    return {
        "run": run, "meta": run.meta, "env": run.meta.get("environment", {}), "runtimes_meta": run.meta.get("runtimes", {}),
        "runtimes": runtimes, "matrix": matrix, "cases": cases, "latency": latency, "scaling": scaling, "memory": memory, "gflops": gflops,
        "history_svg": history_svg, "history_runs": len(history), "summary": summary(run), "statuses": STATUSES,
        "changes": latency_changes(previous, run) if previous else [], "previous": previous.run_id if previous else None,
        "options": run.meta.get("options", {}), "codes": CODES,
    }


def latency_changes(base: RunData, new: RunData, limit: int = 10) -> list[dict]:
    """Biggest p50 ratios between two runs over the cases they share (largest change first)."""
    before = {r["id"]: _p(r, "p50_ms") for r in base.results}
    out = []
    for r in new.results:
        a, b = before.get(r["id"]), _p(r, "p50_ms")
        if a and b:
            out.append({"id": r["id"], "base_ms": a, "new_ms": b, "ratio": b / a})
    out.sort(key=lambda c: abs(math.log(c["ratio"])), reverse=True)
    return out[:limit]


def history_runs(reports: Path) -> list[RunData]:
    folder = reports / "history"
    if not folder.is_dir():
        return []
    runs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            runs.append(read_run(sub))
        except Exception:
            continue
    return runs


def previous_run(run: RunData, reports: Path) -> RunData | None:
    runs = reports / "runs"
    if not runs.is_dir():
        return None
    earlier = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name < run.folder.name)
    return read_run(runs / earlier[-1]) if earlier else None


def write_report(folder: Path, reports: Path = Path("reports"), out: Path | None = None) -> dict[str, Path]:
    run = read_run(folder)
    out = out or run.folder
    out.mkdir(parents=True, exist_ok=True)
    history = history_runs(reports)
    ctx = _context(run, history, previous_run(run, reports))
    paths = {"html": out / "index.html", "markdown": out / "report.md", "json": out / "summary.json"}
    paths["html"].write_text(_env.get_template("index.html.j2").render(**ctx))
    paths["markdown"].write_text(_env.get_template("report.md.j2").render(**ctx))
    paths["json"].write_text(json.dumps(sanitize(ctx["summary"]), indent=2))
    return paths
