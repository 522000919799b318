"""Benchmarks of the harness itself (figures, never tests):

- fidelity: the harness's p50 against a bare in-process timing loop over the same artifact, the same
  input files, the same thread setting and warm-up, in interleaved rounds with fresh processes on both
  sides each round, for every Python runtime (tf, litert, ort): the ratio per round, its median and a
  distribution-free 95% interval;
- overhead: per-case wall time beyond the timed iterations, with workers warm and models loaded;
- gate: A/A pairs of stored bench runs must flag nothing, an injected slowdown on one case must be
  flagged, and a machine too noisy to tell says so (inconclusive) instead of passing or failing;
- sandbox: what the bwrap sandbox (harness/sandbox.py) costs against none, worker start and inference.
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
from typing import TYPE_CHECKING, Any

from harness.cases import Case
from harness.engine import Options
from harness.fixtures import all_fixtures, get_fixture
from harness.orchestrator import Orchestrator
from harness.records import CaseResult
from harness.stats import median_interval

if TYPE_CHECKING:
    from harness.report.compare import RunDiff

# The bare loop: the library calls each worker makes (runners/<runtime>.py), nothing else: the same
# thread setting, the result made readable on the host as the worker does, a first (cold) call, then
# the warm-up, then the timed calls.
BARE = r"""
import json, sys, time
import numpy as np
kind, model, signature, feeds_json, iterations, warmup, threads = sys.argv[1:8]
iterations, warmup, threads = int(iterations), int(warmup), int(threads)
feeds = {k: np.load(v) for k, v in json.loads(feeds_json).items()}
if kind == "litert":
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path=model, num_threads=threads or None).get_signature_runner(signature)
    call = lambda: runner(**feeds)
