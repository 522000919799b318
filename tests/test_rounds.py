"""Latency statistics over rounds: the round median is the unit, a comparison of runs without enough
rounds judges no latency at all, and a real, consistent slowdown over rounds is flagged."""

import json

import numpy as np
import pytest

from conftest import check_run_schema, run_cli
from harness.bench import Gate
from harness.records import CaseResult, Timing
from harness.report.compare import MIN_ROUNDS, diff_runs, print_diff
from harness.stats import round_statistics
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
        store.add({"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "status": "pass", "timing": timing,
                   "output_digest": {"y": "abc"}, "metrics": {"y": {"max_abs": 0.0}}})
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


def test_gate_conformance_judges_single_runs_on_their_iterations_and_says_so(tmp_path):
    """Asked for with --gate-conformance: cases without rounds are judged on their pooled iterations (a
    2x shift is flagged, an A/A pair is not), and the output names the weaker test; a bench run compared
    with a conformance run is pointed out."""
    rng = np.random.default_rng(1)
    base = _run(tmp_path, "a", {"slow": (list(1.0 + 0.01 * rng.standard_normal(50)), None), "same": (list(1.0 + 0.01 * rng.standard_normal(50)), None)})
    new = _run(tmp_path, "b", {"slow": (list(2.0 + 0.01 * rng.standard_normal(50)), None), "same": (list(1.0 + 0.01 * rng.standard_normal(50)), None)})
    diff = diff_runs(base, new, Gate.parse("median:10%"), gate_conformance=True)
    by_id = {c.id: c for c in diff.cases}
    assert by_id["slow"].judged and by_id["slow"].on_samples and by_id["slow"].flagged and not diff.ok
    assert by_id["same"].judged and not by_id["same"].flagged
    from rich.console import Console

    console = Console(record=True, width=200)
    print_diff(diff, console)
    assert "--gate-conformance: cases without rounds are judged on their pooled iterations" in console.export_text()
    bench = _run(tmp_path, "c", {"same": ([1.0] * 10, [1.0, 1.1, 0.9, 1.0, 1.05])})
    bench.meta.options = {"command": "bench"}
    console = Console(record=True, width=200)
    print_diff(diff_runs(bench, new, Gate.parse("median:10%")), console)
    assert "comparing a bench run (c) with a conformance run (b)" in console.export_text()


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


def test_median_interval_is_distribution_free_and_needs_six_rounds():
    from harness.stats import median_interval

    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None, "five rounds cannot give a 95% interval"
    lo, hi, coverage = median_interval([float(x) for x in range(1, 11)])
    assert (lo, hi) == (2.0, 9.0) and coverage == pytest.approx(1 - 2 * 11 / 1024)


def test_pair_verdicts_need_the_whole_interval_and_a_real_effect():
    from harness.cases import Case
    from harness.orchestrator import pair_statistics

    def results(ratios):
        a = Case("pow", "onnx13", "ort", variant="A")
        b = Case("pow", "onnx13", "ort", variant="B")
        base = [1.0 + 0.01 * i for i in range(len(ratios))]
        rs = [CaseResult(a.id, a.fixture, a.format, a.runtime, status="pass", timing=Timing(rounds_ms=base, p50_ms=1.0)),
              CaseResult(b.id, b.fixture, b.format, b.runtime, status="pass",
                         timing=Timing(rounds_ms=[x * r for x, r in zip(base, ratios)], p50_ms=1.2))]
        return pair_statistics(rs, [a, b])[0]

    assert results([1.2, 1.25, 1.18, 1.22, 1.3, 1.21, 1.19, 1.24, 1.2, 1.23])["verdict"] == "B slower"
    assert results([0.8, 0.82, 0.79, 0.81, 0.78, 0.8, 0.83, 0.8, 0.81, 0.79])["verdict"] == "B faster"
    assert results([1.02, 1.03, 1.01, 1.02, 1.04, 1.02, 1.03, 1.01, 1.02, 1.03])["verdict"] == "no difference shown", "under 5%"
    assert results([0.9, 1.2, 1.05, 0.95, 1.3, 0.85, 1.1, 1.0, 0.92, 1.15])["verdict"] == "no difference shown", "noise"
    assert results([1.5] * 5)["verdict"].startswith("too few rounds")


