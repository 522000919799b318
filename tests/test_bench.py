"""Benchmark plumbing: statistics, the regression gate, pytest-benchmark replay, `harness bench`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from harness.bench import Gate, ReplayTimer
from harness.errors import HarnessError
from harness.report.compare import diff_runs
from harness.stats import latency_stats
from harness.store import RunStore, read_run


def test_latency_stats():
    s = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert s["min_ms"] == 1 and s["p50_ms"] == 2.5 and s["mean_ms"] == 2.5
    assert s["iqr_ms"] == pytest.approx(1.5) and s["throughput_per_s"] == pytest.approx(400)


@pytest.mark.parametrize("text, stat, threshold", [("median:10%", "median", 0.10), ("mean:0.05", "mean", 0.05), ("p90:25%", "p90", 0.25)])
def test_gate_parse(text, stat, threshold):
    gate = Gate.parse(text)
    assert (gate.stat, gate.threshold) == (stat, pytest.approx(threshold))


@pytest.mark.parametrize("text", ["median", "fastest:10%", "median:-5%", "median:x%"])
def test_gate_parse_rejects(text):
    with pytest.raises(HarnessError, match="--fail-on"):
        Gate.parse(text)


def test_replay_timer_gives_back_each_sample():
    timer = ReplayTimer([0.5, 0.25])
    assert [timer() for _ in range(4)] == [0.0, 0.5, 1.5, 1.75]


def _run(tmp_path, name, samples_by_case):
    store = RunStore(tmp_path, {}, run_id=name)
    for cid, samples in samples_by_case.items():
        # Each value stands for one round's median: compare judges latency over rounds.
        timing = {"p50_ms": float(np.median(samples)), "samples_ms": list(samples), "rounds_ms": list(samples)}
        store.add({"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "status": "pass", "timing": timing,
                   "output_digest": {"y": "abc"}, "metrics": {"y": {"max_abs": 0.0}}})
    store.finish({})
    return read_run(store.dir)


def test_gate_flags_only_large_and_significant_slowdowns(tmp_path):
    rng = np.random.default_rng(0)
    noise = lambda center: center * (1 + 0.02 * rng.standard_normal(60))  # noqa: E731
    base = _run(tmp_path, "a", {"same": noise(1.0), "slower": noise(1.0), "slightly": noise(1.0), "few": [1.0, 1.0]})
    new = _run(tmp_path, "b", {"same": noise(1.0), "slower": noise(1.3), "slightly": noise(1.05), "few": [2.0, 2.0]})
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    by_id = {c.id: c for c in diff.cases}
    assert by_id["slower"].flagged and by_id["slower"].significant
    assert not by_id["same"].flagged
    assert by_id["slightly"].significant and not by_id["slightly"].flagged, "significant but under the threshold"
    assert not by_id["few"].flagged and not by_id["few"].judged, "two rounds cannot show significance"
    assert not diff.ok and by_id["same"].numerics == "identical"


def test_pytest_benchmark_holds_the_worker_samples(tmp_path):
    """pytest --benchmark-only over the matrix: the benchmark's statistics are the worker's samples."""
    out = tmp_path / "bench.json"
    reports = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider", "--benchmark-only",
         "--harness-fixtures", "pow", "--harness-formats", "onnx13", "--harness-runtimes", "ort", "--harness-batch", "1",
         "--harness-iterations", "25", "--benchmark-json", str(out), "--harness-store", str(reports),
         "--benchmark-histogram", str(tmp_path / "histogram")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = json.loads(out.read_text())["benchmarks"]
    assert [b["name"] for b in bench] == ["test_case[pow-onnx13-ort-cpu-b1]"]
    result = json.loads((reports / "latest" / "results.jsonl").read_text())
    samples_s = [s / 1000 for s in result["timing"]["samples_ms"]]
    stats = bench[0]["stats"]
    assert stats["rounds"] == 25 == len(samples_s)
    assert stats["median"] == pytest.approx(float(np.median(samples_s)), rel=1e-9)
    assert stats["min"] == pytest.approx(min(samples_s), rel=1e-9)
    assert bench[0]["extra_info"]["case"] == "pow-onnx13-ort-cpu-b1" and bench[0]["options"]["timer"] == "harness_worker_samples"
    assert "pow-onnx13-ort-cpu-b1" in (tmp_path / "histogram.svg").read_text()


# `harness bench` takes .harness/bench.lock of its working folder: these tests run it in a folder of their
# own (with the repository's code; the export cache is per user, or HARNESS_CACHE, from any folder), so a
# benchmark someone runs in the repository meanwhile does not make them fail with "another benchmark is running".
OWN_LOCK = {"PYTHONPATH": str(REPO)}


def test_bench_cli_records_threads_flops_and_peak(tmp_path):
    proc = run_cli("bench", "-f", "mnist_cnn", "-F", "onnx18", "-r", "ort", "--no-sweep", "-b", "1,8", "--threads", "1,all",
                   "--min-time", "0.05", "-n", "10", "--reports", str(tmp_path), cwd=tmp_path, env=OWN_LOCK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(x) for x in (tmp_path / "latest" / "results.jsonl").read_text().splitlines()]
    assert {r["id"] for r in results} >= {"mnist_cnn-onnx18-ort-cpu-b1-t1", "mnist_cnn-onnx18-ort-cpu-b8-t1"}
    assert all(r["timing"]["iterations"] >= 10 and r["gflops"] > 0 and r["flops"] > 0 for r in results)
    meta = json.loads((tmp_path / "latest" / "run.json").read_text())
    assert meta["machine_peak_gflops"]["1"] > 0
    assert meta["machine_blas"] and meta["machine_blas"][0]["internal_api"], "the BLAS of the GEMM yardstick is named"
    assert isinstance(meta["machine_peak_notes"], list)
    assert "GFLOP/s" in proc.stdout


def test_pytest_benchmark_autosave_and_compare_fail(tmp_path):
    """The usual pytest-benchmark workflow on worker samples: autosave, then compare with a gate that
    passes, then against a baseline ten times faster than now, which the gate fails."""
    storage = tmp_path / "store"
    base = [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider", "--benchmark-only",
            "--harness-fixtures", "pow", "--harness-formats", "onnx13", "--harness-runtimes", "ort", "--harness-batch", "1",
            "--harness-iterations", "20", "--benchmark-storage", f"file://{storage}"]
    first = subprocess.run(base + ["--benchmark-autosave"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    second = subprocess.run(base + ["--benchmark-compare", "--benchmark-compare-fail=median:1000%"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0001" in second.stdout and "NOW" in second.stdout  # the saved run and this one, side by side
    assert "Performance has regressed" not in second.stdout + second.stderr
    cli = str(Path(sys.executable).parent / "pytest-benchmark")
    listed = subprocess.run([cli, "--storage", f"file://{storage}", "list"], capture_output=True, text=True)
    assert listed.returncode == 0 and "0001" in listed.stdout

    # The saved baseline, made ten times faster than what was measured: this run is a regression.
    (saved,) = storage.rglob("0001_*.json")
    data = json.loads(saved.read_text())
    (bench,) = data["benchmarks"]
    stats = bench["stats"]
    saved_median = stats["median"]
    assert saved_median > 0
    for key in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total"):
        stats[key] /= 10
    stats["ops"] *= 10
    saved.write_text(json.dumps(data))
    third = subprocess.run(base + ["--benchmark-compare", "--benchmark-compare-fail=median:10%"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    output = third.stdout + third.stderr
    assert third.returncode != 0, output
    assert "Performance has regressed" in output and "test_case[pow-onnx13-ort-cpu-b1]" in output
    assert "Field 'median' has failed PercentageRegressionCheck" in output, output


def test_nightly_keeps_history_and_compares(tmp_path):
    reports = tmp_path / "reports"
    first = run_cli("nightly", "-f", "pow", "-r", "ort", "--fuzz-budget", "5", "--reports", str(reports), cwd=tmp_path, env=OWN_LOCK)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "nothing to compare against yet" in first.stdout and '"fuzz": 0' in first.stdout
    second = run_cli("nightly", "-f", "pow", "-r", "ort", "--fuzz-budget", "0", "--reports", str(reports), "--fail-on", "median:1000%",
                     cwd=tmp_path, env=OWN_LOCK)
    assert second.returncode == 0, second.stdout + second.stderr
    assert '"compare": 0' in second.stdout and '"fuzz"' not in second.stdout, "--fuzz-budget 0 skips the fuzz step"
    history = sorted(p.name for p in (reports / "history").iterdir())
    assert len(history) == 2
    assert (reports / "compare" / f"{history[0]}_vs_{history[1]}" / "index.html").exists()
    assert (reports / "runs" / history[1] / "index.html").exists()


def test_nightly_exits_1_when_a_step_fails_and_keeps_no_history(tmp_path):
    reports = tmp_path / "reports"
    proc = run_cli("nightly", "-f", "pow", "-r", "nope", "--fuzz-budget", "0", "--reports", str(reports), cwd=tmp_path, env=OWN_LOCK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"run": 2' in proc.stdout and '"bench": 2' in proc.stdout and "made no complete run" in proc.stdout
    assert "harness: error: unknown runtime 'nope'" in proc.stderr, "each step's one-line error reaches the terminal"
    assert not (reports / "history").exists() or not any((reports / "history").iterdir())


def test_selftest_overhead_runs_cases_through_the_orchestrator():
    """`harness selftest fidelity`'s overhead figure runs real cases through the Orchestrator and reads
    typed records; a case that did not run is the self-test's failure in its own words, never a 0."""
    from harness import fidelity

    values = fidelity.overhead(cases=2)
    assert set(values) == {"litert", "ort", "tf"}
    for runtime, v in values.items():
        # The wall time of a case includes at least its timed calls: what is left over is not negative.
        assert 0 <= v["median_overhead_ms"] <= v["max_overhead_ms"], (runtime, v)

    from harness.records import CaseResult

    with pytest.raises(RuntimeError, match=r"^pow-onnx13-ort-cpu-b1 did not run \(error\): export to onnx13 failed: boom$"):
        fidelity._timed(CaseResult("pow-onnx13-ort-cpu-b1", "pow", "onnx13", "ort", "cpu", 1, 0, status="error",
                                   error="export to onnx13 failed: boom"))


