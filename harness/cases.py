"""The case matrix and the engine that runs a case: artifact → worker → comparator → verdict.

A case is fixture × format × runtime × device × batch. The engine exports (or finds) artifacts, runs
the reference (the fixture's SavedModel in the `tf` runtime), runs the case in its runtime's worker,
judges the outputs and applies the known deviations. Data only goes one way: the engine hands arrays
to the comparator and results to the store; it never compares or formats anything itself.
"""

from __future__ import annotations

import fnmatch
import math
import re
import hashlib
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import compare
from harness.artifact import Artifact
from harness.bench import latency_stats
from harness.errors import HarnessError
from harness.export import Exporter, check_format, formats_for
from harness.fixtures import Fixture, all_fixtures, get_fixture
from harness.runners import RUNTIMES, RpcError, WorkerCrash, WorkerPool, WorkerTimeout, check_runtime

STATUSES = ("pass", "fail", "xfail", "xpass", "unsupported", "error", "crash", "timeout", "skip")
BAD_STATUSES = ("fail", "error", "crash", "timeout", "xpass")
REFERENCE = ("savedmodel", "tf")


@dataclass(frozen=True)
class Case:
    fixture: str
    format: str
    runtime: str
    device: str = "cpu"
    batch: int = 1
    threads: int = 0  # 0: the runtime's default; benchmarks set 1 and all cores

    @property
    def id(self) -> str:
        base = f"{self.fixture}-{self.format}-{self.runtime}-{self.device}-b{self.batch}"
        return base + (f"-t{self.threads}" if self.threads else "")


@dataclass
class Selection:
    fixtures: list[str] | None = None
    formats: list[str] | None = None
    runtimes: list[str] | None = None
    batches: list[int] | None = None
    device: str = "cpu"
    threads: list[int] | None = None
    include_bench_only: bool = False  # fixtures that exist for benchmark sweeps (large GEMMs)

    def validate(self) -> None:
        for name in self.fixtures or []:
            get_fixture(name)
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


def matrix(selection: Selection, fixtures: dict[str, Fixture] | None = None) -> list[Case]:
    """Every case the selection names, in a stable order (fixture, format, runtime, batch)."""
    selection.validate()
    fixtures = fixtures if fixtures is not None else all_fixtures()
    cases = []
    for fname, fx in fixtures.items():
        if selection.fixtures and fname not in selection.fixtures:
            continue
        if fx.bench_only and not (selection.include_bench_only or (selection.fixtures and fname in selection.fixtures)):
            continue
        for fmt in formats_for(fx):
            if selection.formats and fmt not in selection.formats:
                continue
            for rname, spec in RUNTIMES.items():
                if fmt not in spec.formats or (selection.runtimes and rname not in selection.runtimes):
                    continue
                for batch in selection.batches or fx.batches:
                    if not fx.batchable and batch != 1:
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

    def expects(self, status: str, error: str | None) -> bool:
        return status in self.status and (self.match is None or self.match in (error or ""))

    def matches(self, case: Case) -> bool:
        return (
            fnmatch.fnmatchcase(case.fixture, self.fixture)
            and fnmatch.fnmatchcase(case.format, self.format)
            and fnmatch.fnmatchcase(case.runtime, self.runtime)
            and fnmatch.fnmatchcase(str(case.batch), self.batch)
        )


def load_deviations(path: Path | None = None) -> list[Deviation]:
    import fixtures as pkg

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
                    batch=str(d.get("batch", "*")), match=d.get("match"),
                )
            )
        except KeyError as e:
            raise HarnessError(f"known deviation #{i + 1} in {path} lacks {e.args[0]!r}: expected fixture, format, runtime, status, reason") from None
    return out


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


@dataclass
class _Loaded:
    handle: str
    load_ms: float
    generation: int  # which start of the runtime's worker holds the handle