def test_bench_pair_measures_two_builds_in_the_same_rounds(tmp_path):
    # A variant here (no install); builds (RUNTIME@BUILD) in tests/test_builds.py.
    proc = run_cli("bench", "-f", "pow", "-F", "onnx13", "-b", "1", "--threads", "all", "--pair", "ort", "ort@noopt",
                   "--rounds", "6", "--min-time", "0.01", "-n", "5", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "paired: B = ort@noopt" in proc.stdout
    meta = json.loads((tmp_path / "latest" / "run.json").read_text())
    (pair,) = meta["pairs"]
    assert pair["rounds"] == 6 and len(pair["ratios"]) == 6 and pair["a_status"] == pair["b_status"] == "pass"
    assert pair["verdict"] in ("no difference shown", "B slower", "B faster") and pair["ci"][0] <= pair["ratio"] <= pair["ci"][1]
    assert meta["runtimes"]["ort@noopt~B"]["settings"], "B ran as the variant it was given"
    assert check_run_schema((tmp_path / "latest").resolve()) == 2
    for args, message in [(["--pair", "ort", "litert"], "share no format"), (["--pair", "ort", "ort", "--rounds", "5"], "expected 6 or more"),
                          (["--pair", "ort", "ort=/nonexistent/python"], "RUNTIME=PATH is gone: expected RUNTIME@BUILD")]:
        bad = run_cli("bench", "-f", "pow", *args, "--reports", str(tmp_path))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_diff_values_improvements_boundaries_and_numerics(tmp_path):
    """What compare reports, value by value: the ratio itself, a faster case as an improvement, a change
    of exactly the threshold not flagged, changed output bytes with the drift of max_abs, and a case only
    one run has left out of the latency table."""
    from harness.errors import HarnessError

    steady = [1.0, 1.0, 1.0, 1.0, 1.0]
    base = _run(tmp_path, "a", {"faster": ([1.0] * 10, steady), "edge": ([1.0] * 10, steady), "drift": ([1.0] * 10, steady),
                                "gone": ([1.0] * 10, steady)})
    new_store = RunStore(tmp_path, {}, run_id="b")
    for cid, rounds, digest, err in (("faster", [0.7] * 5, "abc", 0.0), ("edge", [1.1] * 5, "abc", 0.0), ("drift", steady, "xyz", 0.5),
                                     ("only-new", steady, "abc", 0.0)):
        new_store.add({"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "status": "pass",
                       "timing": {"p50_ms": float(np.median(rounds)), "samples_ms": [1.0] * 10, "rounds_ms": rounds},
                       "output_digest": {"y": digest}, "metrics": {"y": {"max_abs": err}}})
    new_store.finish({})
    diff = diff_runs(base, read_run(new_store.dir), Gate.parse("median:10%"), allow_missing=True)
    by_id = {c.id: c for c in diff.cases}
    assert by_id["faster"].ratio == pytest.approx(0.7) and by_id["faster"].improved and not by_id["faster"].flagged
    assert by_id["edge"].ratio == pytest.approx(1.1) and not by_id["edge"].flagged, "a change of exactly the threshold is not beyond it"
    assert by_id["drift"].numerics == "changed" and by_id["drift"].drift == {"y": (0.0, 0.5)}
    assert by_id["faster"].numerics == "identical"
    assert by_id["only-new"].ratio is None and by_id["only-new"].base_status is None and by_id["gone"].missing
    assert diff.ok and diff.missing == ["gone"]
    assert not diff_runs(base, read_run(new_store.dir), Gate.parse("median:10%")).ok, "a missing case fails without --allow-missing"
    other = _run(tmp_path, "c", {"elsewhere": ([1.0] * 10, steady)})
    with pytest.raises(HarnessError, match="no case in common"):
        diff_runs(base, other, Gate.parse("median:10%"))


def test_round_statistics_noise_is_relative_and_two_rounds_have_an_interval():
    s = round_statistics([2.0, 2.2, 1.8, 2.1, 1.9])
    assert s["round_cv"] == pytest.approx(np.std([2.0, 2.2, 1.8, 2.1, 1.9], ddof=1) / 2.0)
    two = round_statistics([1.0, 3.0])
    assert two["p50_ms"] == 2.0 and 1.0 <= two["p50_ci_ms"][0] <= two["p50_ci_ms"][1] <= 3.0 and "round_cv" in two


def test_a_zero_threshold_is_refused():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="must be positive"):
        Gate.parse("median:0%")


