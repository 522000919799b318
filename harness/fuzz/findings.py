"""What the fuzzer finds: a disagreement (Finding) and what counts as one, its cause (one finding per
(format, runtime) pair and cause), the search's counts, the run's report (the summary the report's
fuzzing section reads), and the regression fixtures saved findings become (fixtures/fuzz_regressions.py
registers them with the fixture registry). Results are read as the engine's typed records."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.fixtures import Fixture, all_fixtures
from harness.fuzz.models import model_fixture
from harness.fuzz.strategies import pinned_generator
from harness.records import CaseResult
from harness.store import sanitize


@dataclass
class Finding:
    """A disagreement, shrunk: which runtime and format, on which fixture or generated model, how large
    the error, the first diverging layer where it could be found, and where the regression case lies."""

    level: str  # "inputs" or "model"
    fixture: str
    format: str
    runtime: str
    status: str
    stage: str | None
    culprit: str | None
    error: str | None
    example: str
    batch: int
    max_abs: float | None = None
    max_rel: float | None = None
    required_atol: float | None = None
    required_rtol: float | None = None
    op: str | None = None  # the first diverging layer's op, or the fixture's name for a non-Keras fixture
    layer: dict | None = None
    folder: str | None = None
    flaky: bool = False
    also: list[str] = field(default_factory=list)  # other format~runtime pairs that disagree on the same example
    tolerance: dict | None = None  # the rule the pair was judged by, per output (as the result stores it)
    cause: str | None = None  # what makes it this finding and not another (Causes.of)

    def line(self) -> str:
        size = f"max_abs {self.max_abs:.3g} max_rel {self.max_rel:.3g}" if self.max_abs is not None else (self.error or "")[:120]
        also = f" (also {', '.join(self.also)})" if self.also else ""
        return f"{self.runtime} ({self.format}) on {self.fixture}: {self.status}, op {self.op or '?'}, {size}{also}"


def disagrees(result: CaseResult) -> bool:
    """A fail, crash or timeout, or an error where the model ran (its run, or the reference's)."""
    return result.status in ("fail", "crash", "timeout") or (result.status == "error" and result.stage in ("run", "reference"))


def agrees_with_oracle(result: CaseResult) -> bool:
    """A fail against the TF reference by an output that agrees with the float64 oracle: the reference is
    the outlier (its own case fails against the oracle), not this pair."""
    return result.status == "fail" and bool((result.evidence or {}).get("agrees_with_oracle"))


_PATH = re.compile(r"(?<![\w.`])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


class Causes:
    """One finding per (format, runtime) pair and cause (the model level: many generated models hit the
    same converter or runtime problem). An error's cause is its message without what differs from model
    to model (paths, names, numbers); a numeric disagreement's is the op of its first diverging layer,
    and a later one on the same pair is that cause again when its model has that op. A pair stays in the
    search after a finding, so it can still show another cause."""

    def __init__(self, op_labels: Callable[[Fixture], set[str]], op_label: Callable[[Fixture, str | None], str | None]):
        self.op_labels = op_labels  # the ops of a model, as labels
        self.op_label = op_label  # the label of a finding's first diverging layer, None when unknown
        self.known: dict[tuple[str, str], set[str]] = {}

    @staticmethod
    def message(result: CaseResult) -> str:
        text = str(result.error or result.summary or "")
        text = _PATH.sub("…", text.replace(str(result.id), "<case>"))
        text = re.sub(r"fuzzmodel-[0-9a-f]+(~n\d+)?", "<model>", text)
        text = re.sub(r"\bn\d+_[a-z]+", "<layer>", text)
        text = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
        return f"{result.status}@{result.stage}: " + " ".join(text.split())[:300]

    def of(self, fx: Fixture, result: CaseResult, op: str | None) -> str:
        if result.status == "fail":
            return f"fail: {self.op_label(fx, op) or '(whole model)'}"
        return self.message(result)

    def seen(self, fx: Fixture, result: CaseResult) -> bool:
        known = self.known.get((result.format, result.runtime))
        if not known:
            return False
        if result.status == "fail":
            ops = {c.removeprefix("fail: ") for c in known if c.startswith("fail: ")}
            return "(whole model)" in ops or bool(ops & self.op_labels(fx))
        return self.message(result) in known

    def add(self, pair: tuple[str, str], cause: str) -> None:
        self.known.setdefault(pair, set()).add(cause)


@dataclass
class Stats:
    examples: int = 0  # drawn examples run (generation, replays and shrinks)
    rejected: int = 0
    seconds: float = 0.0
    case_runs: int = 0
    pairs: list[str] = field(default_factory=list)
    set_aside: dict[str, str] = field(default_factory=dict)  # pair -> why it was not fuzzed
    notes: list[str] = field(default_factory=list)

    def rate(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def regression_fixtures(folder: Path | str, base: dict[str, Fixture] | None = None) -> dict[str, Fixture]:
    """Every saved disagreement under `folder` as a fixture named `fuzz-<id>`: the same model (the
    fixture it came from, or the generated model rebuilt from its spec), the saved inputs pinned as the
    first input set at the saved batch, and that fixture's oracle and tolerances. `base` is the fixture
    registry to resolve fixture names in (the registry passes its own, to avoid recursing into itself).
    A case whose fixture no longer exists is left out."""
    folder = Path(folder)
    out: dict[str, Fixture] = {}
    if not folder.is_dir():
        return out
    for case_file in sorted(folder.glob("*/case.json")):
        d = case_file.parent
        try:
            record = json.loads(case_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"regression case {case_file} is not readable JSON ({e}): expected the case.json harness fuzz writes") from None
        inputs = {p.stem: np.load(p, allow_pickle=False) for p in sorted((d / "inputs").glob("*.npy"))}
        h = hashlib.sha256(case_file.read_bytes())
        for k in sorted(inputs):
            h.update(k.encode() + np.ascontiguousarray(inputs[k]).tobytes())
        if (d / "model.json").exists():
            spec = json.loads((d / "model.json").read_text())
            fx = model_fixture(spec)
        else:
            name = record.get("fixture")
            if base is None:
                base = all_fixtures()
            if name not in base:
                continue
            fx = base[name]
        h.update(fx.digest().encode())
        batch = int(record.get("batch") or 1)
        # A minimal input often gives an all-zero or constant output: the engine's signal check would call
        # the case inconclusive whether the disagreement is fixed or not. Skipped where Fixture allows it.
        extra: dict[str, Any] = {"check_signal": False} if "check_signal" in {f.name for f in fields(Fixture)} else {}
        fx = replace(
            fx, name=f"fuzz-{record['id']}", description=f"harness fuzz regression: {record.get('example', '')}"[:300],
            generate=pinned_generator(inputs), generate_alt=None, batches=(batch,), source=None, source_digest=h.hexdigest(),
            extra_formats=(), bench_only=False, **extra,
        )
        out[fx.name] = fx
    return out




@dataclass
class Report:
    findings: list[Finding]
    stats: dict[str, Stats]
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)  # what was asked for: levels, pairs, budget, seed
    finished: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_json(self) -> dict:
        """The summary the report's fuzzing section reads (harness/report/fuzz_section.py)."""
        return sanitize({
            "schema": "harness-fuzz/1", "finished": self.finished, "options": self.options,
            "seconds": round(self.seconds, 1),
            "findings": [{k: v for k, v in f.__dict__.items()} for f in self.findings],
            "stats": {k: {"examples": s.examples, "rejected": s.rejected, "seconds": round(s.seconds, 1), "case_runs": s.case_runs,
                          "examples_per_s": round(s.rate(), 3), "pairs": s.pairs, "set_aside": s.set_aside, "notes": s.notes}
                      for k, s in self.stats.items()},
        })
