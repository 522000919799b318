"""`harness report`: index.html, report.md and summary.json, read from a run folder only.

The page is self-contained and opens offline: the run's data is embedded once as compact JSON and the
page's own script (templates/report.js.j2, no library) draws the matrix, the tables, the charts, and a
case's details when it is opened. Nothing is drawn ahead in Python, so a report of a thousand cases
takes well under a second and about half a megabyte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jinja2

from harness import records
from harness.errors import HarnessError
from harness.records import STATUSES, CaseResult, Timing, bad_statuses, sanitize, summarize
from harness.report.agreement import agreement, drift_rows, machines_of
from harness.report.fuzz_section import FuzzSection
from harness.report.plots import STATUS_COLOURS
from harness.report.status import markdown as status_markdown
from harness.report.status import status_table
from harness.report.terminal import SHORT, cause_groups, codes_of, min_snr, snr_judged
from harness.store import RunData, read_outputs, read_run

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


def _cell(value) -> str:
    """A text as one Markdown table cell: on one line, its pipes escaped (a message may hold either)."""
    return " ".join(str(value or "").split()).replace("|", "\\|")


_env.filters["num"] = _num
_env.filters["mib"] = _bytes
_env.filters["cell"] = _cell


def max_error(result: CaseResult) -> float | None:
    return result.max_abs


def _p(result: CaseResult, key: str) -> float | None:
    return result.timing.stat(key)


def render(template: str, **context) -> str:
    """One of the report's templates (harness/report/templates), with its filters."""
    return _env.get_template(template).render(**context)


def summary(run: RunData) -> dict:
    """summary.json: the run's verdicts and whether it is ok, by the rule run.json's summary was made
    with (records.summarize, with the run's own --allow-inconclusive), so the two never disagree."""
    counts: dict[str, int] = {}
    for r in run.results:
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    allow = bool(run.meta.summary.get("allow_inconclusive"))
    bad = bad_statuses(allow)
    return {
        "run_id": run.run_id,
        "started": run.meta.started,
        "finished": run.meta.finished,
        "environment": run.meta.environment,
        "state": run.state,
        "planned": len(run.planned),
        "missing": run.missing,
        "cases": len(run.results),
        "counts": counts,
        "ok": summarize(run.results, allow, run.state, len(run.missing))["ok"],
        "allow_inconclusive": allow,
        "problems": run.problems,
        "failing": [{"id": r.id, "status": r.status, "stage": r.stage, "culprit": r.culprit, "summary": r.summary,
                     "error": r.error} for r in run.results if r.status in bad],
        "results": [
            {"id": r.id, "status": r.status, "p50_ms": _p(r, "p50_ms"), "first_ms": _p(r, "first_ms"),
             "max_abs": max_error(r), "peak_rss_bytes": r.peak_rss_bytes}
            for r in run.results
        ],
    }


# The numbers a case's row carries in the page (charts, matrix, the table of cases), by position: the
# page reads them by these names (data.fields), so the JSON stays small without being opaque.
CASE_FIELDS = ("id", *(f for f in records.CASE_FIELDS if f != "variant"), "status", "snr_judged", "judged", "max_abs", "min_snr",
               "load_ms", "first_ms", "p10_ms", "p50_ms", "p90_ms", "p99_ms", "peak_rss_bytes", "gflops", "flops")
TIMING_KEYS = ("load_ms", "first_ms", "min_ms", "p10_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "iqr_ms", "throughput_per_s",
               "round_cv", "iterations", "warmup", "rounds")
ORACLE_KEYS = ("max_abs", "max_rel", "snr_db")


def _r(value, digits: int = 4):
    """A number as the page shows it (4 significant digits: the JSON is most of the page); non-finite
    floats as the strings "inf", "-inf", "nan" (JSON has no such numbers); anything else as None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        value = float(f"{value:.{digits}g}")
        return int(value) if value.is_integer() and abs(value) < 1e15 else value  # 0, not 0.0: most numbers here are zeros
    if value in ("inf", "-inf", "nan"):
        return value
    return None


def _trim(values: list) -> list:
    """Without its trailing Nones (absent metrics or timings): the page reads a missing place as absent."""
    while values and values[-1] is None:
        values.pop()
    return values


# A text longer than this (a converter's log, a worker's stderr) is shown by its head and tail: the
# first error and the last words are what a reader looks for; results.jsonl keeps the whole text.
TEXT_HEAD, TEXT_TAIL = 6000, 2000


class _Strings:
    """Every text of the details stored once: the same error, reason or rule recurs in many cases (one
    converter failure is the error of every case of that artifact)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text) -> int | None:
        if text is None or text == "" or text == [] or text == {}:
            return None
        whole = isinstance(text, dict)  # JSON that the page parses: never cut
        if not isinstance(text, str):
            text = "\n".join(map(str, text)) if isinstance(text, list) else json.dumps(sanitize(text))
        if text not in self._index:
            self._index[text] = len(self.items)
            if not whole and len(text) > TEXT_HEAD + TEXT_TAIL + 200:
                cut = len(text) - TEXT_HEAD - TEXT_TAIL
                text = f"{text[:TEXT_HEAD]}\n… {cut} characters left out here (results.jsonl has the whole text) …\n{text[-TEXT_TAIL:]}"
            self.items.append(text)
            return len(self.items) - 1
        return self._index[text]