def test_diff_ratio_boundaries_alpha_and_one_sided_digests(tmp_path):
    """The ratio is new/base (a base of 2 ms, not 1); a 1/(1+threshold) speed-up is not beyond the gate;
    alpha is the one given; a zero base time judges nothing; one run without digests says nothing of numerics."""
    base = _run(tmp_path, "a", {"twice": ([2.0] * 10, [2.0, 2.1, 1.9, 2.05, 1.95]), "edge": ([1.1] * 10, [1.1] * 5),
                                "zero": ([0.0] * 10, [0.0] * 5), "nodigest": ([1.0] * 10, [1.0] * 5)})
    new_store = RunStore(tmp_path, {}, run_id="b")
    for cid, rounds, digest in (("twice", [4.0, 4.2, 3.8, 4.1, 3.9], {"y": "abc"}), ("edge", [1.0] * 5, {"y": "abc"}),
                                ("zero", [1.0] * 5, {"y": "abc"}), ("nodigest", [1.0] * 5, {})):
        new_store.add({"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "status": "pass",
                       "timing": {"p50_ms": float(np.median(rounds)), "samples_ms": rounds, "rounds_ms": rounds},
                       "output_digest": digest, "metrics": {"y": {"max_abs": 0.0}}})
    new_store.finish({})
    new = read_run(new_store.dir)
    by_id = {c.id: c for c in diff_runs(base, new, Gate.parse("median:10%")).cases}
    assert by_id["twice"].ratio == pytest.approx(2.0) and by_id["twice"].flagged
    assert by_id["edge"].ratio == pytest.approx(1 / 1.1) and not by_id["edge"].improved, "exactly 1/(1+threshold) is not beyond it"
    assert by_id["zero"].ratio is None and not by_id["zero"].judged and not by_id["zero"].flagged
    assert by_id["nodigest"].numerics == ""
    strict = {c.id: c for c in diff_runs(base, new, Gate.parse("median:10%", alpha=1e-9)).cases}
    assert strict["twice"].p_value == by_id["twice"].p_value and not strict["twice"].flagged, "a stricter alpha flags nothing here"


# --- the gate between two stored runs: drift, many cases, power, inconclusive -------------------------

def _bench_run(tmp_path, name, cases, machine=None):
    """A stored bench run: cases {id: (threads, rounds)}, and the machine's yardstick per round."""
    store = RunStore(tmp_path, {"command": "bench"}, run_id=name, planned=[{"id": c} for c in cases])
    for cid, (threads, rounds) in cases.items():
        store.add({"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "threads": threads, "status": "pass",
                   "timing": {"p50_ms": float(np.median(rounds)), "samples_ms": list(rounds), "rounds_ms": list(rounds)}})
    if machine is not None:
        store.set("machine_rounds", machine)
    store.finish({})
    return read_run(store.dir)


def _rounds(rng, center, noise, n=5):
    return list(center * np.exp(noise * rng.standard_normal(n)))