class Engine:
    """Runs cases. Reuses one worker per runtime and one loaded model per artifact and runtime, so a
    second batch of the same artifact costs only its inference."""

    def __init__(self, exporter: Exporter, scratch: Path, options: Options | None = None, fixtures: dict[str, Fixture] | None = None, deviations: list[Deviation] | None = None):
        self.exporter = exporter
        self.scratch = scratch.resolve()  # absolute: workers (and containers) have other working folders
        self.options = options or Options()
        self.fixtures = fixtures if fixtures is not None else all_fixtures()
        self.deviations = deviations if deviations is not None else load_deviations()
        from harness.runners.table import WorkerContext

        self.pool = WorkerPool(WorkerContext(exporter.root, scratch))
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._references: dict[tuple[str, int], dict[str, np.ndarray] | str] = {}
        self._artifacts: dict[tuple[str, str], Artifact] = {}
        self._input_files: dict[tuple, str] = {}
        self._availability = {name: spec.availability() for name, spec in RUNTIMES.items()}

    def close(self) -> None:
        self.pool.close()
        if not self.options.keep_tensors:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def runtime_versions(self) -> dict:
        # Worker keys are the runtime, or runtime@t<threads> for a thread setting (go-tfgo@docker is a runtime).
        info = {re.sub(r"@t\d+$", "", key): value for key, value in self.pool.info.items()}
        return {
            name: (info.get(name) or {"available": a.ok, "version": a.version, "reason": a.reason})
            for name, a in self._availability.items()
        }

    def artifact(self, fixture: Fixture, fmt: str) -> Artifact:
        key = (fixture.name, fmt)
        if key not in self._artifacts:
            self._artifacts[key] = self.exporter.get(fixture, fmt)
        return self._artifacts[key]

    # --- running -------------------------------------------------------------------------------
    def run_case(self, case: Case) -> dict:
        """The case's result; never raises for a problem of the case itself (a bug in the harness
        becomes an `error` result with its message, so the run goes on)."""
        try:
            return self._run_case(case)
        except HarnessError as e:
            return self._finish(case, self._blank(case), "error", error=str(e))
        except Exception as e:
            import traceback

            return self._finish(case, self._blank(case), "error", error=f"internal error: {type(e).__name__}: {e}",
                                stderr=traceback.format_exc(limit=6))

    @staticmethod
    def _blank(case: Case) -> dict:
        return {
            "id": case.id, "fixture": case.fixture, "format": case.format, "runtime": case.runtime,
            "device": case.device, "batch": case.batch, "threads": case.threads, "status": None, "reason": None, "baseline": None,
            "metrics": {}, "oracle_metrics": {}, "timing": {}, "peak_rss_bytes": None, "error": None,
            "artifact": None,
        }

    def _run_case(self, case: Case) -> dict:
        fixture = self.fixtures[case.fixture]
        result = self._blank(case)
        avail = self._availability[case.runtime]
        if not avail.ok:
            return self._finish(case, result, "skip", reason=f"runtime {case.runtime} unavailable: {avail.reason} (fix: {avail.fix})")
        art = self.artifact(fixture, case.format)
        result["artifact"] = {"key": art.key, "dir": str(art.dir), "export_s": art.export_s}
        if art.status != "ok":
            return self._finish(case, result, "error", error=f"export to {case.format} failed: {art.error}")

        inputs = fixture.make_inputs(case.batch)
        reference = self._reference(fixture, case.batch, inputs)
        if isinstance(reference, str):
            return self._finish(case, result, "error", error=f"reference (savedmodel on tf) failed: {reference}")

        try:
            outputs, raw = self._execute(case, art, inputs)
        except RpcError as e:
            status = "unsupported" if e.kind == "unsupported" else "error"
            return self._finish(case, result, status, error=f"{e.kind}: {e}")
        except WorkerTimeout as e:
            return self._finish(case, result, "timeout", error=str(e), stderr=e.stderr_tail)
        except WorkerCrash as e:
            return self._finish(case, result, "crash", error=str(e), stderr=e.stderr_tail)
        result["timing"] = raw["timing"]
        result["peak_rss_bytes"] = raw["peak_rss_bytes"]
        if fixture.flops and raw["timing"].get("p50_ms"):
            result["flops"] = fixture.flops(case.batch)
            result["gflops"] = result["flops"] / (raw["timing"]["p50_ms"] * 1e6)
        # Digests of the exact output bytes: two runs can tell "bit-identical" from "changed".
        result["output_digest"] = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] for k, v in outputs.items()}

        tolerances = {name: fixture.tolerance(case.format, name) for name in reference}
        oracle = fixture.oracle(inputs) if fixture.oracle else None
        if (case.format, case.runtime) == REFERENCE:
            # The reference judged against itself proves nothing: judge it against the oracle.
            baseline, against = ("oracle", oracle) if oracle is not None else ("self", reference)
        else:
            baseline, against = "reference", reference
        judgement = compare.judge(against, outputs, tolerances, fixture.classifier_outputs)
        result["baseline"] = baseline
        result["metrics"] = judgement.metrics
        if oracle is not None and baseline != "oracle":
            result["oracle_metrics"] = compare.judge(oracle, outputs, tolerances, fixture.classifier_outputs).metrics
        if judgement.passed:
            return self._finish(case, result, "pass")
        return self._finish(case, result, "fail", error="; ".join(judgement.reasons))

    def _finish(self, case: Case, result: dict, status: str, reason: str | None = None, error: str | None = None, stderr: str | None = None) -> dict:
        deviation = next((d for d in self.deviations if d.matches(case)), None)
        if deviation is not None and status not in ("skip",):
            if deviation.expects(status, error):
                status, reason = "xfail", deviation.reason
            elif status == "pass":
                status, reason = "xpass", f"listed as a known deviation ({deviation.reason}) but passed"
        result["status"] = status
        result["reason"] = reason
        result["error"] = error
        if stderr:
            result["stderr_tail"] = stderr
        return result

    def _reference(self, fixture: Fixture, batch: int, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | str:
        key = (fixture.name, batch)
        if key not in self._references:
            case = Case(fixture.name, REFERENCE[0], REFERENCE[1], "cpu", batch)
            art = self.artifact(fixture, REFERENCE[0])
            if art.status != "ok":
                self._references[key] = f"export to savedmodel failed: {art.error}"
            elif not self._availability[REFERENCE[1]].ok:
                self._references[key] = f"runtime tf unavailable: {self._availability['tf'].reason}"
            else:
                try:
                    self._references[key] = self._execute(case, art, inputs, iterations=0)[0]
                except (RpcError, WorkerCrash, WorkerTimeout) as e:
                    self._references[key] = f"{type(e).__name__}: {e}"
        return self._references[key]

    def _threads(self, case: Case) -> int:
        return case.threads or self.options.threads

    def _worker_key(self, case: Case) -> str:
        # Thread settings can be process-wide (TensorFlow's are fixed at first use): one worker per setting.
        threads = self._threads(case)
        return case.runtime if not threads else f"{case.runtime}@t{threads}"

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
        reply = worker.call(
            "load",
            {"artifact": str(art.dir), "format": art.format, "signature": art.signature, "device": case.device, "threads": self._threads(case)},
            timeout=self.options.load_timeout_s,
        )
        loaded = _Loaded(reply["handle"], reply["load_ns"] / 1e6, generation)
        self._loaded[key] = loaded
        return loaded

    def _execute(self, case: Case, art: Artifact, inputs: dict[str, np.ndarray], iterations: int | None = None):
        """Quantise inputs as the artifact says, run in the worker, read and dequantise outputs."""
        out_dir = self.scratch / case.id / "out"
        paths = {}
        for spec in art.inputs:
            # Inputs depend only on fixture, batch and quantisation: written once, shared by runtimes.
            key = (case.fixture, case.batch, spec.name, spec.dtype, spec.scale, spec.zero_point)
            if key not in self._input_files:
                value = inputs[spec.name]
                if spec.scale is not None:
                    value = compare.quantize(value, spec.scale, spec.zero_point or 0, spec.dtype)
                in_dir = self.scratch / "inputs"
                in_dir.mkdir(parents=True, exist_ok=True)
                path = in_dir / f"{case.fixture}-b{case.batch}-{len(self._input_files)}.npy"
                np.save(path, value, allow_pickle=False)
                self._input_files[key] = str(path)
            paths[spec.name] = self._input_files[key]
        wkey = self._worker_key(case)
        try:
            loaded = self._load(case, art)
            worker = self.pool.get(case.runtime, wkey)
            warmup = self.options.warmup if iterations is None else 0
            count = self.options.iterations if iterations is None else iterations
            first_ns = None
            if iterations is None and self.options.min_time_s > 0:
                # Calibrate: a short run (its first call is the cold one), then enough iterations to
                # measure for at least min_time_s.
                probe = worker.call("run", {"handle": loaded.handle, "inputs": paths, "output_dir": str(out_dir),
                                            "warmup": 0, "iterations": 3}, timeout=self.options.run_timeout_s)
                first_ns = probe["first_ns"]
                per_call = max(min(probe["samples_ns"]) / 1e9, 1e-7)
                count = max(count, min(self.options.max_iterations, math.ceil(self.options.min_time_s / per_call)))
                count = min(count, max(3, int(self.options.max_time_s / per_call)))
                # Warm up for half the measuring time too (at most 300 calls): ONNX Runtime keeps getting
                # faster for a few hundred calls, and a fast case's few warm-up calls take microseconds.
                warmup = max(warmup, min(300, math.ceil(0.5 * self.options.min_time_s / per_call)))
            reply = worker.call(
                "run",
                {"handle": loaded.handle, "inputs": paths, "output_dir": str(out_dir), "warmup": warmup, "iterations": count},
                timeout=self.options.run_timeout_s,
            )
            if first_ns is not None:
                reply["first_ns"] = first_ns
        except (WorkerCrash, WorkerTimeout):
            self._forget(wkey)
            raise
        outputs = {}
        for spec in art.outputs:
            value = np.load(reply["outputs"][spec.name], allow_pickle=False)
            if spec.scale is not None:
                value = compare.dequantize(value, spec.scale, spec.zero_point or 0)
            outputs[spec.name] = value
        timing = {"load_ms": loaded.load_ms, "first_ms": reply["first_ns"] / 1e6, **latency_stats(reply["samples_ns"]),
                  "samples_ms": [s / 1e6 for s in reply["samples_ns"]], "iterations": len(reply["samples_ns"]),
                  "warmup": warmup, "threads": self._threads(case)}
        return outputs, {"timing": timing, "peak_rss_bytes": reply.get("peak_rss_bytes")}

    def _forget(self, wkey: str) -> None:
        self.pool.discard(wkey)
        for key in [k for k in self._loaded if k[0] == wkey]:
            del self._loaded[key]


def summarize(results: list[dict]) -> dict:
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"cases": len(results), "counts": {k: v for k, v in counts.items() if v}, "ok": not any(counts[s] for s in BAD_STATUSES)}


__all__ = ["BAD_STATUSES", "Case", "Deviation", "Engine", "Options", "Selection", "STATUSES", "load_deviations", "matrix", "summarize"]