def _details(r: CaseResult, strings: _Strings) -> dict:
    """What a case's dialog shows, read when the dialog opens (never rendered ahead)."""
    d: dict = {}
    for key in ("stage", "culprit", "baseline", "summary", "reason", "error", "stderr_tail"):
        if getattr(r, key):
            d[key] = strings(str(getattr(r, key)))
    if r.evidence:
        d["evidence"] = [[k, strings(v)] for k, v in r.evidence.items() if v not in (None, "", [], {})]
    repaired = r.artifact.get("repaired") if isinstance(r.artifact, dict) else None
    if repaired:
        d["repaired"] = strings(repaired)
    if isinstance(r.tolerance, dict):
        d["tolerance"] = {name: strings(t) for name, t in r.tolerance.items()}
    if isinstance(r.divergence, dict):
        d["divergence"] = strings(r.divergence)
    if r.inputs_variant:
        d["inputs_variant"] = strings(r.inputs_variant)
    if r.pair:
        d["pair"] = strings(r.pair)
    outputs = []
    for name, m in r.metrics.items():
        o = r.oracle_metrics.get(name)
        outputs.append(_trim([name, m.shape, _trim([_r(getattr(m, k)) for k in METRIC_KEYS]), m.error_hist,
                              _trim([_r(getattr(o, k, None)) for k in ORACLE_KEYS]) or None]))
    if outputs:
        d["outputs"] = outputs
    timing = r.timing
    if timing != Timing():
        d["timing"] = _trim([_r(getattr(timing, k)) for k in TIMING_KEYS])
        d["samples"] = len(timing.samples_ms or [])
        ci = timing.p50_ci_ms
        if isinstance(ci, list) and len(ci) == 2:
            d["p50_ci"] = [_r(v) for v in ci]
    return d