def test_a_shift_of_the_whole_machine_is_the_machine_not_n_regressions(tmp_path):
    """Between two A/A runs every case at 2 threads got 1.3x slower, and so did the machine's yardstick:
    the old gate flagged each case (5 rounds a side completely separated, p=0.008 < 0.01); now the
    thread count's common change is named the machine's and no case is flagged."""
    rng = np.random.default_rng(3)
    ids = [f"c{i}-t2" for i in range(12)]
    base = _bench_run(tmp_path, "a", {c: (2, _rounds(rng, 1 + i, 0.02)) for i, c in enumerate(ids)}, {"2": _rounds(rng, 0.3, 0.02)})
    new = _bench_run(tmp_path, "b", {c: (2, _rounds(rng, 1.3 * (1 + i), 0.02)) for i, c in enumerate(ids)}, {"2": _rounds(rng, 0.39, 0.02)})
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    assert all(c.ratio > 1.2 for c in diff.cases) and not any(c.flagged for c in diff.cases)
    (common,) = diff.common
    assert common.verdict == "machine changed" and common.change == pytest.approx(1.3, rel=0.05) and common.machine > 1.2
    assert diff.verdict == "pass" and diff.ok
    from rich.console import Console

    console = Console(record=True, width=250)
    print_diff(diff, console)
    text = console.export_text()
    assert "12 cases moved 1.3" in text and "machine changed" in text and "Benjamini–Hochberg" in text
    assert "0 latency regression(s)" in text and "verdict: pass" in text


def test_one_case_slowed_beyond_the_machines_shift_is_caught(tmp_path):
    """The machine slowed every 2-thread case ~1.4x (each a little differently) and one case a further
    1.3x: only that one is flagged, judged relative to the common change."""
    rng = np.random.default_rng(4)
    ids = [f"c{i}" for i in range(24)]
    base = _bench_run(tmp_path, "a", {c: (2, _rounds(rng, 1 + i, 0.02)) for i, c in enumerate(ids)})
    new = _bench_run(tmp_path, "b", {c: (2, _rounds(rng, (1 + i) * 1.4 * float(np.exp(0.02 * rng.standard_normal())) * (1.3 if c == "c5" else 1), 0.02))
                                     for i, c in enumerate(ids)})
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    assert [c.id for c in diff.cases if c.flagged] == ["c5"]
    c5 = next(c for c in diff.cases if c.id == "c5")
    assert c5.relative == pytest.approx(1.3, rel=0.06) and c5.q_value < 0.05
    assert not diff.ok and any("c5: latency" in line and "beyond the common change" in line for line in diff.regressions)


def test_many_cases_are_judged_together_not_each_at_its_own_alpha(tmp_path):
    """48 cases, one of them 12% slower with 5% round noise: on its own p < 0.01 (the old gate's level
    per case flagged it), but it is one of 48 tests: Benjamini–Hochberg's q is far above 0.05."""
    rng = np.random.default_rng(5)
    ids = [f"c{i}" for i in range(48)]
    threads = {c: 1 if i % 2 else 2 for i, c in enumerate(ids)}
    base_rounds = {c: _rounds(rng, 1.0, 0.05) for c in ids}
    new_rounds = {c: _rounds(rng, 1.0, 0.05) for c in ids}
    new_rounds["c7"] = list(np.asarray(base_rounds["c7"]) * 1.12 * np.exp(0.01 * rng.standard_normal(5)))
    new_rounds["c7"] = [x * (1.0 if x > max(base_rounds["c7"]) else 1.1) for x in new_rounds["c7"]]  # complete separation
    base = _bench_run(tmp_path, "a", {c: (threads[c], base_rounds[c]) for c in ids})
    new = _bench_run(tmp_path, "b", {c: (threads[c], new_rounds[c]) for c in ids})
    from scipy.stats import mannwhitneyu

    assert mannwhitneyu(base_rounds["c7"], new_rounds["c7"]).pvalue < 0.01, "the old gate's test calls it"
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    c7 = next(c for c in diff.cases if c.id == "c7")
    assert c7.ratio > 1.1 and c7.p_value < 0.05 and c7.q_value > 0.05 and not c7.flagged
    assert all(c.q_value >= c.p_value for c in diff.cases if c.judged)
    assert not any(c.flagged for c in diff.cases)


