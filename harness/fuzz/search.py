"""The search (`harness fuzz`): the Fuzzer runs each drawn example through every selected (format, runtime)
pair with the run-case Engine (workers stay warm, every verdict is the conformance matrix's own),
hypothesis searches and shrinks, and a minimal disagreement is replayed through every pair, located
(first diverging layer or node) and saved as a regression case. Level 1 searches a fixture's inputs
(harness.fuzz.strategies), level 2 generated models (harness.fuzz.models: `fuzz_models`)."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.cases import QUANTISED, REFERENCE, Case, Selection, load_deviations, matrix
from harness.comparator import DEFAULT_TOLERANCES, Tolerance
from harness.engine import Engine, Options
from harness.errors import unknown
from harness.export import Exporter, cache_root
from harness.fixtures import Fixture, Inputs, all_fixtures
from harness.fuzz.findings import Causes, Finding, Report, Stats, agrees_with_oracle, disagrees
from harness.fuzz.models import (
    ancestors,
    describe,
    finding_label,
    model_fixture,
    model_strategy,
    node_fixture,
    op_label,
    op_labels,
    value_search,
)
from harness.fuzz.strategies import F32_MAX, Example, domain, input_strategy, pinned_generator
from harness.layer_search import first_diverging_layer
from harness.records import CaseResult, OutputMetrics
from harness.runners import check_runtime

# Formats fuzzed by default: the float ones (harness.cases.QUANTISED, from the format registry, are left
# out). Quantised formats are judged by SNR over the whole output, which a single patched element cannot
# move, and their error is the converter's choice anyway.
# Runtimes fuzzed by default: every in-process-fast worker. The browser runtimes (a second a case) and
# the Docker one are opt-in with --runtimes.
DEFAULT_RUNTIMES = ("tf", "litert", "ort", "node-tfjs-cpu", "node-tfjs-wasm", "node-ort", "go-tfgo", "go-ort")


class Disagreement(AssertionError):
    """Raised inside the hypothesis test: the example made a runtime disagree."""


class _OutOfBudget(BaseException):
    """Raised inside the hypothesis test when the time budget is spent. A BaseException: hypothesis
    does not treat it as a failure to shrink, it stops the search."""


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
                    override: bool = True) -> list[CaseResult]:
        """Every pair's result for the example (the reference case runs last, so its outputs are the
        example's when they are kept)."""

        self.register(self.with_inputs(fx, example, override))
        results: list[CaseResult] = []
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
               is_bad: Callable[[CaseResult], bool] = disagrees, causes: Causes | None = None) -> list[Finding]:
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
              oracle_ok: Callable[[Fixture, Example], bool] | None, is_bad: Callable[[CaseResult], bool],
              causes: Causes | None = None) -> Callable[[Any], None]:
        """The hypothesis test of one search round: run the example, raise Disagreement on a disagreement
        (after the first, only for the pair that disagreed first, which alone is run while shrinking)."""
        from hypothesis import reject


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
    def bad(fx: Fixture, results: list[CaseResult], is_bad: Callable[[CaseResult], bool], causes: Causes | None = None) -> list[CaseResult]:
        """The results that disagree, the reference first: a pair that agrees with the float64 oracle is
        not one of them (the reference is), nor is a cause already found."""

        out = [r for r in results if is_bad(r) and not agrees_with_oracle(r) and not (causes is not None and causes.seen(fx, r))]
        return sorted(out, key=lambda r: (r.format, r.runtime) != REFERENCE)

    def fuzz_inputs(self, fx: Fixture, budget: Budget) -> list[Finding]:
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

        key = f"inputs:{fx.name}:{fx.digest()}:{sorted(pairs)}"
        return self.search(key, lambda ex: (fx, ex), input_strategy(fx), pairs, budget, stats, "inputs",
                           lambda _f: dom.nonfinite, oracle_ok)

    # --- a disagreement, saved ------------------------------------------------------------------------
    def record(self, level: str, fx: Fixture, example: Example, target: tuple[str, str], pairs: list[tuple[str, str]],
               flaky: bool = False, is_bad: Callable[[CaseResult], bool] = disagrees, causes: Causes | None = None) -> Finding:
        """Replay the minimal example through every pair, keep every output, find the first diverging
        layer (Keras models) and write the regression case."""

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

            try:
                if self.divergence is not None and getattr(fx, "_fuzz_spec", None) is not None:
                    layer = self.divergence(fx, example, target)
                elif target == REFERENCE:
                    # The reference is judged against the fixture's oracle, which has no output per layer:
                    # a cut model's reference would be judged against itself and pass at every layer.
                    layer = {"supported": False, "why": "the TF reference disagrees with the fixture's oracle, which gives no "
                                                        "output per layer to find where"}
                else:
                    layer = first_diverging_layer(self.engine, self.engine.fixtures[fx.name], Case(fx.name, target[0], target[1], "cpu", example.batch))
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
                "results": {f"{r.format}~{r.runtime}": {k: stored.get(k) for stored in [r.to_dict()] for k in ("status", "stage", "culprit", "summary", "metrics", "tolerance")}
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


def fuzz(levels: Iterable[str] = ("inputs",), fixtures: Iterable[str] | None = None, runtimes: Iterable[str] | None = None,
         formats: Iterable[str] | None = None, max_examples: int = 50, time_budget_s: float = 300.0, seed: int | None = None,
         save_dir: Path | None = Path("fixtures/regressions"), log: Callable[[str], None] | None = None, bisect: bool = True,
         models: int | None = None, scale_atol: bool = False) -> Report:
    """`harness fuzz`: the time budget is shared by the levels and the fixtures, each getting an equal
    part of what is left when it starts; `max_examples` bounds each search."""

    levels = list(levels)
    registry = all_fixtures()
    names = list(fixtures) if fixtures else [n for n, f in registry.items() if not f.bench_only and not f.group and _fuzzable(f)]
    for n in names:
        if n not in registry:

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


def first_diverging_node(fuzzer: Fuzzer, fx: Fixture, example: Example, target: tuple[str, str]) -> dict:
    """Where a generated model first diverges in the target pair: a binary search over the nodes the output
    depends on, each cut model run in the pair on the example's inputs and judged as the whole model was
    (the reference against the float64 oracle of that node, the others against the reference). The same
    answer as harness/layer_search.py's for a pair other than the reference, and an answer for it too."""

    spec = fx._fuzz_spec  # type: ignore[attr-defined]
    path = ancestors(spec)
    probes: dict[int, Any] = {}

    def probe(i: int):
        if i not in probes:
            probes[i] = fuzzer.run_example(node_fixture(spec, path[i]), example, [target])[0]
        return probes[i]

    lo, hi = 0, len(path) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if disagrees(probe(mid)):
            hi = mid
        else:
            lo = mid + 1
    found = probe(lo)
    names = {i: f"n{i}_{spec['nodes'][i - 1]['op']} ({op_label(spec['nodes'][i - 1])})" for i in path}
    return {"supported": True, "layer_index": path[lo] - 1, "layer": names[path[lo]],
            "previous": names[path[lo - 1]] if lo > 0 else "(model inputs)", "status": found.status, "error": found.error,
            "metrics": {k: m.to_dict() for k, m in found.metrics.items()}, "probes": {names[path[i]]: r.status for i, r in sorted(probes.items())},
            "judged": "against the float64 model's node" if target == REFERENCE else "against the TF reference of the cut model"}


def model_disagrees(result: CaseResult) -> bool:
    # At this level a converter or runtime that cannot export, validate or load a valid model is a finding too.
    return disagrees(result) or (result.status == "error" and result.stage in ("export", "validate", "load")
                                 and result.culprit != "environment")


def fuzz_models(fuzzer: Fuzzer, budget: Budget, max_nodes: int = 6) -> list[Finding]:
    """Generated models through every float format and selected runtime, until the budget is spent."""
    stats: Stats = fuzzer.stats.setdefault("models", Stats())
    probe = model_fixture({"input": [4], "nodes": [{"op": "dense", "in": [0], "units": 2, "shape": [2]}], "seed": 0})
    runtimes = [check_runtime(r).name for r in fuzzer.runtimes]
    pairs = []
    for c in matrix(Selection(fixtures=[probe.name], formats=fuzzer.formats, runtimes=runtimes, batches=[1]), {probe.name: probe}):
        if (fuzzer.formats or c.format not in QUANTISED) and check_runtime(c.runtime).availability().ok:
            pairs.append((c.format, c.runtime))
    if REFERENCE not in pairs:
        pairs.append(REFERENCE)
    stats.pairs = [f"{f}~{r}" for f, r in pairs]
    prepared: dict[str, tuple[Fixture, Example] | None] = {}

    def prepare(value) -> tuple[Fixture, Example] | None:
        key = json.dumps(value, sort_keys=True, default=str)
        if key not in prepared:
            spec, batch, seed, dist, scale = value
            fx = model_fixture(spec)
            rng = np.random.default_rng(seed)
            shape = (batch, *spec["input"])
            x = rng.standard_normal(shape) if dist == "normal" else rng.uniform(0.0, 1.0, shape)
            found = value_search(spec, x * scale)
            if found is None:
                prepared[key] = None
            else:
                shift = f" {found.offset:+g}" if found.offset else ""
                how = f"{describe(spec)}; inputs {dist} seed {seed} x{scale * found.scale:g}{shift}"
                prepared[key] = (fx, Example(batch, {"x": found.values}, how))
        return prepared[key]

    def fx_for(value):
        got = prepare(value)
        if got is None:
            from hypothesis import reject

            stats.rejected += 1
            reject()
        return got

    fuzzer.divergence = lambda fx, example, target: first_diverging_node(fuzzer, fx, example, target)
    return fuzzer.search(f"models:{sorted(pairs)}", fx_for, model_strategy(max_nodes), pairs, budget, stats, "model",
                         lambda _f: True, None, is_bad=model_disagrees, causes=Causes(op_labels, finding_label))