def test_bench_measures_the_machine_every_round_and_slows_only_the_delayed_case(tmp_path):
    """Every round of a benchmark measures the machine's yardstick at each thread count (run.json
    machine_rounds: one value per round); `bench --delay-us` (self-tests only) reaches the worker, inside
    every timed call, and `--delay-case` gives it to that one case only, so a self-test can slow one case
    among many; the run records both, so a run with an injected slowdown is never mistaken for a real one."""
    slowed = "pow-onnx13-ort-cpu-b1-t1"
    proc = run_cli("bench", "-f", "pow", "-F", "onnx13,tflite", "-r", "ort,litert", "--no-sweep", "-b", "1", "--threads", "1",
                   "--rounds", "2", "--min-time", "0", "-n", "5", "--delay-us", "2000", "--delay-case", slowed,
                   "--reports", str(tmp_path), cwd=tmp_path, env=OWN_LOCK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["id"]: r for r in map(json.loads, (tmp_path / "latest" / "results.jsonl").read_text().splitlines())}
    assert set(results) == {slowed, "pow-tflite-litert-cpu-b1-t1"}
    assert min(results[slowed]["timing"]["samples_ms"]) >= 2.0
    assert min(results["pow-tflite-litert-cpu-b1-t1"]["timing"]["samples_ms"]) < 2.0, "the other case got no busy-wait"
    meta = json.loads((tmp_path / "latest" / "run.json").read_text())
    assert meta["options"]["delay_case"] == slowed and meta["options"]["delay_us"] == 2000
    assert list(meta["machine_rounds"]) == ["1"] and len(meta["machine_rounds"]["1"]) == 2
    assert all(v > 0 for v in meta["machine_rounds"]["1"])
    from conftest import check_run_schema

    check_run_schema((tmp_path / "latest").resolve())


