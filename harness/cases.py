"""The case matrix: which cases a selection names (fixture × format × runtime × device × batch ×
threads), the reference pair, and the known deviations that turn an expected failure into `xfail`.

Running a case is the engine's (harness/engine.py); one run of many cases is the orchestrator's
(harness/orchestrator.py). This module holds data and selection only: it never starts a worker.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, unknown
from harness.export import FORMATS, check_format, formats_for
from harness.fixtures import Fixture, all_fixtures, get_fixture
from harness.records import Case  # a case's identity is the records' (the matrix makes them, results carry them)
from harness.runners import RUNTIMES, check_runtime
from harness.runners.table import in_table_order

REFERENCE = ("savedmodel", "tf")
# Formats judged below float32 (the registry's tolerance class): their error is the converter's choice.
QUANTISED = tuple(name for name, spec in FORMATS.items() if spec.tolerance_class != "float32")


@dataclass
class Selection:
    fixtures: list[str] | None = None
    formats: list[str] | None = None
    runtimes: list[str] | None = None
    batches: list[int] | None = None
    device: str = "cpu"
    threads: list[int] | None = None
    include_bench_only: bool = False  # fixtures that exist for benchmark sweeps (large GEMMs)

    def validate(self, fixtures: dict[str, Fixture] | None = None) -> None:
        if self.fixtures:
            self.fixtures = expand_groups(self.fixtures, fixtures)
        for name in self.fixtures or []:
            if fixtures is None:
                get_fixture(name)
            elif name not in fixtures:
                raise unknown("fixture", name, list(fixtures))
        for name in self.formats or []:
            check_format(name)
        for name in self.runtimes or []:
            check_runtime(name)
        for b in self.batches or []:
            if b < 1:
                raise HarnessError(f"batch {b} is not valid: expected a positive integer")
        for t in self.threads or []:
            if t < 0:
                raise HarnessError(f"threads {t} is not valid: expected 0 (runtime default) or a positive integer")

    def includes(self, name: str, fx: Fixture) -> bool:
        """Whether the selection takes this fixture: named (or its group named), or, when none is named,
        every fixture but the opt-in ones (benchmark sweeps, a group such as the zoo)."""
        if self.fixtures:
            return name in self.fixtures
        return not fx.group and (not fx.bench_only or self.include_bench_only)


def expand_groups(names: list[str], fixtures: dict[str, Fixture] | None = None) -> list[str]:
    """The names, each group's name (`zoo`) replaced by its fixtures; a fixture's own name wins."""
    fixtures = fixtures if fixtures is not None else all_fixtures()
    out: list[str] = []
    for name in names:
        members = [f for f, fx in fixtures.items() if fx.group == name] if name not in fixtures else []
        out.extend(m for m in (members or [name]) if m not in out)
    return out


def _in_quick_matrix(spec, fx: Fixture, fmt: str, batch: int, selection: Selection) -> bool:
    """HARNESS_MATRIX=quick (`make test`): a runtime that declares `quick_formats` (the browser runtimes,
    about a second per case) runs only those formats at each fixture's first batch, unless the selection
    names the runtime or the batches. Every other run, and `harness run`/nightly, has every case."""
    formats = getattr(spec, "quick_formats", None)
    if formats is None or selection.batches or (selection.runtimes and spec.name in selection.runtimes):
        return True
    return fmt in formats and batch == fx.batches[0]


def matrix(selection: Selection, fixtures: dict[str, Fixture] | None = None) -> list[Case]:
    """Every case the selection names, in a stable order (fixture, format, runtime, batch)."""
    selection.validate(fixtures)
    quick = os.environ.get("HARNESS_MATRIX", "full") == "quick"
    fixtures = fixtures if fixtures is not None else all_fixtures()
    # Every table entry by default; a selection names runtimes, variants (`ort@noopt`) among them.
    specs = [check_runtime(n) for n in in_table_order(selection.runtimes)] if selection.runtimes else list(RUNTIMES.values())
    cases = []
    for fname, fx in fixtures.items():
        if not selection.includes(fname, fx):
            continue
        # A format, or the same format made by a converter build (`onnx13@1.16`), as the selection names them.
        named = selection.formats or []
        pairs = [(base, fmt) for base in formats_for(fx, [n.partition("@")[0] for n in named])
                 for fmt in ([n for n in named if n.partition("@")[0] == base] if named else [base])]
        for base, fmt in pairs:
            for spec in specs:
                if base not in spec.formats:
                    continue
                rname = spec.name
                for batch in selection.batches or fx.batches:
                    if not fx.batchable and batch not in fx.batches:  # a fixed batch (1, or a given model's own)
                        continue
                    if quick and not _in_quick_matrix(spec, fx, base, batch, selection):
                        continue
                    for threads in selection.threads or [0]:
                        cases.append(Case(fname, fmt, rname, selection.device, batch, threads))
    return cases


@dataclass(frozen=True)
class Deviation:
    fixture: str
    format: str
    runtime: str
    status: tuple[str, ...]
    reason: str
    batch: str = "*"
    match: str | None = None  # the error must contain this text, so another failure is not hidden
    # Settings the reference's worker must report (its info.settings) for the deviation to hold: a bug of
    # one kernel back-end (TF's oneDNN path) is expected only where the reference ran on it.
    when: tuple[tuple[str, object], ...] = ()

    def holds(self, settings: dict | None) -> bool:
        return all((settings or {}).get(key) == value for key, value in self.when)

    def expects(self, status: str, error: str | None) -> bool:
        return status in self.status and (self.match is None or self.match in (error or ""))

    def matches(self, case: Case) -> bool:
        # A deviation of a runtime holds for its variants (`ort` covers `ort@noopt`), unless the pattern
        # names one: a variant that fixes it shows as xpass.
        base = case.runtime.partition("@")[0] if case.runtime not in RUNTIMES else case.runtime
        return (
            fnmatch.fnmatchcase(case.fixture, self.fixture)
            and (fnmatch.fnmatchcase(case.format, self.format) or fnmatch.fnmatchcase(case.format.partition("@")[0], self.format))
            and (fnmatch.fnmatchcase(case.runtime, self.runtime) or fnmatch.fnmatchcase(base, self.runtime))
            and fnmatch.fnmatchcase(str(case.batch), self.batch)
        )


def load_deviations(path: Path | None = None) -> list[Deviation]:
    import harness_fixtures as pkg

    path = path or Path(pkg.__path__[0]) / "deviations.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return []
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"known deviations file {path} is not valid TOML ({e})") from None
    out = []
    for i, d in enumerate(data.get("deviation", [])):
        try:
            status = d["status"]
            out.append(
                Deviation(
                    fixture=d.get("fixture", "*"), format=d.get("format", "*"), runtime=d.get("runtime", "*"),
                    status=tuple([status] if isinstance(status, str) else status), reason=d["reason"],
                    batch=str(d.get("batch", "*")), match=d.get("match"), when=tuple(sorted(d.get("when", {}).items())),
                )
            )
        except KeyError as e:
            raise HarnessError(f"known deviation #{i + 1} in {path} lacks {e.args[0]!r}: expected fixture, format, runtime, status, reason") from None
    return out


__all__ = ["QUANTISED", "REFERENCE", "Case", "Deviation", "Selection", "load_deviations", "matrix"]