elif kind == "ort":
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    call = lambda: dict(zip(names, session.run(names, feeds)))
else:
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    loaded = tf.saved_model.load(model)
    fn = loaded.signatures[signature]
    call = lambda: {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
call()
for _ in range(warmup):
    call()
samples = []
for _ in range(iterations):
    t = time.perf_counter_ns(); call(); samples.append(time.perf_counter_ns() - t)
print(json.dumps(samples))
"""

FORMAT_OF = {"tf": "savedmodel", "litert": "tflite", "ort": "onnx18"}


def fidelity(rounds: int = 10, iterations: int = 200, warmup: int = 300, threads: int = 1,
             runtimes: tuple[str, ...] = ("tf", "litert", "ort"), log=None) -> dict:
    """mnist_cnn at batch 1 in each runtime: per round, the harness (a fresh worker: Engine.measure after
    restart_workers) and the bare loop (a fresh Python process), in ABBA order; each side's round median,
    the ratio harness/bare per round, the median ratio and its distribution-free 95% interval (6 rounds
    or more). One process against one process cannot tell a bias from the spread between processes;
    rounds of fresh processes can. Both sides warm up alike (ONNX Runtime keeps speeding up for a few
    hundred calls) and run at the same thread setting (LiteRT's default is not one thread)."""
    from harness.runners import RUNTIMES

    fx = get_fixture("mnist_cnn")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        orch = _orchestrator(Path(tmp) / "scratch", Options(warmup=warmup, iterations=iterations, threads=threads))
        try:
            for runtime in runtimes:
                if not RUNTIMES[runtime].availability().ok:
                    out[runtime] = {"skipped": RUNTIMES[runtime].availability().reason}
                    continue
                fmt = FORMAT_OF[runtime]
                case = Case("mnist_cnn", fmt, runtime, batch=1, threads=threads)
                _timed(orch.run_case(case))  # the verdict, the reference, the input files
                art = orch.engine.artifact(fx, fmt)
                by_name = {key[2]: path for key, path in orch.engine._input_files.items() if key[:2] == (fx.name, 1)}
                # The very .npy files the worker reads, under the names the runner feeds them by.
                key = "name" if runtime == "tf" else "stored_name"
                feeds = {getattr(spec, key): by_name[spec.name] for spec in art.inputs}
                bare_cmd = [sys.executable, "-c", BARE, runtime, str(art.model_path), art.signature or "serving_default",
                            json.dumps(feeds), str(iterations), str(warmup), str(threads)]
                harness_ms, bare_ms = [], []
                for r in range(rounds):
                    for side in (("harness", "bare") if r % 2 == 0 else ("bare", "harness")):
                        if side == "harness":
                            orch.engine.restart_workers()
                            harness_ms.append(statistics.median(orch.engine.measure(case).samples_ms or []))
                        else:
                            proc = subprocess.run(bare_cmd, capture_output=True, text=True, env=_quiet_env())
                            if proc.returncode != 0:
                                raise RuntimeError(f"the bare {runtime} loop failed: {proc.stderr.strip()[-2000:]}")
                            bare_ms.append(statistics.median(json.loads(proc.stdout.strip().splitlines()[-1])) / 1e6)
                    if log:
                        log(f"{runtime} round {r + 1}/{rounds}: harness {harness_ms[-1]:.4f} ms, bare {bare_ms[-1]:.4f} ms")
                out[runtime] = ratio_summary(harness_ms, bare_ms) | {"threads": threads, "warmup": warmup, "iterations": iterations,
                                                                    "format": fmt}
        finally:
            orch.close()
    return out


def ratio_summary(harness_ms: list[float], bare_ms: list[float]) -> dict:
    """Per-round ratios harness/bare, their median and distribution-free 95% interval, and what the
    interval says: a bias of the harness shows only when the whole interval lies off 1."""
    ratios = [h / b for h, b in zip(harness_ms, bare_ms, strict=True)]
    item: dict = {"rounds": len(ratios), "ratio": statistics.median(ratios), "ratios": ratios,
                  "harness_p50_ms": statistics.median(harness_ms), "bare_p50_ms": statistics.median(bare_ms),
                  "harness_rounds_ms": harness_ms, "bare_rounds_ms": bare_ms}
    interval = median_interval(ratios)
    if interval is None:
        item["verdict"] = "too few rounds for a 95% interval (6 or more)"
        return item
    lo, hi, coverage = interval
    item["ci"], item["coverage"] = [lo, hi], coverage
    item["verdict"] = ("no bias shown: the interval holds 1" if lo <= 1 <= hi else
                       f"the harness reads {'slower' if lo > 1 else 'faster'} than the bare loop")
    return item


def _quiet_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


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
    from harness.export import cache_root
    from harness.runners import RUNTIMES, WorkerPool
    from harness.runners.table import WorkerContext

    out = {}
    for name, spec in RUNTIMES.items():
        if not spec.availability().ok:
            continue
        times = []
        for _ in range(repeats):
            with WorkerPool(WorkerContext(cache_root(), Path(tempfile.gettempdir()) / "harness-scratch")) as pool:
                t = time.perf_counter()
                pool.get(name)
                times.append(time.perf_counter() - t)
        out[name] = {"median_start_s": statistics.median(times), "min_start_s": min(times)}
    return out


def gate(reports: Path, rounds: int = 5) -> dict:
    """A/A: the same build benchmarked twice must flag nothing; a real slowdown must be flagged: the
    `gemm272` fixture does 1.2x the work of `gemm256` (272^3 / 256^3), and its run is relabelled as
    gemm256, so `harness compare` sees the same cases 20% slower. Runs `harness bench` and `harness
    compare` as a user would. `verdict`: pass, fail, or inconclusive when the rounds' noise could not
    have shown a 20% change (then `noise` and `rounds_needed` say so)."""
    base = [sys.executable, "-m", "harness.cli"]

    def bench(fixture: str) -> str:
        select = ["-f", fixture, "-F", "onnx18,tflite", "-r", "ort,litert", "--no-sweep", "-b", "1", "--threads", "all",
                  "--rounds", str(rounds), "--min-time", "0.1"]
        proc = subprocess.run(base + ["bench", *select, "--reports", str(reports)], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(proc.stderr)
        return os.readlink(reports / "latest").split("/")[-1]

    def compare(a: str, b: str) -> tuple[dict, RunDiff]:
        """`harness compare` as a user runs it (its exit code), and what it flagged read from the same
        comparison in this process (not from its terminal output, whose lines wrap with the width)."""
        from harness.bench import Gate
        from harness.report.compare import diff_runs
        from harness.store import read_run

        proc = subprocess.run(base + ["compare", a, b, "--reports", str(reports), "--fail-on", "median:10%"], capture_output=True, text=True)
        diff = diff_runs(read_run(reports / "runs" / a), read_run(reports / "runs" / b), Gate.parse("median:10%"), effects=(1.2,))
        flagged = [c for c in diff.cases if c.flagged]
        return {"exit": proc.returncode, "flagged": len(flagged), "verdict": diff.verdict,
                "lines": [f"{c.id}: {c.ratio:.2f}x, q={c.q_value:.3g}" for c in flagged if c.ratio and c.q_value is not None],
                "ratios": {c.id: round(c.ratio, 3) for c in diff.cases if c.ratio},
                "summary": f"{len(flagged)} latency regression(s), {sum(c.verdict_regressed for c in diff.cases)} verdict regression(s), "
                           f"{len(diff.missing)} missing case(s)"}, diff

    a1, a2 = bench("gemm256"), bench("gemm256")
    slow = bench("gemm272")
    _relabel(reports / "runs" / slow, "gemm272", "gemm256")
    (aa, _), (slowed, sdiff) = compare(a1, a2), compare(a2, slow)
    out: dict[str, Any] = {"aa": aa, "slowed": slowed, "runs": [a1, a2, slow]}
    lat = sdiff.latency
    if aa["flagged"]:
        out["verdict"] = "fail"
    elif slowed["flagged"]:
        out["verdict"] = "pass"
    elif lat is None or lat.too_noisy(1.2) or sdiff.inconclusive:
        out["verdict"] = "inconclusive"
        out["noise"] = round(lat.median_noise, 4) if lat and lat.median_noise is not None else None
        out["rounds_needed"] = lat.rounds_needed.get("1.20") if lat else None
        out["why"] = "; ".join(sdiff.inconclusive) or "the rounds' noise could not have shown a 20% change"
    else:
        out["verdict"] = "fail"
    out["ok"] = out["verdict"] == "pass"
    return out


def legacy_flags(base, new, threshold: float = 0.10) -> set[str]:
    """The gate before drift and many-case control (kept for the self-test's "before" figure only): a
    Mann–Whitney U test per case over rounds at α=0.01, no correction for testing many cases, no drift
    taken out, flagged when also slower than the threshold."""
    from scipy.stats import mannwhitneyu

    before = {r.id: r for r in base.results}
    out = set()
    for r in new.results:
        a = before.get(r.id)
        if a is None or not a.timing.p50_ms or not r.timing.p50_ms:
            continue
        ra, rb = a.timing.rounds_ms or [], r.timing.rounds_ms or []
        if min(len(ra), len(rb)) < 5:
            continue
        p = float(mannwhitneyu(ra, rb, alternative="two-sided").pvalue)
        if p < 0.01 and r.timing.p50_ms / a.timing.p50_ms > 1 + threshold:
            out.add(r.id)
    return out


GATE_SELECTION = ("-f", "mlp,mnist_cnn", "-r", "ort,litert", "--no-sweep")  # 48 cases: the A/A runs


def gate_stored_pairs(reports: Path, pairs: int = 10, rounds: int = 5, slowdown: float = 0.25, min_time: float = 0.1,
                      selection: tuple[str, ...] = GATE_SELECTION, log=None) -> dict:
    """`pairs` pairs of stored bench runs, each an A/A comparison of every case but one, and that one
    slowed by a busy-wait of `slowdown` × its p50 inside every timed call of the second run
    (`--delay-us`, `--delay-case`): per pair, the false alarms among the unchanged cases and whether
    the slowed case was caught — by this gate and by the gate before it (legacy_flags) on the same runs.
    The plain runs of consecutive pairs are compared too (`whole_aa`: pairs-1 A/A comparisons of every case).
    The verdict: `fail` when there are more false alarms than the gate's α allows, or fewer catches than
    its power promises (binomial tests, scipy), `inconclusive` when in most pairs the rounds' noise could
    not have shown the slowdown (with that noise and the rounds it would take), else `pass`."""
    import random

    from scipy.stats import binomtest

    from harness.bench import POWER, Gate
    from harness.report.compare import diff_runs
    from harness.store import read_run

    base = [sys.executable, "-m", "harness.cli"]
    gate_ = Gate.parse("median:10%")
    effect = round(1 + slowdown, 2)

    def bench(*extra: str) -> str:
        proc = subprocess.run(base + ["bench", *selection, "--rounds", str(rounds), "--min-time", str(min_time), *extra,
                                      "--reports", str(reports)], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"harness bench failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return os.readlink(reports / "latest").split("/")[-1]

    rows: list[dict[str, Any]] = []
    whole: list[dict[str, Any]] = []  # the plain runs of consecutive pairs: A/A comparisons of every case, for free
    previous = None
    for k in range(pairs):
        started = time.monotonic()
        a = bench()
        run_a = read_run(reports / "runs" / a)
        if previous is not None:
            aa = diff_runs(previous, run_a, gate_)
            whole.append({"runs": [previous.run_id, a], "false_alarms": sorted(c.id for c in aa.cases if c.flagged),
                          "common_regressions": [s.why for s in aa.common if s.verdict == "common regression"],
                          "before": sorted(legacy_flags(previous, run_a)), "verdict": aa.verdict})
        previous = run_a
        # The slowed case: a seeded choice among cases long enough for a microsecond busy-wait to be a
        # faithful 25% (a 2 µs delay on an 8 µs case would be 25% ± 6%).
        timed = sorted((r for r in run_a.results if r.timing.p50_ms and r.timing.p50_ms >= 0.04), key=lambda r: r.id)
        if not timed:
            raise RuntimeError(f"run {a} has no case of 0.04 ms or more to slow down")
        target = random.Random(k).choice(timed)
        delay_us = max(1, round(slowdown * (target.timing.p50_ms or 0) * 1000))
        b = bench("--delay-us", str(delay_us), "--delay-case", target.id)
        run_b = read_run(reports / "runs" / b)
        diff = diff_runs(run_a, run_b, gate_, effects=(effect,))
        lat = diff.latency
        flagged = {c.id for c in diff.cases if c.flagged}
        old = legacy_flags(run_a, run_b)
        hit = next((c for c in diff.cases if c.id == target.id), None)
        row: dict[str, Any] = {"runs": [a, b], "slowed": target.id, "delay_us": delay_us, "cases": len(diff.cases),
               "false_alarms": sorted(flagged - {target.id}), "caught": target.id in flagged,
               "slowed_ratio": round(hit.ratio, 3) if hit and hit.ratio else None,
               "slowed_q": hit.q_value if hit else None,
               "before": {"false_alarms": sorted(old - {target.id}), "caught": target.id in old},
               "verdict": diff.verdict, "could_show_slowdown": lat is not None and not lat.too_noisy(effect),
               "noise": round(lat.median_noise, 4) if lat and lat.median_noise is not None else None,
               "rounds_needed": dict(lat.rounds_needed) if lat else {},
               "common": [{"threads": c.threads, "change": round(c.change, 3), "spread": round(c.spread, 4),
                           "machine": round(c.machine, 3) if c.machine else None, "verdict": c.verdict} for c in diff.common],
               "seconds": round(time.monotonic() - started, 1)}
        rows.append(row)
        if log:
            log(f"pair {k + 1}/{pairs}: {len(row['false_alarms'])} false alarm(s) (before: {len(row['before']['false_alarms'])}), "
                f"slowed {target.id} {row['slowed_ratio']}× {'caught' if row['caught'] else 'missed'} "
                f"(before: {'caught' if row['before']['caught'] else 'missed'}), noise {row['noise']}, {row['seconds']} s")
    n = len(rows)
    false_pairs = sum(bool(r["false_alarms"]) for r in rows)
    judgeable = [r for r in rows if r["could_show_slowdown"]]
    caught = sum(r["caught"] for r in rows)
    caught_judgeable = sum(r["caught"] for r in judgeable)
    out: dict[str, Any] = {"pairs": n, "rounds": rounds, "slowdown": effect, "cases": rows[0]["cases"] if rows else 0,
           "method": f"{gate_.stat}:{gate_.threshold:.0%}, false alarms held to {gate_.alpha} across each comparison (Benjamini–Hochberg)",
           "false_alarm_pairs": false_pairs, "false_alarm_cases": sum(len(r["false_alarms"]) for r in rows),
           "caught": caught, "caught_where_judgeable": f"{caught_judgeable} of {len(judgeable)}",
           "before": {"false_alarm_pairs": sum(bool(r["before"]["false_alarms"]) for r in rows),
                      "false_alarm_cases": sum(len(r["before"]["false_alarms"]) for r in rows),
                      "caught": sum(r["before"]["caught"] for r in rows)},
           "whole_aa": {"pairs": len(whole), "false_alarm_pairs": sum(bool(w["false_alarms"] or w["common_regressions"]) for w in whole),
                        "false_alarm_cases": sum(len(w["false_alarms"]) for w in whole),
                        "before_pairs": sum(bool(w["before"]) for w in whole), "before_cases": sum(len(w["before"]) for w in whole),
                        "inconclusive": sum(w["verdict"] == "inconclusive" for w in whole), "detail": whole},
           "false_positive_rate": false_pairs / n if n else None, "detection_rate": caught / n if n else None,
           "noise": [r["noise"] for r in rows], "pairs_detail": rows}
    too_many_alarms = n and binomtest(false_pairs, n, gate_.alpha, alternative="greater").pvalue < 0.01
    too_few_catches = judgeable and binomtest(caught_judgeable, len(judgeable), POWER, alternative="less").pvalue < 0.01
    if too_many_alarms:
        out["verdict"], out["why"] = "fail", f"false alarms in {false_pairs} of {n} A/A pairs: more than α={gate_.alpha} allows"
    elif too_few_catches:
        out["verdict"], out["why"] = "fail", f"the {effect}× slowdown caught in {caught_judgeable} of {len(judgeable)} pairs that could show it: under the {POWER:.0%} power promised"
    elif len(judgeable) * 2 < n:
        needs = sorted(r["rounds_needed"].get(f"{effect:.2f}") or 10**6 for r in rows)
        need = needs[len(needs) // 2]
        out["verdict"] = "inconclusive"
        out["why"] = (f"in {n - len(judgeable)} of {n} pairs the rounds' noise (median {statistics.median(x for x in out['noise'] if x is not None):.1%}) "
                      f"could not have shown a {effect}× change with {rounds} rounds a side: "
                      + (f"{need} rounds a side would (--rounds {need})" if need < 10**6 else "no number of rounds would on this machine now"))
    else:
        out["verdict"] = "pass"
    out["ok"] = out["verdict"] == "pass"
    return out


def _relabel(folder: Path, old: str, new: str) -> None:
    from harness.store import rewrite_results

    def relabel(r):
        r.id = r.id.replace(old, new)
        return r

    rewrite_results(folder, relabel)


# --- what the sandbox costs ---------------------------------------------------------------------------
# A model whose inference takes milliseconds (the mlp's microseconds would measure the clock).
SANDBOX_MEASURED = {"tf": ("mnist_cnn", "savedmodel"), "ort": ("mnist_cnn", "onnx13"), "go-tfgo": ("mnist_cnn", "savedmodel"),
                    "node-tfjs-cpu": ("mnist_cnn", "tfjs_graph"), "node-ort": ("mnist_cnn", "onnx13")}


def sandbox_cost(runtimes: list[str], rounds: int, iterations: int, batch: int = 1) -> list[dict]:
    """Worker start (spawn to the `info` answer) and p50 of one inference, bwrap against none, measured
    side by side: each round starts a fresh worker of each kind, in ABBA order across rounds, so a
    drift of the machine hits both alike; per runtime the median of the per-round ratios bwrap/none
    with a distribution-free 95% interval (needs 6 rounds or more)."""
    import shutil

    import numpy as np

    from harness.export import Exporter
    from harness.runners.pool import WorkerPool
    from harness.runners.table import WorkerContext
    from harness.stats import latency_stats

    exporter = Exporter()
    out = []
    for runtime in runtimes:
        fixture, fmt = SANDBOX_MEASURED[runtime]
        fx = get_fixture(fixture)
        art = exporter.get(fx, fmt)
        scratch = Path(tempfile.mkdtemp(prefix="harness-sandbox-cost-"))
        inputs = {}
        for name, value in fx.make_inputs(batch).items():
            inputs[name] = str(scratch / f"{name}.npy")
            np.save(inputs[name], value)
        samples: dict[str, dict[str, list[float]]] = {k: {"start_ms": [], "p50_ms": []} for k in ("none", "bwrap")}
        for r in range(rounds):
            order = ("none", "bwrap") if r % 4 in (0, 3) else ("bwrap", "none")
            for kind in order:
                pool = WorkerPool(WorkerContext(exporter.root, scratch), sandbox=kind)
                try:
                    t = time.perf_counter()
                    worker = pool.get(runtime)
                    samples[kind]["start_ms"].append((time.perf_counter() - t) * 1e3)
                    loaded = worker.load({"artifact": str(art.dir), "format": fmt, "device": "cpu"}, timeout=300)
                    reply = worker.run({"handle": loaded.handle, "inputs": inputs, "output_dir": str(scratch / kind),
                                        "warmup": 20, "iterations": iterations}, timeout=300)
                    samples[kind]["p50_ms"].append(latency_stats(reply.samples_ns)["p50_ms"])
                finally:
                    pool.close()
        row: dict = {"runtime": runtime, "case": f"{fixture}/{fmt}/b{batch}", "rounds": rounds, "iterations": iterations}
        for metric in ("start_ms", "p50_ms"):
            ratios = [b / a for a, b in zip(samples["none"][metric], samples["bwrap"][metric])]
            interval = median_interval(ratios)
            row[metric] = {"none": float(np.median(samples["none"][metric])), "bwrap": float(np.median(samples["bwrap"][metric])),
                           "ratio": float(np.median(ratios)), "ratio_ci95": [interval[0], interval[1]] if interval else None}
        out.append(row)
        shutil.rmtree(scratch, ignore_errors=True)
    return out