def test_selftest_fidelity_runs_both_sides_in_fresh_processes_each_round(tmp_path):
    """`harness selftest fidelity` for two runtimes, two rounds each: one harness and one bare figure per
    round, their ratios, and no interval claimed from two rounds."""
    proc = run_cli("selftest", "fidelity", "-r", "litert,ort", "--rounds", "2", "--iterations", "20", "--warmup", "5", "--no-overhead",
                   cwd=tmp_path, env=OWN_LOCK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)["fidelity"]
    assert set(out) == {"litert", "ort"}
    for runtime, f in out.items():
        assert f["rounds"] == 2 and len(f["ratios"]) == len(f["harness_rounds_ms"]) == len(f["bare_rounds_ms"]) == 2, runtime
        assert f["ratios"][0] == pytest.approx(f["harness_rounds_ms"][0] / f["bare_rounds_ms"][0])
        assert f["threads"] == 1 and f["verdict"].startswith("too few rounds") and "ci" not in f
    assert "litert: harness/bare" in proc.stderr
    bad = run_cli("selftest", "fidelity", "-r", "go-tfgo", cwd=tmp_path, env=OWN_LOCK)
    assert bad.returncode == 2 and "expected Python runtimes among tf, litert, ort" in bad.stderr


def test_ratio_summary_gives_an_interval_and_calls_a_bias_only_outside_it():
    from harness.fidelity import ratio_summary

    even = ratio_summary([1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97, 1.0, 1.01], [1.0] * 10)
    assert even["ci"][0] <= 1 <= even["ci"][1] and even["verdict"].startswith("no bias shown")
    fast = ratio_summary([0.8, 0.82, 0.79, 0.81, 0.78, 0.8, 0.83, 0.8, 0.81, 0.79], [1.0] * 10)
    assert fast["ci"][1] < 1 and fast["verdict"] == "the harness reads faster than the bare loop"


