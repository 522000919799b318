"""Latency statistics over rounds: the round median is the unit, a comparison of runs without enough
rounds judges no latency at all, and a real, consistent slowdown over rounds is flagged."""

import json

import numpy as np
import pytest
from conftest import run_cli

from harness.bench import Gate, round_statistics
from harness.report.diff import MIN_ROUNDS, diff_runs
from harness.store import RunStore, read_run


def test_round_statistics_median_interval_and_noise():
    s = round_statistics([1.0, 1.1, 0.9, 1.05, 0.95])
    assert s["rounds"] == 5 and s["p50_ms"] == 1.0
    lo, hi = s["p50_ci_ms"]
    assert 0.9 <= lo <= 1.0 <= hi <= 1.1
    assert s["round_cv"] == pytest.approx(np.std([1.0, 1.1, 0.9, 1.05, 0.95], ddof=1) / 1.0)
    assert round_statistics([2.0]) == {"rounds": 1, "rounds_ms": [2.0], "p50_ms": 2.0}


def _run(tmp_path, name, cases):
    store = RunStore(tmp_path, {}, run_id=name, planned=[{"id": c} for c in cases])
    for cid, (samples, rounds) in cases.items():
        timing = {"p50_ms": float(np.median(rounds or samples)), "samples_ms": list(samples)}
        if rounds:
            timing["rounds_ms"] = list(rounds)
        store.add({"id": cid, "status": "pass", "timing": timing, "output_digest": {"y": "abc"}, "metrics": {"y": {"max_abs": 0.0}}})
    store.finish({})
    return read_run(store.dir)


def test_pooled_iterations_of_single_runs_judge_no_latency(tmp_path):
    """Two single-round runs whose pooled samples differ 2x with p ~ 0: without rounds nothing can be
    told from process noise, so nothing is flagged (the old gate flagged A/A runs dozens of times)."""
    rng = np.random.default_rng(0)
    base = _run(tmp_path, "a", {"x": (list(1.0 + 0.01 * rng.standard_normal(5000)), None)})
    new = _run(tmp_path, "b", {"x": (list(2.0 + 0.01 * rng.standard_normal(5000)), None)})
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    (c,) = diff.cases
    assert c.ratio == pytest.approx(2.0, rel=0.01) and not c.judged and not c.flagged and c.p_value is None and diff.ok


def test_rounds_flag_a_consistent_slowdown_and_not_noise(tmp_path):
    noisy_a = [1.0, 1.2, 0.85, 1.1, 0.95]
    noisy_b = [1.15, 0.9, 1.05, 0.88, 1.2]  # A/A: a 20% spread between rounds, no shift
    slow_b = [1.32, 1.38, 1.30, 1.45, 1.35]  # every round slower by a third
    base = _run(tmp_path, "a", {"same": ([1.0] * 10, noisy_a), "slower": ([1.0] * 10, noisy_a), "few": ([1.0] * 10, noisy_a[:3])})
    new = _run(tmp_path, "b", {"same": ([1.0] * 10, noisy_b), "slower": ([1.0] * 10, slow_b), "few": ([2.0] * 10, [2.0] * 3)})
    by_id = {c.id: c for c in diff_runs(base, new, Gate.parse("median:10%")).cases}
    assert by_id["slower"].judged and by_id["slower"].flagged and by_id["slower"].p_value < 0.01
    assert by_id["same"].judged and not by_id["same"].flagged
    assert not by_id["few"].judged and not by_id["few"].flagged, f"fewer than {MIN_ROUNDS} rounds a side"


def test_bench_measures_interleaved_rounds_in_fresh_workers(tmp_path):
    proc = run_cli("bench", "-f", "pow", "-F", "onnx13,tflite", "-r", "ort,litert", "--no-sweep", "-b", "1", "--threads", "all",
                   "--rounds", "3", "--min-time", "0.02", "-n", "5", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(x) for x in (tmp_path / "latest" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2
    for r in results:
        t = r["timing"]
        assert t["rounds"] == 3 and len(t["rounds_ms"]) == 3 and t["p50_ms"] == pytest.approx(float(np.median(t["rounds_ms"])))
        assert t["p50_ci_ms"][0] <= t["p50_ms"] <= t["p50_ci_ms"][1] and t["iterations"] == len(t["samples_ms"]) >= 15
