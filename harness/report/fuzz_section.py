"""The differential-fuzzing section of the reports (`harness fuzz` findings): which runtime, which op, how
large the error, read from stored files only.

Sources, as `harness fuzz` leaves them: the summary JSON (`harness fuzz` writes it to `REPORTS/fuzz/<time>.json`; `harness nightly`
writes `reports/fuzz/latest.json`) and the regression folders it names (`<id>/case.json`, which adds each
pair's tolerance and a triage a person recorded). A folder of regression cases alone is a source too.
Nothing here imports the engine or the fuzzer: a report depends on the stored files only.

Triage: a person records it in a case's case.json (`"triage": "runtime: ..."`); until then the row shows
the suggestion `suggest` derives from the stored verdict (culprit, stage, how far beyond the tolerance).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

# A disagreement within this many times its tolerance is suggested as a tolerance finding: rounding of
# a different summation order or of a different kernel, not a wrong result.
TOLERANCE_MARGIN = 10.0
TRIAGES = ("our bug", "converter", "runtime", "tolerance", "environment", "model")
_CULPRIT_TRIAGE = {"harness": "our bug", "converter": "converter", "environment": "environment", "model": "model"}


@dataclass(frozen=True)
class FuzzRow:
    """One finding: a (format, runtime) pair that disagreed on a minimal example."""

    level: str  # "inputs" (a fixture's inputs) or "model" (a generated model)
    model: str  # the fixture, or the generated model's name
    format: str
    runtime: str
    status: str  # fail, error, crash, timeout
    stage: str | None
    culprit: str | None  # the engine's culprit for the verdict
    op: str | None  # the first diverging layer (Keras models), the fixture, or "(whole model)"
    max_abs: float | None
    max_rel: float | None
    tolerance: str | None  # the rule the pair was judged by
    excess: float | None  # the atol the error needed, in multiples of the tolerance's atol
    excess_rtol: float | None  # the rtol it needed (at the tolerance's atol), in multiples of its rtol
    triage: str
    triage_recorded: bool  # a person's triage (case.json), not the suggestion
    error: str  # the verdict's error, on one line
    example: str  # the minimal example, as hypothesis printed it
    also: tuple[str, ...] = ()  # other pairs that disagreed on the same example
    regression: str | None = None  # the regression case's folder (None: not saved, or since removed)
    flaky: bool = False

    @property
    def pair(self) -> str:
        return f"{self.format}~{self.runtime}"

    def size(self) -> str:
        """How large the error, in words: the absolute and relative error and the tolerance multiple."""
        if self.max_abs is None:
            return "no output" if self.status != "fail" else "–"
        text = f"max_abs {_g(self.max_abs)}, max_rel {_g(self.max_rel)}"
        return text + (f", {_g(self.excess)}× atol" if self.excess is not None else "")


@dataclass(frozen=True)
class SearchRow:
    """One search of the run (a fixture's inputs, or the generated models): its pace and its pairs."""

    key: str
    examples: int
    rejected: int
    seconds: float
    rate: float  # examples per second
    pairs: int
    set_aside: tuple[str, ...] = ()  # "pair: why", pairs not fuzzed
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FuzzSection:
    source: str  # the file or folder read
    written: str | None  # when the fuzz run finished (UTC), or the file's time
    seconds: float | None
    options: dict[str, Any]
    rows: tuple[FuzzRow, ...]
    searches: tuple[SearchRow, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)
    tolerance_margin: float = TOLERANCE_MARGIN

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.triage] = out.get(r.triage, 0) + 1
        return out


def _g(value: float | None) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.3g}"


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan", "Infinity", "-Infinity", "NaN"):
        return float(value.replace("inity", ""))
    return None


def one_line(text: Any, limit: int = 300) -> str:
    if not text:
        return ""
    words = re.sub(r"\s+", " ", str(text)).strip()
    return words if len(words) <= limit else words[: limit - 1] + "…"


def suggest(status: str, stage: str | None, culprit: str | None, excess: float | None, excess_rtol: float | None = None,
            nonfinite: bool = False) -> str:
    """The triage a stored verdict suggests: the culprit where the engine named one beyond the runtime,
    a converter for export and validation errors, `tolerance` for an error within TOLERANCE_MARGIN
    times the tolerance's atol or rtol (large inputs: a relative error of rounding) unless NaN/Inf
    differ (`nonfinite`: no tolerance covers that), the runtime otherwise."""
    if culprit in _CULPRIT_TRIAGE:
        return _CULPRIT_TRIAGE[culprit]
    if stage in ("export", "validate"):
        return "converter"
    if status == "fail" and not nonfinite and any(e is not None and e <= TOLERANCE_MARGIN for e in (excess, excess_rtol)):
        return "tolerance"
    return "runtime"


