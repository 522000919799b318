"""The engine that runs one case: artifact → worker → comparator → verdict.

It exports (or finds) artifacts, runs the reference (the fixture's SavedModel in the `tf` runtime),
runs the case in its runtime's worker, judges the outputs and applies the known deviations. Data only
goes one way: the engine hands arrays to the comparator and results to the store; it never compares or
formats anything itself. Which cases exist is harness/cases.py's; a run of many is harness/orchestrator.py's.
"""

from __future__ import annotations

import errno
import hashlib
import math
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from harness import comparator
from harness.artifact import MISSING_PIECE, Artifact, crash_cause, one_line
from harness.availability import Availability
from harness.cases import QUANTISED, Case, Deviation, load_deviations
from harness.errors import HarnessError
from harness.export import Exporter, format_class
from harness.export.locks import LockTimeout
from harness.fixtures import Fixture, all_fixtures
from harness.records import KEPT_OUTPUT_BYTES, CaseResult, Timing
from harness.runners import RUNTIMES, RpcError, WorkerCrash, WorkerPool, WorkerTimeout, check_runtime
from harness.stats import latency_stats

DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
OTHER_INPUT_SETS = 3  # at most this many more input sets to tell an input-independent output
CHECKPOINT_MISMATCH = "checkpoint does not match the model's code"  # the tf worker's words (runners/tf.py MISMATCH)


@dataclass
class Options:
    warmup: int = 2
    iterations: int = 10
    threads: int = 0
    load_timeout_s: float = 120.0
    run_timeout_s: float = 60.0
    keep_tensors: bool = False
    min_time_s: float = 0.0  # benchmarks: measure each case for at least this long
    max_time_s: float = 10.0  # ... and, for very slow cases, not much longer than this (at least 3 samples)
    max_iterations: int = 10000
    rounds: int = 1  # benchmarks: measure each case in this many rounds, interleaved across cases
    delay_us: int = 0  # self-tests only: a busy-wait inside each timed call (harness selftest gate's injected slowdown)
    delay_case: str = ""  # self-tests only: the one case that gets delay_us (empty: every case)
    sandbox: str = "none"  # where workers run: bwrap, docker or none (harness/sandbox.py)


@dataclass
class _Loaded:
    handle: str
    load_ms: float
    generation: int  # which start of the runtime's worker holds the handle


@dataclass
class Reference:
    """The fixture's SavedModel run by TF for one batch: the inputs every case of that batch gets, the
    outputs they are judged against, and the same model's outputs for other input sets (to tell an
    output that ignores its input). On failure, `error` with its stage, culprit and evidence."""

    inputs: dict[str, np.ndarray] | None = None
    outputs: dict[str, np.ndarray] | None = None
    others: list[dict[str, np.ndarray]] = field(default_factory=list)
    variant: int = 0  # 1: the fixture's second input distribution (the first left no signal)
    error: str | None = None
    stage: str = "reference"
    culprit: str = "runtime"
    evidence: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # what the reference's worker ran with (info.settings)


