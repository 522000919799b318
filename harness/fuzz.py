"""Differential fuzzing with hypothesis (`harness fuzz`): inputs, and small generated models, that make
runtimes disagree, shrunk to a minimal case and saved as regression fixtures.

Level 1, **inputs**: a strategy derived from a fixture's signature draws a batch (1 first, then odd
sizes), the other dynamic dimensions, a base (the fixture's own generator at a drawn seed and scale, or
a constant fill) and a few patched elements from an edge-value set (0, -0, subnormals, the float16 and
large float32 magnitudes; ±inf and NaN only where the fixture's ValueDomain says they are meaningful).
Each example runs through every selected (format, runtime) pair with the run-case Engine, so workers
stay warm and every verdict is the conformance matrix's own (same tolerances, same comparator).

Level 2, **models**: harness/fuzz_models.py draws small Keras graphs; each is a Fixture here, exported
by the same Exporter and run by the same Engine.

A disagreement (a `fail`, a `crash`/`timeout`, or an error at the run stage) is shrunk by hypothesis;
while shrinking, only the (format, runtime) pair that disagreed first is run. The minimal example is
replayed through every pair and saved under the regressions folder (inputs, every runtime's outputs,
the float64 oracle's, the first diverging layer of a Keras model); `regression_fixtures(folder)` turns
that folder back into fixtures for the conformance matrix. The pair is then set aside and the search
goes on until the budget is spent.

Nothing here imports TensorFlow or hypothesis at module level: `regression_fixtures` is called by the
fixture registry, which must stay light.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.fixtures import DEFAULT_TOLERANCES, Fixture, Inputs, TensorSpec, Tolerance
from harness.records import CaseResult, OutputMetrics
from harness.store import sanitize

# Formats fuzzed by default: the float ones (harness.cases.QUANTISED, from the format registry, are left
# out). Quantised formats are judged by SNR over the whole output, which a single patched element cannot
# move, and their error is the converter's choice anyway.
# Runtimes fuzzed by default: every in-process-fast worker. The browser runtimes (a second a case) and
# the Docker one are opt-in with --runtimes.
DEFAULT_RUNTIMES = ("tf", "litert", "ort", "node-tfjs-cpu", "node-tfjs-wasm", "node-ort", "go-tfgo", "go-ort")
BATCHES = (1, 2, 3, 5, 7)  # 1 first: hypothesis shrinks towards the start of a sampled_from
OTHER_DIM_MAX = 8

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
SUBNORMALS = (1e-45, -1e-45, 1e-40, -3e-39)  # the smallest float32 subnormal and a few more
EDGE_FINITE = (0.0, -0.0, *SUBNORMALS, F32_TINY, -F32_TINY, 1.0, -1.0, 65504.0, 65520.0, -65520.0)
NONFINITE = (math.inf, -math.inf, math.nan)


@dataclass(frozen=True)
class ValueDomain:
    """Which input values are meaningful for a fixture. `nonfinite`: ±inf and NaN are valid inputs whose
    outputs every runtime should agree on (IEEE semantics of an elementwise op or a matmul), so they are
    drawn and outputs NaN/Inf are compared position by position; otherwise examples whose float64
    oracle (or TF reference) is not finite are rejected. `max_abs`: the largest finite magnitude
    drawn. `low`/`high`: bounds every float input must respect."""

    nonfinite: bool = False
    max_abs: float = 1e6
    low: float | None = None
    high: float | None = None


# Declarations for the project's fixtures (a Fixture may also carry its own as `fuzz_values`).
DOMAINS: dict[str, ValueDomain] = {
    "pow": ValueDomain(nonfinite=True),
    "matmul": ValueDomain(nonfinite=True),
    "conv3x3": ValueDomain(nonfinite=True),
    "gemm*": ValueDomain(nonfinite=True),
}


def domain(fx: Fixture) -> ValueDomain:
    own = getattr(fx, "fuzz_values", None)
    if isinstance(own, ValueDomain):
        return own
    return next((d for pattern, d in DOMAINS.items() if fnmatch.fnmatchcase(fx.name, pattern)), ValueDomain())


# --- examples and the input strategy --------------------------------------------------------------------
@dataclass
class Example:
    """One drawn input set: the arrays, their batch, and how they were made (what a person reads)."""

    batch: int
    inputs: Inputs
    how: str

    def __repr__(self) -> str:  # hypothesis prints the falsifying example with this
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.inputs.items())
        return f"Example(batch={self.batch}, {shapes}: {self.how})"

    def digest(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.inputs):
            h.update(k.encode() + self.inputs[k].dtype.str.encode() + str(self.inputs[k].shape).encode())
            h.update(np.ascontiguousarray(self.inputs[k]).tobytes())
        return h.hexdigest()


def int_ranges(fx: Fixture) -> dict[str, tuple[int, int]]:
    """The range of each integer input, as the fixture's own generator draws it (ids, indices, pixels):
    the signature does not say which integers are valid, the generator does."""
    out: dict[str, tuple[int, int]] = {}
    for seed in range(4):
        for k, v in fx.make_inputs(1, seed=seed).items():
            if v.dtype.kind in "iub":
                lo, hi = int(v.min()), int(v.max())
                if k in out:
                    lo, hi = min(lo, out[k][0]), max(hi, out[k][1])
                out[k] = (lo, hi)
    return out


def _float_values(dom: ValueDomain):
    from hypothesis import strategies as st

    lo = -dom.max_abs if dom.low is None else max(dom.low, -dom.max_abs)
    hi = dom.max_abs if dom.high is None else min(dom.high, dom.max_abs)
    edges = [v for v in EDGE_FINITE if lo <= v <= hi and abs(v) <= dom.max_abs]
    edges += [v for v in (dom.max_abs, -dom.max_abs) if lo <= v <= hi]
    if dom.nonfinite:
        edges += list(NONFINITE)
    return st.one_of(st.sampled_from(edges), st.floats(lo, hi, width=32, allow_subnormal=True))


def input_strategy(fx: Fixture, batches: tuple[int, ...] = BATCHES, max_patches: int = 6):
    """Examples for a fixture, derived from its signature (shapes within the declared bounds: the batch
    from `batches`, other dynamic dimensions 1..8, shared between inputs by axis) and its ValueDomain."""
    from hypothesis import strategies as st

    dom = domain(fx)
    ints = int_ranges(fx)
    if any(s.dtype not in ("float16", "float32", "float64", "bool") and np.dtype(s.dtype).kind not in "iu" for s in fx.inputs):
        raise HarnessError(f"fixture {fx.name} has a non-numeric input: expected numeric or boolean inputs to fuzz")
    dynamic_axes = sorted({i for s in fx.inputs for i, d in enumerate(s.shape) if d is None and i > 0})
    batchable = fx.batchable and any(s.shape and s.shape[0] is None for s in fx.inputs)
    float_scale = [1.0, -1.0, 1e-3, 1e3, 1e-38, 1e30]

    @st.composite
    def draw(draw_):
        batch = draw_(st.sampled_from(batches)) if batchable else 1
        sizes = {axis: draw_(st.integers(1, OTHER_DIM_MAX)) for axis in dynamic_axes}
        shapes = {s.name: tuple(batch if (i == 0 and d is None) else (sizes[i] if d is None else d) for i, d in enumerate(s.shape))
                  for s in fx.inputs}
        mode = draw_(st.sampled_from(["fixture", "fill"]))
        seed = draw_(st.integers(0, 2**16 - 1))
        base = fx.make_inputs(batch, seed=seed) if mode == "fixture" else None
        if base is not None and any(base[s.name].shape != shapes[s.name] for s in fx.inputs):
            base, mode = None, "fill"  # the fixture's generator makes only its own shapes
        out, how = {}, []
        for s in fx.inputs:
            dt = np.dtype(s.dtype)
            shape = shapes[s.name]
            size = int(np.prod(shape))
            if dt.kind == "f":
                values = _float_values(dom)
                if base is not None:
                    scale = draw_(st.sampled_from(float_scale))
                    largest = float(np.abs(base[s.name]).max(initial=0.0))
                    if largest * abs(scale) > dom.max_abs:
                        # At most the domain's largest magnitude: x1e30 inputs to a matmul overflow every
                        # float32 product, and a float64 answer says nothing of what a float32 runtime should give.
                        scale = math.copysign(dom.max_abs / largest, scale)
                    with np.errstate(over="ignore", under="ignore"):
                        arr = (base[s.name].astype(np.float64) * scale).astype(dt)
                    if dom.low is not None or dom.high is not None:
                        arr = np.clip(arr, dom.low, dom.high).astype(dt)
                    how.append(f"{s.name}: the fixture's inputs (seed {seed})" + (f" x{scale:g}" if scale != 1 else ""))
                else:
                    fill = draw_(values)
                    arr = np.full(shape, fill, dtype=dt)
                    how.append(f"{s.name}: all {fill!r}")
            elif dt.kind == "b":
                values = st.booleans()
                arr = base[s.name].copy() if base is not None else np.full(shape, draw_(values), dtype=bool)
                how.append(f"{s.name}: " + (f"the fixture's inputs (seed {seed})" if base is not None else f"all {bool(arr.flat[0])}"))
            else:
                lo, hi = ints.get(s.name, (0, 1))
                values = st.integers(lo, hi)
                arr = base[s.name].copy() if base is not None else np.full(shape, draw_(values), dtype=dt)
                how.append(f"{s.name}: " + (f"the fixture's inputs (seed {seed})" if base is not None else f"all {int(arr.flat[0])}"))
            if size:
                patches = draw_(st.lists(st.tuples(st.integers(0, size - 1), values), max_size=max_patches, unique_by=lambda p: p[0]))
                flat = arr.reshape(-1)
                for index, value in patches:
                    flat[index] = value
                if patches:
                    how.append(f"{s.name}" + ", ".join(f"[{np.unravel_index(i, shape)}]={v!r}" for i, v in patches))
            out[s.name] = np.ascontiguousarray(arr)
        return Example(batch, out, "; ".join(how))

    return draw()


def pinned_generator(inputs: Inputs, fallback: Callable[[np.random.Generator, int], Inputs] | None = None):
    """A fixture generator that returns `inputs` for the Engine's first input set at their batch
    (`make_inputs(batch)`: seed 0, variant 0) and, for its other input sets (the check that an output
    depends on its input), the same values permuted and scaled by 0.5..1.5 (valid wherever the pinned
    ones are). Another batch takes the pinned rows cyclically."""
    batch0 = next(iter(inputs.values())).shape[0] if inputs and next(iter(inputs.values())).ndim else 1

    def generate(rng: np.random.Generator, batch: int) -> Inputs:
        first = rng.bit_generator.state == np.random.default_rng([0, batch]).bit_generator.state
        out = {}
        for k, v in inputs.items():
            v = np.take(v, np.arange(batch) % batch0, axis=0) if v.ndim and batch != batch0 else v.copy()
            if not first:
                flat = rng.permutation(v.reshape(-1))
                if flat.dtype.kind == "f":
                    with np.errstate(all="ignore"):
                        flat = (flat * rng.uniform(0.5, 1.5, flat.shape)).astype(v.dtype)
                v = flat.reshape(v.shape)
            out[k] = np.ascontiguousarray(v)
        return out

    return generate


# --- findings -----------------------------------------------------------------------------------------
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


class Disagreement(AssertionError):
    """Raised inside the hypothesis test: the example made a runtime disagree."""


class _OutOfBudget(BaseException):
    """Raised inside the hypothesis test when the time budget is spent. A BaseException: hypothesis
    does not treat it as a failure to shrink, it stops the search."""


Result = CaseResult  # a case result as the fuzzer reads it: the engine's record, by attribute


def disagrees(result: Result) -> bool:
    return result.status in ("fail", "crash", "timeout") or (result.status == "error" and result.stage in ("run", "reference"))


def agrees_with_oracle(result: Result) -> bool:
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
    def message(result: Result) -> str:
        text = str(result.error or result.summary or "")
        text = _PATH.sub("…", text.replace(str(result.id), "<case>"))
        text = re.sub(r"fuzzmodel-[0-9a-f]+(~n\d+)?", "<model>", text)
        text = re.sub(r"\bn\d+_[a-z]+", "<layer>", text)
        text = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
        return f"{result.status}@{result.stage}: " + " ".join(text.split())[:300]

    def of(self, fx: Fixture, result: Result, op: str | None) -> str:
        if result.status == "fail":
            return f"fail: {self.op_label(fx, op) or '(whole model)'}"
        return self.message(result)

    def seen(self, fx: Fixture, result: Result) -> bool:
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


@dataclass
class Budget:
    max_examples: int = 50
    time_budget_s: float = 300.0
    seed: int | None = None

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.time_budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


class Fuzzer:
    """Runs examples through a warm Engine and keeps what disagreed."""

    def __init__(self, runtimes: Iterable[str] | None = None, formats: Iterable[str] | None = None, scratch: Path | None = None,
                 save_dir: Path | None = None, exporter=None, log: Callable[[str], None] | None = None,
                 tolerance_override: Any = None, bisect: bool = True, database: Path | None | str = "cache",
                 scale_atol: bool = False):
        from harness.cases import load_deviations
        from harness.engine import Engine, Options
        from harness.export import Exporter, cache_root
        from harness.fixtures import all_fixtures

        self.exporter = exporter or Exporter()
        self.runtimes = list(runtimes) if runtimes else list(DEFAULT_RUNTIMES)
        self.formats = list(formats) if formats else None
        self.save_dir = save_dir
        self.log = log or (lambda _msg: None)
        self.tolerance_override = tolerance_override  # a Tolerance for every format class (tests inject a wrong one)
        # Judge each example with atol times its inputs' largest finite magnitude (at least 1): rounding
        # error grows with the scale of the inputs, and an absolute tolerance made for unit-scale inputs
        # calls it a disagreement at x1000 (the matrix's tolerance otherwise).
        self.scale_atol = scale_atol
        self.bisect = bisect
        # hypothesis' example database (failing examples are replayed first next time): in the export cache
        # by default; None keeps it in memory (tests: every run searches afresh).
        self.database_path = (cache_root() / "hypothesis") if database == "cache" else (Path(database) if database else None)
        scratch = scratch or (cache_root().parent / "fuzz-scratch" / str(time.time_ns()))
        self.engine = Engine(self.exporter, scratch, Options(warmup=0, iterations=1), fixtures=dict(all_fixtures()),
                             deviations=load_deviations())
        self.findings: list[Finding] = []
        self.stats: dict[str, Stats] = {}
        # The first diverging layer of a generated model (fuzz_models sets it: judged against the float64
        # oracle layer by layer, so it also finds where the TF reference itself goes wrong).
        self.divergence: Callable[[Fixture, Example, tuple[str, str]], dict] | None = None

    def close(self) -> None:
        self.engine.close()

    # --- running one example ---------------------------------------------------------------------
    def register(self, fx: Fixture) -> None:
        self.engine.fixtures[fx.name] = fx
        self.engine.forget_reference(fx.name)

    def reference_finite(self, name: str, batch: int) -> bool:
        """Whether the TF reference of the example just run is finite everywhere (a comparison against
        NaN/Inf the fixture did not declare meaningful says nothing)."""
        outputs = self.engine.reference_outputs(name, batch)
        if outputs is None:
            return True
        return all(np.all(np.isfinite(v)) for v in outputs.values() if np.asarray(v).dtype.kind == "f")

    def with_inputs(self, fx: Fixture, example: Example, override: bool = True) -> Fixture:
        tol = self.tolerance_override
        extra: dict[str, Any] = {}
        if tol is not None and override:
            extra = {"tolerances": {cls: tol for cls in ("float32", "float16")}, "output_tolerances": {}}
        elif self.scale_atol and override:
            finite = [np.abs(v[np.isfinite(v)]).max(initial=0.0) for v in example.inputs.values() if v.dtype.kind == "f"]
            factor = max([1.0, *(float(m) for m in finite)])
            if factor > 1:
                def scaled(t: Tolerance) -> Tolerance:
                    return t if t.atol is None else replace(t, atol=t.atol * factor)

                extra = {"tolerances": {cls: scaled(fx.tolerances.get(cls, DEFAULT_TOLERANCES[cls])) for cls in DEFAULT_TOLERANCES},
                         "output_tolerances": {k: scaled(t) for k, t in fx.output_tolerances.items()}}
        if fx.oracle is not None:
            extra["oracle"] = _quiet_oracle(fx.oracle)
        return replace(fx, generate=pinned_generator(example.inputs), generate_alt=None, **extra)

    def run_example(self, fx: Fixture, example: Example, pairs: list[tuple[str, str]], keep: Path | None = None,
                    override: bool = True) -> list[Result]:
        """Every pair's result for the example (the reference case runs last, so its outputs are the
        example's when they are kept)."""
        from harness.cases import REFERENCE, Case

        self.register(self.with_inputs(fx, example, override))
        results: list[Result] = []
        ordered = [p for p in pairs if p != REFERENCE] + [p for p in pairs if p == REFERENCE]
        for fmt, runtime in ordered:
            case = Case(fx.name, fmt, runtime, "cpu", example.batch)
            result = self.engine.run_case(case)
            results.append(result)
            if keep is not None:
                out = self.engine.scratch / case.id / "out"
                if out.is_dir() and result.status not in ("error", "skip", "unsupported"):
                    dest = keep / "outputs" / f"{fmt}~{runtime}"
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(out, dest)
        return results

    def pairs(self, fx: Fixture, stats: Stats) -> list[tuple[str, str]]:
        """The (format, runtime) pairs to fuzz for a fixture: those of the matrix that pass, or are
        inconclusive, on the fixture's own inputs. A pair that fails there already is the conformance
        matrix's finding, not the fuzzer's; one that cannot export, load or run is set aside, with why."""
        from harness.cases import QUANTISED, REFERENCE, Selection, matrix
        from harness.runners import check_runtime

        runtimes = [check_runtime(r).name for r in self.runtimes]
        formats = [f for f in (self.formats or []) if f]
        cases = matrix(Selection(fixtures=[fx.name], formats=formats or None, runtimes=runtimes, batches=[1]),
                       {fx.name: fx})
        found = []
        for c in cases:
            if not self.formats and c.format in QUANTISED:
                continue
            if not check_runtime(c.runtime).availability().ok:
                stats.set_aside[f"{c.format}~{c.runtime}"] = "runtime unavailable"
                continue
            found.append((c.format, c.runtime))
        if REFERENCE not in found and fx.oracle is not None:
            found.append(REFERENCE)
        probe = Example(1, fx.make_inputs(1), "the fixture's own inputs")
        keep = []
        for result, pair in zip(self.run_example(fx, probe, found, override=False), [p for p in found if p != REFERENCE] + [p for p in found if p == REFERENCE]):
            if result.status in ("pass", "inconclusive"):
                keep.append(pair)
            else:
                stats.set_aside[f"{pair[0]}~{pair[1]}"] = f"{result.status} on the fixture's own inputs: {result.summary or ''}"[:200]
        stats.pairs = [f"{f}~{r}" for f, r in keep]
        return keep

    # --- the search --------------------------------------------------------------------------------
    def search(self, key: str, fx_for: Callable[[Any], tuple[Fixture, Example]], strategy, pairs: list[tuple[str, str]],
               budget: Budget, stats: Stats, level: str, nonfinite_ok: Callable[[Fixture], bool],
               oracle_ok: Callable[[Fixture, Example], bool] | None = None,
               is_bad: Callable[[Result], bool] = disagrees, causes: Causes | None = None) -> list[Finding]:
        """Hypothesis searches `strategy` for a value whose example makes a pair disagree; on a find,
        the pair is set aside (with `causes`: its cause is, and the pair searched on) and the search goes
        on until the budget or the pairs run out."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hseed
        from hypothesis.database import DirectoryBasedExampleDatabase
        from hypothesis.errors import Flaky, Unsatisfiable

        found: list[Finding] = []
        active = list(pairs)
        database = DirectoryBasedExampleDatabase(str(self.database_path)) if self.database_path else None
        rounds = 0
        while active and budget.left() > 0:
            state: dict[str, Any] = {"target": None, "last": None, "count": 0}
            rounds += 1
            start = time.monotonic()

            body = self._body(state, active, budget, stats, level, fx_for, nonfinite_ok, oracle_ok, is_bad, causes)
            # One database key per set of pairs still searched: a later round (fewer pairs) replaying an example
            # of an earlier one would find it passing and delete it; this way it is replayed first next run.
            known = sorted((p, c) for p, cs in causes.known.items() for c in cs) if causes else []
            body._hypothesis_internal_add_digest = f"{key}:{sorted(active)}:{known}".encode()  # type: ignore[attr-defined]
            test = settings(
                max_examples=budget.max_examples, deadline=None, database=database, print_blob=False,
                suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
            )(given(strategy)(body))
            # Another round, other examples. Without --seed a random one, given explicitly: hypothesis would
            # otherwise print "You can reproduce this failure by adding @seed(...)" when the budget stops it.
            base_seed = budget.seed if budget.seed is not None else secrets.randbits(64)
            test = hseed(base_seed + rounds - 1)(test)
            out_of_time = False
            try:
                test()
            except _OutOfBudget:
                out_of_time = True
            except Disagreement:
                pass
            except Flaky:
                if state["last"] is not None:
                    state["flaky"] = True
            except Unsatisfiable:
                stats.notes.append(f"round {rounds}: every example was rejected (no finite float64 answer)")
            except Exception as e:  # a bug of the harness or the generator: reported, the rest of the run goes on
                import traceback

                stats.notes.append(f"round {rounds}: the search stopped: {type(e).__name__}: {e}")
                self.log(f"  {level}: the search stopped: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
                state["last"] = None
            stats.seconds += time.monotonic() - start
            if state["last"] is None:
                break  # the search ended without a disagreement: these pairs agree within the budget
            fx, example, _ = state["last"]
            finding = self.record(level, fx, example, state["target"], active, flaky=bool(state.get("flaky")), is_bad=is_bad,
                                  causes=causes)
            found.append(finding)
            self.findings.append(finding)
            # Every pair that disagrees on the minimal example is set aside with it (one cause, one finding);
            # with `causes`, only that cause is.
            if causes is None:
                for pair in [state["target"], *(tuple(a.split("~", 1)) for a in finding.also)]:
                    if pair in active:
                        active.remove(pair)
            if out_of_time:
                break
        return found

    def _body(self, state: dict[str, Any], active: list[tuple[str, str]], budget: Budget, stats: Stats, level: str,
              fx_for: Callable[[Any], tuple[Fixture, Example]], nonfinite_ok: Callable[[Fixture], bool],
              oracle_ok: Callable[[Fixture, Example], bool] | None, is_bad: Callable[[Result], bool],
              causes: Causes | None = None) -> Callable[[Any], None]:
        """The hypothesis test of one search round: run the example, raise Disagreement on a disagreement
        (after the first, only for the pair that disagreed first, which alone is run while shrinking)."""
        from hypothesis import reject

        from harness.cases import REFERENCE

        def body(value: Any) -> None:
            if budget.left() <= 0:
                raise _OutOfBudget()
            if state["count"] >= budget.max_examples and state["target"] is None:
                return  # hypothesis' own count includes rejected examples: stop at ours too
            fx, example = fx_for(value)
            if oracle_ok is not None and not oracle_ok(fx, example):
                stats.rejected += 1
                reject()
            run = [state["target"]] if state["target"] else active
            if state["target"] and state["target"] != REFERENCE and REFERENCE in active:
                run = run + [REFERENCE]  # the reference vs the oracle is checked in shrinking too
            results = self.run_example(fx, example, run)
            state["count"] += 1
            stats.examples += 1
            stats.case_runs += len(run)
            if not nonfinite_ok(fx) and not self.reference_finite(fx.name, example.batch):
                stats.rejected += 1
                reject()
            bad = self.bad(fx, results, is_bad, causes)
            if state["target"]:
                bad = [r for r in bad if (r.format, r.runtime) == state["target"]]
            if bad:
                if state["target"] is None:
                    state["target"] = (bad[0].format, bad[0].runtime)
                    self.log(f"  {level} {fx.name}: {bad[0].runtime} ({bad[0].format}) {bad[0].status}: "
                             f"{(bad[0].summary or '')[:100]} — shrinking")
                state["last"] = (fx, example, bad[0])
                raise Disagreement(f"{bad[0].id}: {bad[0].status}: {bad[0].summary}")
        return body

    @staticmethod
    def bad(fx: Fixture, results: list[Result], is_bad: Callable[[Result], bool], causes: Causes | None = None) -> list[Result]:
        """The results that disagree, the reference first: a pair that agrees with the float64 oracle is
        not one of them (the reference is), nor is a cause already found."""
        from harness.cases import REFERENCE

        out = [r for r in results if is_bad(r) and not agrees_with_oracle(r) and not (causes is not None and causes.seen(fx, r))]
        return sorted(out, key=lambda r: (r.format, r.runtime) != REFERENCE)

    def fuzz_inputs(self, fx: Fixture, budget: Budget) -> list[Finding]:
        from harness.fixtures import format_class

        stats = self.stats.setdefault(f"inputs:{fx.name}", Stats())
        start = time.monotonic()
        pairs = self.pairs(fx, stats)
        stats.seconds += time.monotonic() - start  # the probe counts: it is part of what a run costs
        if not pairs:
            return []
        dom = domain(fx)

        def oracle_ok(f: Fixture, example: Example) -> bool:
            # Without declared non-finite semantics, an example whose float64 answer is not finite (or
            # is beyond float32) cannot be compared meaningfully: reject it.
            if dom.nonfinite or fx.oracle is None:
                return True
            with np.errstate(all="ignore"):
                out = fx.oracle(example.inputs)
            return all(np.all(np.isfinite(v)) and np.all(np.abs(v) <= F32_MAX) for v in out.values() if np.asarray(v).dtype.kind == "f")

        del format_class
        key = f"inputs:{fx.name}:{fx.digest()}:{sorted(pairs)}"
        return self.search(key, lambda ex: (fx, ex), input_strategy(fx), pairs, budget, stats, "inputs",
                           lambda _f: dom.nonfinite, oracle_ok)

    # --- a disagreement, saved ------------------------------------------------------------------------
    def record(self, level: str, fx: Fixture, example: Example, target: tuple[str, str], pairs: list[tuple[str, str]],
               flaky: bool = False, is_bad: Callable[[Result], bool] = disagrees, causes: Causes | None = None) -> Finding:
        """Replay the minimal example through every pair, keep every output, find the first diverging
        layer (Keras models) and write the regression case."""
        from harness.cases import REFERENCE, Case

        ident = f"{fx.name}-{target[0]}-{target[1]}-{example.digest()[:10]}"
        folder = (self.save_dir / ident) if self.save_dir else None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "inputs").mkdir(parents=True)
            for k, v in example.inputs.items():
                np.save(folder / "inputs" / f"{k}.npy", v, allow_pickle=False)
        everything = list(dict.fromkeys([*pairs, target, REFERENCE]))
        results = self.run_example(fx, example, everything, keep=folder)
        mine = next(r for r in results if (r.format, r.runtime) == target)
        worst = max(mine.metrics.values(), key=lambda m: m.max_abs or 0.0, default=OutputMetrics())
        layer = None
        op = fx.name if fx.kind != "keras" else None
        if fx.kind == "keras" and self.bisect and mine.status == "fail":
            from harness.layer_search import first_divergence

            try:
                if self.divergence is not None and getattr(fx, "_fuzz_spec", None) is not None:
                    layer = self.divergence(fx, example, target)
                elif target == REFERENCE:
                    # The reference is judged against the fixture's oracle, which has no output per layer:
                    # a cut model's reference would be judged against itself and pass at every layer.
                    layer = {"supported": False, "why": "the TF reference disagrees with the fixture's oracle, which gives no "
                                                        "output per layer to find where"}
                else:
                    layer = first_divergence(self.engine, self.engine.fixtures[fx.name], Case(fx.name, target[0], target[1], "cpu", example.batch))
                op = layer.get("layer")
            except Exception as e:  # the search is evidence; its failure must not lose the finding
                layer = {"supported": False, "why": f"{type(e).__name__}: {e}"}
        if op is None and fx.kind == "keras":
            op = "(whole model)"
        finding = Finding(
            level=level, fixture=fx.name, format=target[0], runtime=target[1], status=mine.status or "error", stage=mine.stage,
            culprit=mine.culprit, error=mine.error, example=repr(example), batch=example.batch,
            max_abs=worst.max_abs, max_rel=worst.max_rel, required_atol=worst.required_atol,
            required_rtol=worst.required_rtol,
            op=op, layer=layer, folder=str(folder) if folder else None, flaky=flaky,
            also=[f"{r.format}~{r.runtime}" for r in self.bad(fx, results, is_bad, causes) if (r.format, r.runtime) != target],
            tolerance=mine.tolerance,
        )
        if causes is not None:
            finding.cause = causes.of(fx, mine, op)
            for r in self.bad(fx, results, is_bad, causes):  # the same example's other disagreements: the same cause
                causes.add((r.format, r.runtime), causes.of(fx, r, op))
            causes.add(target, finding.cause)
        if folder is not None:
            if fx.oracle is not None:
                (folder / "oracle").mkdir(exist_ok=True)
                with np.errstate(all="ignore"):
                    for k, v in fx.oracle(example.inputs).items():
                        np.save(folder / "oracle" / f"{k}.npy", np.asarray(v), allow_pickle=False)
            spec = getattr(fx, "_fuzz_spec", None)
            if spec is not None:
                (folder / "model.json").write_text(json.dumps(spec, indent=1))
            record = {
                "id": ident, "level": level, "fixture": None if spec is not None else fx.name, "format": target[0],
                "runtime": target[1], "batch": example.batch, "example": repr(example), "op": op,
                "finding": {k: v for k, v in finding.__dict__.items() if k not in ("folder",)},
                "results": {f"{r.format}~{r.runtime}": {k: r.to_dict().get(k) for k in ("status", "stage", "culprit", "summary", "metrics", "tolerance")}
                            for r in results},
                "found": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            # Committed with the fixture: the export cache's place on this machine is written as $HARNESS_CACHE.
            text = json.dumps(record, indent=1, default=_json_default)
            (folder / "case.json").write_text(text.replace(json.dumps(str(self.exporter.root))[1:-1], "$HARNESS_CACHE"))
            (folder / "deviation.toml").write_text(
                "# Paste into fixtures/deviations.toml once triaged (converter, runtime, tolerance), or fix the bug.\n"
                f"[[deviation]]\nfixture = \"fuzz-{ident}\"\nformat = \"{target[0]}\"\nruntime = \"{target[1]}\"\n"
                f"status = [\"{mine.status}\"]\nreason = \"\"\"found by harness fuzz: {finding.line()}\"\"\"\n"
            )
        self.log(f"  found: {finding.line()}" + (f" -> {folder}" if folder else ""))
        return finding


def _quiet_oracle(oracle: Callable[[Inputs], dict[str, np.ndarray]]) -> Callable[[Inputs], dict[str, np.ndarray]]:
    """The oracle without NumPy's overflow/invalid warnings: edge values make them on purpose."""
    if getattr(oracle, "_fuzz_quiet", False):
        return oracle

    def quiet(inputs: Inputs) -> dict[str, np.ndarray]:
        with np.errstate(all="ignore"):
            out = oracle(inputs)
            # A float64 answer beyond float32's range is, correctly rounded to float32, ±inf: that is what
            # a float32 runtime must return, not a disagreement. (The comparator judges the raw float64
            # oracle: pow's 1.9e30 ** 2.7 = 1e82 is called TF's error. Reported on issue 16.)
            return {k: np.where(np.abs(v) > F32_MAX, np.copysign(np.inf, v), v) if np.asarray(v).dtype == np.float64 else v
                    for k, v in out.items()}

    quiet._fuzz_quiet = True  # type: ignore[attr-defined]
    return quiet