def _tolerance(rules: Any) -> tuple[str | None, float | None, float | None]:
    """The rule text (one per distinct rule) and the smallest atol and rtol of a stored `tolerance` mapping."""
    if not isinstance(rules, dict):
        return None, None, None
    texts = list(dict.fromkeys(str(t.get("rule")) for t in rules.values() if isinstance(t, dict) and t.get("rule")))

    def smallest(key: str) -> float | None:
        values = [a for t in rules.values() if isinstance(t, dict) for a in [_float(t.get(key))] if a]
        return min(values) if values else None

    return ("; ".join(texts) or None), smallest("atol"), smallest("rtol")


def _case(folder: str | None) -> tuple[dict | None, str | None]:
    """A regression folder's case.json, if it is still there and readable."""
    if not folder:
        return None, None
    path = Path(folder) / "case.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path} is not readable JSON ({e}); its finding is shown from the summary alone"
    return (data if isinstance(data, dict) else None), None


def _recorded_triage(case: dict | None) -> str | None:
    value = (case or {}).get("triage")
    if isinstance(value, dict):
        value = value.get("verdict")
    return str(value) if value else None


def row(finding: dict, case: dict | None = None) -> FuzzRow:
    """A finding as the report shows it. `finding` is one of the summary's findings (or a case.json's
    `finding`); `case` the regression folder's case.json, which supplies what an older summary lacks."""
    fmt, runtime = str(finding["format"]), str(finding["runtime"])
    stored = ((case or {}).get("results") or {}).get(f"{fmt}~{runtime}") or {}  # the pair's verdict in case.json
    rules = finding.get("tolerance") if finding.get("tolerance") is not None else stored.get("tolerance")
    text, atol, rtol = _tolerance(rules)
    required, required_rtol = _float(finding.get("required_atol")), _float(finding.get("required_rtol"))
    if required_rtol is None and isinstance(stored.get("metrics"), dict):
        values = [v for m in stored["metrics"].values() if isinstance(m, dict) for v in [_float(m.get("required_rtol"))] if v is not None]
        required_rtol = max(values) if values else None
    excess = required / atol if required is not None and atol else None
    excess_rtol = required_rtol / rtol if required_rtol is not None and rtol else None
    raw = stored.get("metrics")
    metrics: dict = raw if isinstance(raw, dict) else {}
    nonfinite = "NaN/Inf at different positions" in str(finding.get("error") or "") or any(
        isinstance(m, dict) and ((_float(m.get("nan_mismatch")) or 0) + (_float(m.get("inf_mismatch")) or 0)) > 0 for m in metrics.values())
    status = str(finding.get("status") or "?")
    stage, culprit = finding.get("stage"), finding.get("culprit")
    recorded = _recorded_triage(case)
    folder = finding.get("folder")
    return FuzzRow(
        level=str(finding.get("level") or "?"), model=str(finding.get("fixture") or "?"), format=fmt, runtime=runtime, status=status,
        stage=stage, culprit=culprit, op=finding.get("op"), max_abs=_float(finding.get("max_abs")), max_rel=_float(finding.get("max_rel")),
        tolerance=text, excess=excess, excess_rtol=excess_rtol,
        triage=recorded or str(finding.get("triage") or suggest(status, stage, culprit, excess, excess_rtol, nonfinite)),
        triage_recorded=recorded is not None, error=one_line(finding.get("error")), example=one_line(finding.get("example"), 500),
        also=tuple(str(a) for a in finding.get("also") or ()),
        regression=str(folder) if folder and Path(folder).is_dir() else None, flaky=bool(finding.get("flaky")),
    )


def _searches(stats: Any) -> tuple[SearchRow, ...]:
    if not isinstance(stats, dict):
        return ()
    out = []
    for key, s in stats.items():
        if not isinstance(s, dict):
            continue
        out.append(SearchRow(
            key=str(key), examples=int(s.get("examples") or 0), rejected=int(s.get("rejected") or 0), seconds=float(s.get("seconds") or 0.0),
            rate=float(s.get("examples_per_s") or 0.0), pairs=len(s.get("pairs") or ()),
            set_aside=tuple(f"{k}: {v}" for k, v in (s.get("set_aside") or {}).items()), notes=tuple(map(str, s.get("notes") or ())),
        ))
    return tuple(out)