class _Staged(Exception):
    """Carries the stage (load or run) in which a worker call failed."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(str(error))
        self.stage, self.error = stage, error


class Engine:
    """Runs cases. Reuses one worker per runtime and one loaded model per artifact and runtime, so a
    second batch of the same artifact costs only its inference."""

    def __init__(self, exporter: Exporter, scratch: Path, options: Options | None = None, fixtures: dict[str, Fixture] | None = None,
                 deviations: list[Deviation] | None = None, logs: Path | None = None):
        self.exporter = exporter
        self.scratch = scratch.resolve()  # absolute: workers (and containers) have other working folders
        self.options = options or Options()
        self.fixtures = fixtures if fixtures is not None else all_fixtures()
        self.deviations = deviations if deviations is not None else load_deviations()
        from harness.runners.table import WorkerContext

        self.pool = WorkerPool(WorkerContext(exporter.root, scratch), logs=logs, sandbox=self.options.sandbox)
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._references: dict[tuple[str, int], Reference] = {}
        self._input_files: dict[tuple, str] = {}
        self._availability = {name: spec.availability() for name, spec in RUNTIMES.items()}  # variants added as cases name them
        # The outputs of the cases run, until the orchestrator takes them for the store (which keeps the
        # small ones: drift between machines and back-ends is computed from them).
        self._outputs: dict[str, dict[str, np.ndarray]] = {}

    def take_outputs(self, case_id: str) -> dict[str, np.ndarray] | None:
        """The outputs of a case run by this engine (once: they are then dropped here)."""
        return self._outputs.pop(case_id, None)

    def close(self) -> None:
        self.pool.close()
        if not self.options.keep_tensors:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def restart_workers(self) -> None:
        """Close every worker: the next case starts fresh ones (a benchmark round in new processes)."""
        self.pool.close()
        self._loaded.clear()

    def kill(self) -> None:
        """Stop every worker (and container) now, without waiting for an answer: an interrupted run."""
        self.pool.kill()
        if not self.options.keep_tensors:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def runtime_versions(self) -> dict:
        # Worker keys are the runtime, or runtime#t<threads> for a thread setting, with ~A/~B for the two
        # sides of a paired benchmark (each recorded with its own versions; the runtime names its build).
        info = {re.sub(r"#t\d+", "", key): value for key, value in self.pool.info.items()}
        out = {
            name: (info.get(name) or {"available": a.ok, "version": a.version, "reason": a.reason})
            for name, a in self._availability.items()
        }
        for key, value in info.items():
            if "~" in key:
                out[key] = value
        # How reports show each runtime (its table entry's code and colour): reports read them from the run.
        for key, value in out.items():
            if isinstance(value, dict):
                try:
                    out[key] = {**value, **check_runtime(key.partition("~")[0]).legend}
                except HarnessError:
                    pass
        return out

    def availability(self, runtime: str) -> Availability:
        """Whether `runtime` (a table entry, a variant or a build) runs here, asked once per engine; a
        build's environment missing from the cache is rebuilt from its lock first."""
        if runtime not in self._availability:
            spec = check_runtime(runtime)
            self._availability[runtime] = spec.prepare() or spec.availability()
        return self._availability[runtime]

    def artifact(self, fixture: Fixture, fmt: str) -> Artifact:
        """The artifact, verified against its recorded sizes and mtimes each time a case needs it (a
        few stat calls), so a file damaged during a run is exported again before a worker loads it."""
        return self.exporter.get(fixture, fmt)

    # --- running -------------------------------------------------------------------------------
    def run_case(self, case: Case) -> CaseResult:
        """The case's result, the typed record the store writes; never raises for a problem of the case
        itself (a bug in the harness becomes an `error` result, stage where it happened, culprit
        `harness`, with its traceback)."""
        result = self._blank(case)
        try:
            return self._run_case(case, result)
        except HarnessError as e:
            return self._finish(case, result, "error", error=str(e), stage=result.stage or "run", culprit="environment")
        except OSError as e:
            if e.errno in DISK_ERRORS:
                raise  # a full or read-only disk stops the run (state failed), not just this case
            import traceback

            return self._finish(case, result, "error", error=f"{type(e).__name__}: {e}", stage=result.stage or "run",
                                culprit="environment", evidence={"traceback": traceback.format_exc()})
        except Exception as e:
            import traceback

            return self._finish(case, result, "error", error=f"internal error: {type(e).__name__}: {e}",
                                stage=result.stage or "run", culprit="harness", evidence={"traceback": traceback.format_exc()})

    @staticmethod
    def _blank(case: Case) -> CaseResult:
        return CaseResult.blank(case)

    def _run_case(self, case: Case, result: CaseResult) -> CaseResult:
        """The case; when it fails in a way a damaged artifact would explain (load failed, the worker
        crashed, outputs disagree), every file of its artifact and of the reference is hashed: a
        damaged one (same size and mtime, so the fast check missed it) is exported again and the case
        run once more, so the cache's fault is never blamed on a runtime (nor on the reference's)."""
        first = self._run_case_once(case, replace(result))
        # A failure at stage reference counts too: a damaged reference SavedModel fails TF's load
        # ("checksum does not match") for every case of the fixture, and is the cache's fault.
        if first.status not in ("error", "crash", "fail") or first.stage not in ("load", "run", "compare", "reference"):
            return first
        fixture = self.fixtures[case.fixture]
        damaged = [(fmt, why) for fmt in dict.fromkeys([case.format, fixture.reference[0]])
                   for why in [self.exporter.verify_fully(fixture, fmt)] if why]
        if not damaged:
            return first
        for fmt, _ in damaged:
            if fmt == fixture.reference[0]:
                self._references = {k: v for k, v in self._references.items() if k[0] != fixture.name}
        self._loaded = {k: v for k, v in self._loaded.items() if k[1] not in {self.artifact(fixture, f).key for f, _ in damaged}}
        return self._run_case_once(case, result)

    def _run_case_once(self, case: Case, result: CaseResult) -> CaseResult:
        fixture = self.fixtures[case.fixture]
        avail = self.availability(case.runtime)
        if not avail.ok:
            variant = check_runtime(case.runtime).variant
            if variant is not None and variant.beyond_setup:
                # A GPU or an arithmetic this machine does not have: the path cannot run here at all.
                cannot = f"{case.runtime} cannot run on this machine: {avail.reason}" + (f" (it needs {avail.fix})" if avail.fix else "")
                return self._finish(case, result, "unsupported", reason=cannot, error=cannot, stage="load", culprit="environment")
            return self._finish(case, result, "skip", reason=f"runtime {case.runtime} unavailable: {avail.reason} (fix: {avail.fix})",
                                stage="load", culprit="environment")
        result.stage = "export"
        try:
            art = self.artifact(fixture, case.format)
        except LockTimeout as stuck:  # another process holds the entry's lock and does not let go (stopped, hung)
            return self._finish(case, result, "error", error=str(stuck), stage="export", culprit="environment")
        result.artifact = {"key": art.key, "dir": str(art.dir), "export_s": art.export_s}
        repaired = [r for r in self.exporter.repairs if r["fixture"] == fixture.name and r["format"] in (case.format, fixture.reference[0])]
        if repaired:
            result.artifact["repaired"] = [f"{r['format']}: {r['problem']}" for r in repaired]
        if art.status != "ok":
            evidence = {k: art.extra[k] for k in ("traceback", "op", "converter_log") if k in art.extra}
            if art.extra.get("unsupported"):
                return self._finish(case, result, "unsupported", reason=art.error, error=art.error, stage="export", culprit="converter")
            if art.culprit == "environment" and art.stage == "validate":
                # A valid artifact this installation cannot run (Select TF ops without a Flex delegate):
                # unsupported here, with the reason, not an error of the converter or the runtime.
                return self._finish(case, result, "unsupported", reason=f"{case.format}: {art.error}", error=f"{case.format}: {art.error}",
                                    stage="validate", culprit="environment", evidence=evidence)
            return self._finish(case, result, "error", error=f"export to {case.format} failed: {art.error}", stage=art.stage,
                                culprit=art.culprit, evidence=evidence, summary=art.error_summary)

        result.stage = "reference"
        ref = self._reference(fixture, case.batch)
        if ref.error is not None:
            return self._finish(case, result, "error", error=f"reference ({fixture.reference[0]} on {fixture.reference[1]}) failed: {ref.error}",
                                stage=ref.stage, culprit=ref.culprit, evidence=dict(ref.evidence))
        assert ref.inputs is not None and ref.outputs is not None
        if ref.variant:
            result.inputs_variant = ref.variant
        if ref.evidence.get("probe_rejected"):
            result.evidence = {**result.evidence, "probe_rejected": ref.evidence["probe_rejected"]}

        try:
            outputs, timing, peak_rss = self._execute(case, art, ref.inputs)
        except _Staged as staged:
            e, stage = staged.error, staged.stage
            if isinstance(e, RpcError):
                status = "unsupported" if e.kind == "unsupported" else "error"
                culprit = "harness" if e.kind in ("bad_input", "bad_request") else "runtime"
                evidence = {"kind": e.kind, **self._blocked(e)}
                if "blocked" in evidence or (e.kind == "load_failed" and CHECKPOINT_MISMATCH in str(e)):
                    # The sandbox or a containment check stopped what the model tried, or a checkpoint
                    # does not fit the model's code (a variable missing, unexpected or of another shape).
                    culprit = "model"
                takes = (self.pool.info.get(self._worker_key(case)) or {}).get("formats")
                if e.kind == "unsupported" and takes is not None and case.format not in takes:
                    # The runtime table promised this format and the worker refuses it: a drift in our
                    # own tables, never an acceptable "unsupported" (which would only skip).
                    status, culprit = "error", "harness"
                    e = RpcError(e.kind, f"the runtime table lists format {case.format} for {case.runtime}, but its worker takes only "
                                         f"{takes}: {e}")
                return self._finish(case, result, status, error=f"{e.kind}: {e}", stage=stage, culprit=culprit, evidence=evidence)
            status = "timeout" if isinstance(e, WorkerTimeout) else "crash"
            culprit = "environment" if "could not start" in str(e) else "runtime"
            tail = getattr(e, "stderr_tail", "")
            # The line of its stderr that says why it died, in the cause line and the page's evidence.
            died_of = crash_cause(tail)
            if died_of and MISSING_PIECE.search(died_of):
                culprit = "environment"  # a module or library this installation lacks, not the runtime's fault
            return self._finish(case, result, status, error=str(e), stderr=tail, stage=stage, culprit=culprit,
                                evidence={"cause": died_of} if died_of else None, summary=one_line(f"{e}: {died_of}") if died_of else None)
        result.stage = "compare"
        result.timing = timing
        result.peak_rss_bytes = peak_rss
        if fixture.flops and result.timing.p50_ms:
            result.flops = fixture.flops(case.batch)
            result.gflops = result.flops / (result.timing.p50_ms * 1e6)
        # Digests of the exact output bytes: two runs can tell "bit-identical" from "changed".
        result.output_digest = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] for k, v in outputs.items()}
        if sum(v.nbytes for v in outputs.values()) <= KEPT_OUTPUT_BYTES:
            self._outputs[case.id] = outputs
            while len(self._outputs) > 64:  # callers that never take them (fuzzing) hold a few at most
                self._outputs.pop(next(iter(self._outputs)))
        libs = (self.pool.info.get(self._worker_key(case)) or {}).get("versions")
        result.versions = {"runtime": {k: str(v) for k, v in libs.items()} if isinstance(libs, dict) else {},
                           "converters": dict(art.converters or {})}

        reference = ref.outputs
        # The precision the runtime computes in, where its worker says (TF.js WebGL: float16 textures).
        info = self.pool.info.get(self._worker_key(case)) or {}
        precision = info.get("precision") or (info.get("settings") or {}).get("precision") or check_runtime(case.runtime).precision
        if check_runtime(case.runtime).emulated:
            # Recorded, and marked: an emulator's timings are never compared with native ones.
            result.emulated = (info.get("settings") or {}).get("emulator") or "emulated"
        tolerances = {name: fixture.tolerance(format_class(case.format, precision), name) for name in reference}
        oracle = fixture.oracle(ref.inputs) if fixture.oracle else None
        if oracle is not None:
            # A float64 value beyond the output dtype's range is, correctly rounded, ±inf.
            oracle = {k: np.where(np.abs(v) > np.finfo(reference[k].dtype).max, np.copysign(np.inf, v), v)
                      if k in reference and reference[k].dtype.kind == "f" and np.asarray(v).dtype == np.float64 else v
                      for k, v in oracle.items()}
        if fixture.golden is not None and not ref.variant:
            # The user's golden outputs for the user's inputs: every case is judged against them.
            baseline, against = "golden", {k: np.asarray(v) for k, v in fixture.golden.items()}
        elif (case.format, case.runtime) == fixture.reference:
            # The reference judged against itself proves nothing: judge it against the oracle.
            baseline, against = ("oracle", oracle) if oracle is not None else ("self", reference)
        else:
            baseline, against = "reference", reference
        dtypes = {k: v.dtype for k, v in reference.items()}
        judgement = comparator.judge(against, outputs, tolerances, fixture.classifier_outputs, dtypes=dtypes)
        result.baseline = baseline
        result.metrics = judgement.metrics
        result.tolerance = {name: {"class": format_class(case.format, precision), "rule": comparator.describe(tol), **{k: v for k, v in asdict(tol).items() if v is not None}}
                               for name, tol in tolerances.items()}
        if oracle is not None and baseline != "oracle":
            result.oracle_metrics = comparator.judge(oracle, outputs, tolerances, fixture.classifier_outputs).metrics
        if not judgement.passed:
            culprit = "converter" if case.format.partition("@")[0] in QUANTISED else "runtime"
            error, evidence = "; ".join(judgement.reasons), {}
            if oracle is not None and baseline == "reference" and comparator.judge(oracle, outputs, tolerances, fixture.classifier_outputs).passed:
                # This output agrees with the float64 oracle and the TF reference does not: TF is the outlier.
                error += " (this output agrees with the float64 oracle; the TF reference is the outlier)"
                evidence["agrees_with_oracle"] = True
            return self._finish(case, result, "fail", error=error, stage="compare", culprit=culprit, evidence=evidence or None)
        why = comparator.degenerate(reference, ref.others, tolerances) if fixture.check_signal else {}
        if why:
            reason = "the comparison could not have failed: " + "; ".join(f"{k}: {v}" for k, v in why.items())
            return self._finish(case, result, "inconclusive", reason=reason, error=reason, stage="reference", culprit="model",
                                evidence={"degenerate": why})
        return self._finish(case, result, "pass")

    def measure(self, case: Case) -> Timing:
        """One more round of timing for a case that has run (same artifact, same inputs, same worker
        setting). Raises on a worker failure."""
        fixture = self.fixtures[case.fixture]
        ref = self._reference(fixture, case.batch)
        if ref.inputs is None:
            raise HarnessError(f"{case.id} has no reference inputs to measure with")
        try:
            return self._execute(case, self.artifact(fixture, case.format), ref.inputs)[1]
        except _Staged as staged:
            raise staged.error from None

    def _finish(self, case: Case, result: CaseResult, status: str, reason: str | None = None, error: str | None = None,
                stderr: str | None = None, stage: str | None = None, culprit: str | None = None, evidence: dict | None = None,
                summary: str | None = None) -> CaseResult:
        ref = self._references.get((case.fixture, case.batch))
        deviation = next((d for d in self.deviations if d.matches(case) and d.holds(ref.settings if ref else None)), None)
        if deviation is not None and status not in ("skip", "inconclusive"):
            if deviation.expects(status, error):
                status, reason = "xfail", deviation.reason
            elif status == "pass":
                status, reason = "xpass", f"listed as a known deviation ({deviation.reason}) but passed"
                stage, culprit = "compare", "harness"
        result.status = status
        result.reason = reason
        result.error = error
        result.stage = None if status == "pass" else stage
        result.culprit = None if status == "pass" else culprit
        result.summary = None if status == "pass" else (summary or one_line(error or reason or status))
        if evidence:
            result.evidence = {**result.evidence, **evidence}
        if stderr:
            result.stderr_tail = stderr
        return result

    # --- the reference -------------------------------------------------------------------------
    def forget_reference(self, fixture: str) -> None:
        """Drop a fixture's cached references (harness fuzz pins new inputs)."""
        self._references = {k: v for k, v in self._references.items() if k[0] != fixture}

    def reference_outputs(self, fixture: str, batch: int) -> dict[str, np.ndarray] | None:
        ref = self._references.get((fixture, batch))
        return None if ref is None else ref.outputs

    def reference_inputs(self, fixture: Fixture, batch: int) -> dict[str, np.ndarray] | None:
        """The inputs every case of the fixture at this batch gets (the reference computed first if
        needed); None when the reference failed. The node search (harness/node_search.py) feeds them."""
        return self._reference(fixture, batch).inputs

    def _reference(self, fixture: Fixture, batch: int) -> Reference:
        key = (fixture.name, batch)
        if key not in self._references:
            self._references[key] = self._compute_reference(fixture, batch)
        return self._references[key]

    def _compute_reference(self, fixture: Fixture, batch: int) -> Reference:
        ref_format, ref_runtime = fixture.reference  # TF on the SavedModel; a given .onnx/.tflite/TF.js model: its own runtime
        art = self.artifact(fixture, ref_format)
        if art.status != "ok":
            return Reference(error=f"export to {ref_format} failed: {art.error}", stage=art.stage, culprit=art.culprit)
        avail = self.availability(ref_runtime)
        if not avail.ok:
            return Reference(error=f"runtime {ref_runtime} unavailable: {avail.reason} (fix: {avail.fix})", culprit="environment")
        case = Case(fixture.name, ref_format, ref_runtime, "cpu", batch)
        tolerances = {name: fixture.tolerance(format_class(ref_format), name) for name in fixture.outputs}
        ref = Reference()
        # The user's own inputs (check --inputs) are the inputs: never swapped for the second distribution,
        # which would also drop their golden outputs from the judgement.
        for variant in (0, 1) if fixture.generate_alt and fixture.given_inputs is None else (0,):
            inputs = fixture.make_inputs(batch, variant=variant)
            rejected: str | None = None
            try:
                outputs = self._reference_call(case, art, inputs)
                others: list[dict[str, np.ndarray]] = []
                for seed in range(1, OTHER_INPUT_SETS + 1):
                    probe = fixture.make_inputs(batch, seed=seed, variant=variant)
                    try:
                        others.append(self._reference_call(case, art, probe))
                    except _Staged as staged:
                        if not isinstance(staged.error, RpcError) or staged.error.kind not in ("run_failed", "bad_input"):
                            raise
                        # The model refused an input set the harness drew to probe it (an id beyond
                        # its vocabulary): the harness's probe, never a verdict against a runtime.
                        rejected = f"{staged.error.kind}: {staged.error}"
                        break
                    # More input sets only while some output looks input-independent (a label can repeat by chance).
                    if not any("identical for" in why for why in comparator.degenerate(outputs, others, tolerances).values()):
                        break
            except _Staged as staged:
                e = staged.error
                kind = e.kind if isinstance(e, RpcError) else ("timeout" if isinstance(e, WorkerTimeout) else "crash")
                evidence = {"kind": kind, "attempts": 1 if isinstance(e, RpcError) else 2}
                if isinstance(e, (WorkerCrash, WorkerTimeout)) and e.stderr_tail:
                    evidence["stderr_tail"] = e.stderr_tail
                    why = crash_cause(e.stderr_tail)
                    if why:
                        evidence["cause"] = why
                        return Reference(error=f"{kind}: {e}: {why}", evidence=evidence)
                if isinstance(e, RpcError) and self._blocked(e):
                    return Reference(error=f"{kind}: {e}", stage=staged.stage, culprit="model", evidence={**evidence, **self._blocked(e)})
                return Reference(error=f"{kind}: {e}", evidence=evidence)
            ref = Reference(inputs, outputs, others, variant, evidence={"probe_rejected": rejected} if rejected else {},
                            settings=(self.pool.info.get(self._worker_key(case)) or {}).get("settings") or {})
            if not comparator.degenerate(outputs, others, tolerances):
                break
        return ref

    def _reference_call(self, case: Case, art: Artifact, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One reference computation; a crash or timeout is retried once on a fresh worker."""
        try:
            return self._execute(case, art, inputs, iterations=0)[0]
        except _Staged as staged:
            if not isinstance(staged.error, (WorkerCrash, WorkerTimeout)):
                raise
        return self._execute(case, art, inputs, iterations=0)[0]  # _execute dropped the dead worker

    def _blocked(self, e: RpcError) -> dict:
        """What the sandbox or a worker's containment check stopped, as evidence; empty when neither did."""
        from harness.sandbox import blocked

        what = blocked(str(e), self.pool.sandbox.active)
        return {} if what is None else {"blocked": what, "sandbox": self.pool.sandbox.describe()}

    def _threads(self, case: Case) -> int:
        return case.threads or self.options.threads

    def _worker_key(self, case: Case) -> str:
        # Thread settings can be process-wide (TensorFlow's are fixed at first use): one worker per setting.
        threads = self._threads(case)
        key = case.runtime if not threads else f"{case.runtime}#t{threads}"
        return key + (f"~{case.variant}" if case.variant else "")

    def _load(self, case: Case, art: Artifact) -> _Loaded:
        wkey = self._worker_key(case)
        worker = self.pool.get(case.runtime, wkey)
        generation = self.pool.starts[wkey]
        for stale in [k for k, v in self._loaded.items() if k[0] == wkey and v.generation != generation]:
            del self._loaded[stale]  # the worker that held it was replaced
        key = (wkey, art.key)
        if key in self._loaded:
            return self._loaded[key]
        # Keep at most a few models per worker: the current artifact and the reference.
        mine = [k for k in self._loaded if k[0] == wkey]
        for old in mine[:-1] if len(mine) >= 2 else []:
            try:
                worker.call("unload", {"handle": self._loaded.pop(old).handle}, timeout=self.options.run_timeout_s)
            except RpcError:
                pass
        reply = worker.load(
            {"artifact": str(art.dir), "format": art.format, "signature": art.signature, "device": case.device, "threads": self._threads(case)},
            timeout=self.options.load_timeout_s,
        )
        loaded = _Loaded(reply.handle, reply.load_ms, generation)
        self._loaded[key] = loaded
        return loaded

    def _input_file(self, case: Case, spec, value: np.ndarray) -> str:
        """Inputs depend only on their bytes and quantisation: each is written once, shared by runtimes."""
        if spec.scale is not None:
            value = comparator.quantize(value, spec.scale, spec.zero_point or 0, spec.dtype)
        key = (case.fixture, case.batch, spec.name, value.dtype.str, hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest())
        if key not in self._input_files:
            in_dir = self.scratch / "inputs"
            in_dir.mkdir(parents=True, exist_ok=True)
            path = in_dir / f"{case.fixture}-b{case.batch}-{len(self._input_files)}.npy"
            np.save(path, value, allow_pickle=False)
            self._input_files[key] = str(path)
        return self._input_files[key]

    def _execute(self, case: Case, art: Artifact, inputs: dict[str, np.ndarray],
                 iterations: int | None = None) -> tuple[dict[str, np.ndarray], Timing, int | None]:
        """Quantise inputs as the artifact says, run in the worker, read and dequantise outputs. A
        failed worker call is raised as _Staged (load or run)."""
        out_dir = self.scratch / case.id / "out"
        paths = {spec.name: self._input_file(case, spec, inputs[spec.name]) for spec in art.inputs}
        wkey = self._worker_key(case)
        stage = "load"
        try:
            loaded = self._load(case, art)
            stage = "run"
            worker = self.pool.get(case.runtime, wkey)
            warmup = self.options.warmup if iterations is None else 0
            count = self.options.iterations if iterations is None else iterations
            first_ns = None
            if iterations is None and self.options.min_time_s > 0:
                # Calibrate: a short run (its first call is the cold one), then enough iterations to
                # measure for at least min_time_s.
                probe = worker.run({"handle": loaded.handle, "inputs": paths, "output_dir": str(out_dir),
                                    "warmup": 0, "iterations": 3}, timeout=self.options.run_timeout_s)
                first_ns = probe.first_ns
                per_call = max(min(probe.samples_ns, default=0) / 1e9, 1e-7)
                count = max(count, min(self.options.max_iterations, math.ceil(self.options.min_time_s / per_call)))
                count = min(count, max(3, int(self.options.max_time_s / per_call)))
                # Warm up for half the measuring time too (at most 300 calls): ONNX Runtime keeps getting
                # faster for a few hundred calls, and a fast case's few warm-up calls take microseconds.
                warmup = max(warmup, min(300, math.ceil(0.5 * self.options.min_time_s / per_call)))
            reply = worker.run(
                {"handle": loaded.handle, "inputs": paths, "output_dir": str(out_dir), "warmup": warmup, "iterations": count,
                 **({"delay_us": self.options.delay_us} if self._delayed(case) and iterations is None else {})},
                timeout=self.options.run_timeout_s,
            )
            if first_ns is not None:
                reply = reply.with_first(first_ns)
        except (WorkerCrash, WorkerTimeout) as e:
            self._forget(wkey)
            raise _Staged(stage, e) from e
        except RpcError as e:
            raise _Staged(stage, e) from e
        specs = {spec.name: spec for spec in art.outputs}
        outputs = {}
        # Every output the worker returned, declared or not: an extra output is judged (it fails).
        for name, path in reply.outputs.items():
            value = np.load(path, allow_pickle=False)
            spec = specs.get(name)
            if spec is not None and spec.scale is not None:
                value = comparator.dequantize(value, spec.scale, spec.zero_point or 0)
            outputs[name] = value
        # The timing record, made once from the worker's answer: the raw samples and what they give.
        timing = Timing(load_ms=loaded.load_ms, first_ms=reply.first_ns / 1e6, **latency_stats(reply.samples_ns),
                        samples_ms=[s / 1e6 for s in reply.samples_ns], iterations=len(reply.samples_ns), warmup=warmup,
                        threads=self._threads(case))
        return outputs, timing, reply.peak_rss_bytes

    def _delayed(self, case: Case) -> bool:
        return bool(self.options.delay_us) and self.options.delay_case in ("", case.id)

    def _forget(self, wkey: str) -> None:
        self.pool.discard(wkey)
        for key in [k for k in self._loaded if k[0] == wkey]:
            del self._loaded[key]