def test_every_case_slower_while_the_machine_stood_still_is_one_regression(tmp_path):
    """Every case 1.3x slower and the yardstick unmoved: one regression for the thread count (the build
    slowed everything), not ten."""
    rng = np.random.default_rng(6)
    ids = [f"c{i}" for i in range(10)]
    yard = {"1": [0.4, 0.401, 0.399, 0.4, 0.4]}
    base = _bench_run(tmp_path, "a", {c: (1, _rounds(rng, 1 + i, 0.01)) for i, c in enumerate(ids)}, yard)
    new = _bench_run(tmp_path, "b", {c: (1, _rounds(rng, 1.3 * (1 + i), 0.01)) for i, c in enumerate(ids)}, {"1": [0.4, 0.4, 0.401, 0.399, 0.4]})
    diff = diff_runs(base, new, Gate.parse("median:10%"))
    assert not any(c.flagged for c in diff.cases)
    assert diff.common[0].verdict == "common regression"
    assert diff.verdict == "regression" and len(diff.regressions) == 1 and "stood still" in diff.regressions[0]


def test_too_noisy_to_judge_is_inconclusive_with_the_noise_and_the_rounds_it_needs(tmp_path):
    """30% round noise over 6 cases: a 10% change could not have been seen. The comparison is neither a
    pass nor a regression: `inconclusive`, exit 4, with the noise and the rounds it would take."""
    rng = np.random.default_rng(7)
    ids = [f"c{i}" for i in range(6)]
    for name in ("a", "b"):
        _bench_run(tmp_path, name, {c: (1, _rounds(rng, 1.0, 0.3)) for c in ids})
    diff = diff_runs(read_run(tmp_path / "runs" / "a"), read_run(tmp_path / "runs" / "b"), Gate.parse("median:10%"))
    assert diff.verdict == "inconclusive" and diff.ok, "no regression, but no pass either"
    assert any("too noisy to show a 10% change" in line and "round noise" in line for line in diff.inconclusive)
    proc = run_cli("compare", "a", "b", "--reports", str(tmp_path))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "verdict: inconclusive" in proc.stdout and "median round noise" in proc.stdout


def test_rounds_needed_follows_the_noise_and_the_spread_that_rounds_cannot_shrink():
    from harness.bench import detection_power, rounds_needed

    lone = 0.05 / 48
    quiet, noisy = rounds_needed(np.log(1.25), 0.03, 0.0, lone), rounds_needed(np.log(1.25), 0.08, 0.0, lone)
    assert 3 <= quiet < noisy <= 200
    assert rounds_needed(np.log(1.10), 0.03, 0.0, lone) > quiet, "a smaller change needs more rounds"
    assert rounds_needed(np.log(1.10), 0.03, 0.05, lone) is None, "a between-case spread of 5% hides a 10% change at any count"
    n = rounds_needed(np.log(1.25), 0.08, 0.0, lone)
    assert detection_power(np.log(1.25), float(np.sqrt(2 * 0.08 ** 2 / n)), 2 * n - 2, lone) >= 0.8
    assert detection_power(np.log(1.25), float(np.sqrt(2 * 0.08 ** 2 / (n - 1))), 2 * n - 4, lone) < 0.8


def test_one_slow_round_does_not_hide_a_real_change(tmp_path):
    """12 rounds a side; the slowed case (1.25x) also had one round 3x slow (a neighbour's burst on a
    shared machine): Welch's test on all rounds loses it in the inflated variance, the trimmed test
    (Yuen's, 10% a side) still catches it, and flags nothing else."""
    rng = np.random.default_rng(8)
    ids = [f"c{i}" for i in range(24)]
    base = {c: _rounds(rng, 1 + i, 0.03, n=12) for i, c in enumerate(ids)}
    new = {c: _rounds(rng, 1 + i, 0.03, n=12) for i, c in enumerate(ids)}
    new["c3"] = [x * 1.25 for x in new["c3"]]
    new["c3"][4] *= 3.0
    diff = diff_runs(_bench_run(tmp_path, "a", {c: (1, base[c]) for c in ids}), _bench_run(tmp_path, "b", {c: (1, new[c]) for c in ids}),
                     Gate.parse("median:10%"))
    assert [c.id for c in diff.cases if c.flagged] == ["c3"]
