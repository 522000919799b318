"""Benchmarks of the harness itself (figures, never tests):

- fidelity: the harness's p50 against a plain in-process timing loop over the same artifact in a bare
  Python process, side by side, alternating, for mnist_cnn at batch 1 on litert and ort;
- overhead: per-case wall time beyond the timed iterations, with workers warm and models loaded;
- gate: an A/A comparison of two runs of the same build flags nothing; a deliberately slowed runtime
  (one thread instead of all cores) is flagged.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.cases import Case
from harness.engine import Options
from harness.fixtures import all_fixtures, get_fixture
from harness.orchestrator import Orchestrator
from harness.records import CaseResult

# The bare loop: the same library calls the workers make, nothing else.
BARE = r"""
import json, sys, time
import numpy as np
kind, model, inputs, iterations, warmup = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
feeds = {k: np.load(v) for k, v in inputs.items()}
if kind == "litert":
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path=model).get_signature_runner("serving_default")
    call = lambda: runner(**feeds)
else:
    import onnxruntime as ort
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    call = lambda: session.run(names, feeds)
for _ in range(warmup):
    call()
samples = []
for _ in range(iterations):
    t = time.perf_counter_ns(); call(); samples.append(time.perf_counter_ns() - t)
print(json.dumps(samples))
"""


def fidelity(rounds: int = 5, iterations: int = 200, warmup: int = 300) -> dict:
    """Both sides get the same warm-up, long enough for steady state: ONNX Runtime keeps speeding up
    for a few hundred calls (measured: a bare loop after 5 warm-up calls is ~20% slower than after
    300), and a reused worker is warmer than a fresh process."""
    fx = get_fixture("mnist_cnn")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        orch = _orchestrator(Path(tmp) / "scratch", Options(warmup=warmup, iterations=iterations))
        try:
            for fmt, runtime in (("tflite", "litert"), ("onnx18", "ort")):
                art = orch.exporter.get(fx, fmt)
                inputs = {}
                for spec in art.inputs:
                    path = Path(tmp) / f"{spec.name}.npy"
                    import numpy as np

                    np.save(path, fx.make_inputs(1)[spec.name])
                    inputs[spec.name] = str(path)
                harness_p50, bare_p50 = [], []
                case = Case("mnist_cnn", fmt, runtime, batch=1)
                _timed(orch.run_case(case))  # warm the worker and load the model
                for _ in range(rounds):  # alternate, so drift on a shared machine hits both alike
                    harness_p50.append(_timed(orch.run_case(case)).p50_ms)
                    proc = subprocess.run([sys.executable, "-c", BARE, runtime, str(art.model_path), json.dumps(inputs), str(iterations), str(warmup)],
                                          capture_output=True, text=True, check=True)
                    bare_p50.append(statistics.median(json.loads(proc.stdout)) / 1e6)
                h, b = statistics.median(harness_p50), statistics.median(bare_p50)
                out[runtime] = {"harness_p50_ms": h, "bare_p50_ms": b, "ratio": h / b, "rounds": rounds, "iterations": iterations,
                                "warmup": warmup, "harness_rounds_ms": harness_p50, "bare_rounds_ms": bare_p50}
        finally:
            orch.close()
    return out


def overhead(cases: int = 20) -> dict:
    """Wall time of a case minus the time inside its timed calls, workers warm, model loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        orch = _orchestrator(Path(tmp), Options(warmup=0, iterations=10))
        try:
            values = {}
            for fmt, runtime in (("tflite", "litert"), ("onnx18", "ort"), ("savedmodel", "tf")):
                case = Case("mnist_cnn", fmt, runtime, batch=1)
                _timed(orch.run_case(case))
                per = []
                for _ in range(cases):
                    t = time.perf_counter()
                    timing = _timed(orch.run_case(case))
                    wall = (time.perf_counter() - t) * 1000
                    per.append(wall - (timing.first_ms or 0.0) - sum(timing.samples_ms or []))
                values[runtime] = {"median_overhead_ms": statistics.median(per), "max_overhead_ms": max(per)}
            return values
        finally:
            orch.close()


def _orchestrator(scratch: Path, options: Options) -> Orchestrator:
    """The run loop every command uses, without a run folder: the self-tests time what users' runs time."""
    return Orchestrator([], dict(all_fixtures()), options, None, {"command": "selftest"}, deviations=[], scratch=scratch)


def _timed(result: CaseResult):
    """The case's timing; a case that did not run is the self-test's failure, with the case's own words."""
    if result.timing is None or result.timing.p50_ms is None:
        raise RuntimeError(f"{result.id} did not run ({result.status}): {result.error or result.reason}")
    return result.timing


def startup(repeats: int = 5) -> dict:
    """Seconds from starting a worker to its `info` answer, per runtime (median of `repeats`): the
    container start cost is go-tfgo@docker's minus go-tfgo's."""
    from harness.runners import RUNTIMES, WorkerPool

    out = {}
    for name, spec in RUNTIMES.items():
        if not spec.availability().ok:
            continue
        times = []
        for _ in range(repeats):
            with WorkerPool() as pool:
                t = time.perf_counter()
                pool.get(name)
                times.append(time.perf_counter() - t)
        out[name] = {"median_start_s": statistics.median(times), "min_start_s": min(times)}
    return out