def page_data(run: RunData, history: list[RunData]) -> dict:
    """The run as the page's script reads it: names once, one array per case (CASE_FIELDS), the
    details of each case apart (opened lazily), long texts once (strings)."""
    from harness.comparator import ERROR_HIST_DECADES
    from harness.report import plots
    from harness.runners.table import in_table_order

    results = run.results
    # How each runtime is shown, as the run recorded it from the runtime table (a run of an older
    # harness has none: names, and colours picked by name).
    codes, colours = codes_of(run.meta.runtimes), plots.colours_of(run.meta.runtimes)
    runtimes = in_table_order(r.runtime for r in results)  # columns by language, as the table lists them
    names: dict[str, dict[str, int]] = {"fixture": {}, "format": {}, "runtime": {rt: i for i, rt in enumerate(runtimes)}, "device": {},
                                        "status": {s: i for i, s in enumerate(STATUSES)}}

    def index(kind: str, value) -> int:
        table = names[kind]
        value = str(value)
        if value not in table:
            table[value] = len(table)
        return table[value]

    strings = _Strings()
    rows, details = [], []
    for r in results:
        judged = snr_judged(r)
        snr = min_snr(r)
        row = {"id": r.id, "fixture": index("fixture", r.fixture), "format": index("format", r.format), "runtime": index("runtime", r.runtime),
               "device": index("device", r.device or "cpu"), "batch": r.batch, "threads": r.threads or 0,
               "status": index("status", r.status), "snr_judged": int(judged), "max_abs": _r(max_error(r)), "min_snr": _r(snr),
               "peak_rss_bytes": r.peak_rss_bytes if isinstance(r.peak_rss_bytes, int) else None,
               "gflops": _r(r.gflops), "flops": _r(r.flops, 6)}
        row["judged"] = row["min_snr"] if judged else row["max_abs"]  # the number the rule judged: the box shows it
        for key in ("load_ms", "first_ms", "p10_ms", "p50_ms", "p90_ms", "p99_ms"):
            row[key] = None if r.emulated else _r(_p(r, key))  # an emulator's times are never charted beside native ones
        rows.append([row[f] for f in CASE_FIELDS])
        details.append(_details(r, strings))

    data: dict = {
        "run": run.run_id, "fields": CASE_FIELDS, "metric_keys": METRIC_KEYS, "timing_keys": TIMING_KEYS, "oracle_keys": ORACLE_KEYS,
        "statuses": list(STATUSES), "fixtures": list(names["fixture"]), "formats": list(names["format"]), "runtimes": runtimes,
        "devices": list(names["device"]), "codes": {rt: codes.get(rt, rt) for rt in runtimes}, "short": SHORT,
        "colours": {rt: plots.runtime_colour(rt, colours) for rt in runtimes}, "status_colours": plots.STATUS_COLOURS,
        "hist_labels": ["<1e-10"] + [f"1e{k}" for k in ERROR_HIST_DECADES[1:]] + ["≥100"],
        "peaks": {str(k): _r(v) for k, v in (run.meta.machine_peak_gflops or {}).items()},
        "cases": rows, "details": details, "strings": strings.items, "history": None,
    }
    if len(history) >= 2:
        counts = {s: [sum(1 for r in h.results if r.status == s) for h in history] for s in STATUSES}
        p50: dict[str, list] = {}
        for rt in in_table_order(r.runtime for h in history for r in h.results):
            values = []
            for h in history:
                xs = sorted(v for r in h.results if r.runtime == rt for v in [_p(r, "p50_ms")] if v)
                values.append(_r(xs[len(xs) // 2]) if xs else None)
            p50[rt] = values
            data["colours"].setdefault(rt, plots.runtime_colour(rt, colours))
        data["history"] = {"runs": [h.run_id for h in history], "counts": {s: v for s, v in counts.items() if any(v)}, "p50": p50}
    return data


def _json_for_script(data: dict) -> str:
    """JSON that cannot end its <script> element early, whatever a text in it says."""
    return json.dumps(sanitize(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _context(run: RunData, history: list[RunData], previous: RunData | None) -> dict:
    memory: dict[str, float] = {}
    for r in run.results:
        if isinstance(r.peak_rss_bytes, (int, float)):
            memory[r.runtime] = max(memory.get(r.runtime, 0), r.peak_rss_bytes)
    return {
        "run": run, "meta": run.meta, "env": run.meta.environment, "runtimes_meta": run.meta.runtimes,
        "memory": memory, "history_runs": len(history), "history_limit": HISTORY_RUNS, "summary": summary(run), "statuses": STATUSES,
        "changes": latency_changes(previous, run) if previous else [], "previous": previous.run_id if previous else None,
        "options": run.meta.options, "data_json": _json_for_script(page_data(run, history)),
        "causes": cause_groups(run.results),  # "what did not pass, and why", at the top: one row per cause
    }


def latency_changes(base: RunData, new: RunData, limit: int = 10) -> list[dict]:
    """Biggest p50 ratios between two runs over the cases they share (largest change first)."""
    before = {r.id: _p(r, "p50_ms") for r in base.results}
    out: list[dict] = []
    for r in new.results:
        if r.emulated:
            continue
        a, b = before.get(r.id), _p(r, "p50_ms")
        if a and b:
            out.append({"id": r.id, "base_ms": a, "new_ms": b, "ratio": b / a})
    out.sort(key=lambda c: abs(math.log(c["ratio"])), reverse=True)
    return out[:limit]


# The history chart shows the newest runs under reports/history/ only: each is read whole, and the
# history grows by a run a night, so a report must not cost more with every night.
HISTORY_RUNS = 30


def history_runs(reports: Path, limit: int = HISTORY_RUNS) -> list[RunData]:
    folder = reports / "history"
    if not folder.is_dir():
        return []
    runs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir())[-limit:]:
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


def write_report(folder: Path, reports: Path = Path("reports"), out: Path | None = None, fuzz: FuzzSection | None = None) -> dict[str, Path]:
    run = read_run(folder)
    out = out or run.folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot write the report to {out}: {e.strerror or e} (expected a writable folder with free space)") from None
    history = history_runs(reports)
    ctx = _context(run, history, previous_run(run, reports))
    ctx["fuzz"] = fuzz  # the differential-fuzzing section (harness/report/fuzz_section.py), when there are fuzz results
    ctx["machines"] = machines_of(run.results)
    ctx["agreement"] = drift_rows(agreement(run.results, lambda r: read_outputs(run.folder, r.id), len(ctx["machines"]) > 1))
    # The model-status page (harness/report/status.py): a section of the page, and status.md.
    codes = codes_of(run.meta.runtimes)
    ctx.update(status=status_table(run.results), codes=codes, short=SHORT, status_colours=STATUS_COLOURS)
    paths = {"html": out / "index.html", "markdown": out / "report.md", "json": out / "summary.json", "status": out / "status.md"}
    write_files({paths["html"]: _env.get_template("index.html.j2").render(**ctx),
                 paths["markdown"]: _env.get_template("report.md.j2").render(**ctx),
                 paths["json"]: json.dumps(sanitize({**ctx["summary"], "agreement": ctx["agreement"]}), indent=2),
                 paths["status"]: status_markdown(ctx["status"], f"Model status of run {run.run_id}", codes)})
    return paths


def write_files(texts: dict[Path, str]) -> None:
    """Write each file whole or not at all: a temporary file beside it, renamed over it, so a full or
    read-only disk, or a second report of the same run at the same moment, never leaves a 0-byte or
    half-written page. A failure is one line naming the folder (HarnessError)."""
    import os
    import tempfile

    for path, text in texts.items():
        tmp = None
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            tmp = Path(name)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600: a report is for reading
            os.replace(tmp, path)
        except OSError as e:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise HarnessError(f"cannot write {path.name} to {path.parent}: {e.strerror or e} (expected a writable folder with free space)") from None