def from_summary(data: dict, source: str, written: str | None = None) -> FuzzSection:
    """The section of a fuzz summary (what `harness fuzz` writes under REPORTS/fuzz/)."""
    findings = data.get("findings")
    if not isinstance(findings, list):
        raise HarnessError(f"{source} has no list of findings: expected a summary harness fuzz writes (REPORTS/fuzz/*.json)")
    rows, problems = [], []
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not f.get("format") or not f.get("runtime"):
            problems.append(f"finding {i + 1} of {source} names no format and runtime; left out")
            continue
        case, problem = _case(f.get("folder"))
        if problem:
            problems.append(problem)
        rows.append(row(f, case))
    options = data.get("options")
    return FuzzSection(source=source, written=data.get("finished") or written, seconds=_float(data.get("seconds")),
                       options=options if isinstance(options, dict) else {}, rows=tuple(rows),
                       searches=_searches(data.get("stats")), problems=tuple(problems))


def from_folder(folder: Path) -> FuzzSection:
    """The section of a folder of regression cases (`harness fuzz --save`), without a summary."""
    rows, problems = [], []
    for path in sorted(folder.glob("*/case.json")):
        case, problem = _case(str(path.parent))
        if problem or case is None or not isinstance(case.get("finding"), dict):
            problems.append(problem or f"{path} holds no finding; left out")
            continue
        rows.append(row({**case["finding"], "folder": str(path.parent)}, case))
    return FuzzSection(source=str(folder), written=None, seconds=None, options={}, rows=tuple(rows), problems=tuple(problems))


def read(path: Path) -> FuzzSection:
    """A fuzz summary JSON, or a folder of regression cases. One clear line for anything else."""
    if path.is_dir():
        return from_folder(path)
    if not path.is_file():
        raise HarnessError(f"fuzz results not found: {path}: expected a summary harness fuzz writes (REPORTS/fuzz/*.json), or a folder of regression cases")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HarnessError(f"{path} is not readable JSON ({e}): expected a summary harness fuzz writes (REPORTS/fuzz/*.json)") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path} is not a JSON object: expected a summary harness fuzz writes (REPORTS/fuzz/*.json)")
    written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return from_summary(data, str(path), written)


def newest(reports: Path) -> Path | None:
    """The newest fuzz summary next to the runs: reports/fuzz/*.json (nightly writes latest.json)."""
    folder = reports / "fuzz"
    found = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def load(reports: Path, path: Path | None = None) -> FuzzSection | None:
    """The section for a report: `path` when given (unreadable: a HarnessError), else the newest summary
    under reports/fuzz/ (unreadable: a section that says so, so the rest of the report is still written)."""
    if path is not None:
        return read(path)
    found = newest(reports)
    if found is None:
        return None
    try:
        return read(found)
    except HarnessError as e:
        return FuzzSection(source=str(found), written=None, seconds=None, options={}, rows=(), problems=(str(e),))


def to_json(section: FuzzSection) -> dict:
    from dataclasses import asdict

    return {**asdict(section), "rows": [{**asdict(r), "pair": r.pair} for r in section.rows]}


def print_section(section: FuzzSection, console=None) -> None:
    """The findings as a table for a terminal (100 columns), then each one's error and folder."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    when = f", finished {section.written}" if section.written else ""
    if not section.rows:
        what = "no disagreement" if section.searches or not section.problems else "nothing readable"
        console.print(f"fuzz ({section.source}{when}): {what}", highlight=False, markup=False)
    else:
        counts = ", ".join(f"{n} {t}" for t, n in section.counts().items())
        table = Table(title=f"fuzz findings ({section.source}{when}): {counts}", title_justify="left")
        for col in ("#", "runtime (format)", "op", "verdict", "error", "triage"):
            table.add_column(col, overflow="fold")
        for i, r in enumerate(section.rows, 1):
            triage = r.triage if r.triage_recorded else f"{r.triage}?"
            table.add_row(str(i), f"{r.runtime} ({r.format})", r.op or "?", f"{r.status}" + (f" at {r.stage}" if r.stage else ""),
                          r.size(), triage)
        console.print(table)
        for i, r in enumerate(section.rows, 1):
            also = f" (also {', '.join(r.also)})" if r.also else ""
            console.print(f"  #{i} on {r.model}: {r.error}{also}", highlight=False, markup=False)
            if r.regression:
                console.print(f"     saved: {r.regression}", highlight=False, markup=False, soft_wrap=True)
        console.print("triage with ? is suggested from the verdict (record yours as \"triage\" in the case's case.json)",
                      highlight=False, markup=False)
    for p in section.problems:
        console.print(f"  could not read: {p}", highlight=False, markup=False)


__all__ = ["FuzzRow", "FuzzSection", "SearchRow", "TOLERANCE_MARGIN", "TRIAGES", "from_folder", "from_summary", "load", "newest",
           "print_section", "read", "row", "suggest", "to_json"]