def gate(reports: Path, rounds: int = 5) -> dict:
    """A/A: the same build benchmarked twice must flag nothing; a real slowdown must be flagged: the
    `gemm272` fixture does 1.2x the work of `gemm256` (272^3 / 256^3), and its run is relabelled as
    gemm256, so `harness compare` sees the same cases 20% slower. Runs `harness bench` and `harness
    compare` as a user would; `ok` says whether the gate did both."""
    base = [sys.executable, "-m", "harness.cli"]

    def bench(fixture: str) -> str:
        select = ["-f", fixture, "-F", "onnx18,tflite", "-r", "ort,litert", "--no-sweep", "-b", "1", "--threads", "all",
                  "--rounds", str(rounds), "--min-time", "0.1"]
        proc = subprocess.run(base + ["bench", *select, "--reports", str(reports)], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(proc.stderr)
        return os.readlink(reports / "latest").split("/")[-1]

    def compare(a: str, b: str) -> dict:
        """`harness compare` as a user runs it (its exit code), and what it flagged read from the same
        comparison in this process (not from its terminal output, whose lines wrap with the width)."""
        from harness.bench import Gate
        from harness.report.compare import diff_runs
        from harness.store import read_run

        proc = subprocess.run(base + ["compare", a, b, "--reports", str(reports), "--fail-on", "median:10%"], capture_output=True, text=True)
        diff = diff_runs(read_run(reports / "runs" / a), read_run(reports / "runs" / b), Gate.parse("median:10%"))
        flagged = [c for c in diff.cases if c.flagged]
        return {"exit": proc.returncode, "flagged": len(flagged),
                "lines": [f"{c.id}: {c.ratio:.2f}x, p={c.p_value:.3g}" for c in flagged if c.ratio and c.p_value is not None],
                "ratios": {c.id: round(c.ratio, 3) for c in diff.cases if c.ratio},
                "summary": f"{len(flagged)} latency regression(s), {sum(c.verdict_regressed for c in diff.cases)} verdict regression(s), "
                           f"{len(diff.missing)} missing case(s)"}

    a1, a2 = bench("gemm256"), bench("gemm256")
    slow = bench("gemm272")
    _relabel(reports / "runs" / slow, "gemm272", "gemm256")
    aa, slowed = compare(a1, a2), compare(a2, slow)
    return {"aa": aa, "slowed": slowed, "runs": [a1, a2, slow], "ok": aa["flagged"] == 0 and slowed["flagged"] >= 1}


def gate_injected(reports: Path, repeats: int = 3, rounds: int = 5, slowdown: float = 0.25) -> dict:
    """The gate against an injected slowdown, several times: each repeat benchmarks a mid-size case
    (mnist_cnn, ONNX on ort, all cores) twice — an A/A pair that must flag nothing — and once more
    with a busy-wait of `slowdown` × its p50 inside every timed call (`delay_us`), which must be
    flagged. Reports the false-positive rate (A/A pairs flagged) and the false-negative rate
    (slowdowns missed); `ok` only when both are 0."""
    from harness.bench import Gate
    from harness.report.compare import diff_runs
    from harness.store import read_run

    base = [sys.executable, "-m", "harness.cli"]
    select = ["-f", "mnist_cnn", "-F", "onnx18", "-r", "ort", "--no-sweep", "-b", "1", "--threads", "all",
              "--rounds", str(rounds), "--min-time", "0.1"]

    def bench(delay_us: int = 0) -> str:
        proc = subprocess.run(base + ["bench", *select, "--delay-us", str(delay_us), "--reports", str(reports)], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(proc.stderr)
        return os.readlink(reports / "latest").split("/")[-1]

    def flagged(a: str, b: str) -> tuple[int, dict]:
        diff = diff_runs(read_run(reports / "runs" / a), read_run(reports / "runs" / b), Gate.parse("median:10%"))
        return sum(c.flagged for c in diff.cases), {c.id: round(c.ratio, 3) for c in diff.cases if c.ratio}

    aa: list[dict] = []
    slowed: list[dict] = []
    for _ in range(repeats):
        a, b = bench(), bench()
        n, ratios = flagged(a, b)
        aa.append({"runs": [a, b], "flagged": n, "ratios": ratios})
        p50 = [r.timing.p50_ms for r in read_run(reports / "runs" / b).results if r.timing is not None and r.timing.p50_ms]
        delay_us = max(1, round(slowdown * min(p50) * 1000)) if p50 else 1
        c = bench(delay_us)
        n, ratios = flagged(b, c)
        slowed.append({"runs": [b, c], "delay_us": delay_us, "flagged": n, "ratios": ratios})
    fp = sum(x["flagged"] > 0 for x in aa) / repeats
    fn = sum(x["flagged"] == 0 for x in slowed) / repeats
    return {"mode": "injected", "slowdown": 1 + slowdown, "repeats": repeats, "aa": aa, "slowed": slowed,
            "false_positive_rate": fp, "false_negative_rate": fn, "ok": fp == 0 and fn == 0}


def _relabel(folder: Path, old: str, new: str) -> None:
    from harness.store import rewrite_results

    def relabel(r):
        r.id = r.id.replace(old, new)
        return r

    rewrite_results(folder, relabel)