def test_selftest_gate_stored_pairs_counts_false_alarms_and_catches(tmp_path):
    """One stored pair of a small selection: the numbers the note needs (false alarms among the unchanged
    cases and whether the slowed one was caught, by this gate and by the one before) and a verdict whose
    exit code says it; timings on a shared machine vary, so any verdict is possible here."""
    proc = run_cli("selftest", "gate", "--stored-pairs", "1", "-f", "gemm256", "-F", "onnx18", "-b", "1", "--rounds", "5", "--min-time", "0.01",
                   "--reports", str(tmp_path / "r"), cwd=tmp_path, env=OWN_LOCK)
    assert proc.returncode in (0, 1, 4), proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["pairs"] == 1 and out["slowdown"] == 1.25 and out["cases"] >= 2
    (pair,) = out["pairs_detail"]
    assert pair["slowed"].startswith("gemm256-onnx18-ort") and pair["delay_us"] >= 1 and len(pair["runs"]) == 2
    assert out["caught"] == int(pair["caught"]) and out["false_alarm_cases"] == len(pair["false_alarms"])
    assert set(out["before"]) == {"false_alarm_pairs", "false_alarm_cases", "caught"}
    assert out["whole_aa"]["pairs"] == 0, "one pair has no two plain runs to compare"
    assert "Benjamini–Hochberg" in out["method"] and "1.25" in pair["rounds_needed"]
    assert proc.returncode == {"pass": 0, "fail": 1, "inconclusive": 4}[out["verdict"]]
    assert f"verdict: {out['verdict']}" in proc.stderr and "caught in" in proc.stderr
    slowed_run = json.loads((tmp_path / "r" / "runs" / pair["runs"][1] / "run.json").read_text())
    assert slowed_run["options"]["delay_case"] == pair["slowed"] and slowed_run["options"]["delay_us"] == pair["delay_us"]