def _json_default(value: Any) -> Any:
    if isinstance(value, float):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


# --- regression fixtures -----------------------------------------------------------------------------------
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
            from harness.fuzz_models import model_fixture

            spec = json.loads((d / "model.json").read_text())
            fx = model_fixture(spec)
        else:
            name = record.get("fixture")
            if base is None:
                from harness.fixtures import all_fixtures

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


# --- a whole run ---------------------------------------------------------------------------------------------
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


def fuzz(levels: Iterable[str] = ("inputs",), fixtures: Iterable[str] | None = None, runtimes: Iterable[str] | None = None,
         formats: Iterable[str] | None = None, max_examples: int = 50, time_budget_s: float = 300.0, seed: int | None = None,
         save_dir: Path | None = Path("fixtures/regressions"), log: Callable[[str], None] | None = None, bisect: bool = True,
         models: int | None = None, scale_atol: bool = False) -> Report:
    """`harness fuzz`: the time budget is shared by the levels and the fixtures, each getting an equal
    part of what is left when it starts; `max_examples` bounds each search."""
    from harness.fixtures import all_fixtures

    levels = list(levels)
    registry = all_fixtures()
    names = list(fixtures) if fixtures else [n for n, f in registry.items() if not f.bench_only and not f.group and _fuzzable(f)]
    for n in names:
        if n not in registry:
            from harness.errors import unknown

            raise unknown("fixture", n, list(registry))
    start = time.monotonic()
    log = log or (lambda _m: None)
    fuzzer = Fuzzer(runtimes, formats, save_dir=save_dir, log=log, bisect=bisect, scale_atol=scale_atol)
    try:
        total = Budget(max_examples, time_budget_s, seed)
        parts = (len(names) if "inputs" in levels else 0) + (1 if "models" in levels else 0)
        done = 0
        if "inputs" in levels:
            for n in names:
                share = total.left() / max(1, parts - done)
                done += 1
                if share <= 1:
                    break
                log(f"inputs: {n} ({share:.0f} s)")
                fuzzer.fuzz_inputs(registry[n], Budget(max_examples, share, seed))
        if "models" in levels and total.left() > 1:
            from harness.fuzz_models import fuzz_models

            log(f"models ({total.left():.0f} s)")
            fuzz_models(fuzzer, Budget(models or max_examples, total.left(), seed))
        options = {"levels": levels, "fixtures": names if "inputs" in levels else [], "runtimes": fuzzer.runtimes, "formats": fuzzer.formats,
                   "max_examples": max_examples, "time_budget_s": time_budget_s, "seed": seed, "scale_atol": scale_atol,
                   "save": str(save_dir) if save_dir else None}
        return Report(fuzzer.findings, fuzzer.stats, time.monotonic() - start, options)
    finally:
        fuzzer.close()


def _fuzzable(fx: Fixture) -> bool:
    return fx.kind != "user" and all(s.dtype != "bytes" and s.dtype != "object" for s in fx.inputs) and not fx.signature_generators.get(fx.signature)


__all__ = ["Budget", "DOMAINS", "Disagreement", "Example", "Finding", "Fuzzer", "Report", "Stats", "TensorSpec", "ValueDomain",
           "domain", "fuzz", "input_strategy", "pinned_generator", "regression_fixtures"]
