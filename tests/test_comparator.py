"""Comparator: metric values on known inputs, tolerance verdicts, quantisation round trips."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import comparator
from harness.comparator import Tolerance
from harness.records import OutputMetrics

F32 = Tolerance(atol=1e-5, rtol=1e-5)


def test_identical_outputs_have_zero_error_and_infinite_snr():
    x = np.linspace(-1, 1, 11, dtype=np.float32)
    m = comparator.output_metrics(x, x.copy(), F32)
    assert m.max_abs == 0 and m.max_ulp == 0 and m.snr_db == math.inf
    assert m.cosine == pytest.approx(1.0)
    assert comparator.check(m, F32, "y") == []


def test_known_differences():
    ref = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    out = np.array([1.0, 2.5, 4.0], dtype=np.float32)
    m = comparator.output_metrics(ref, out, Tolerance(atol=0.0, rtol=0.0))
    assert m.max_abs == pytest.approx(0.5)
    assert m.max_rel == pytest.approx(0.25)
    assert m.mean_abs == pytest.approx(0.5 / 3)
    assert m.rmse == pytest.approx(math.sqrt(0.25 / 3))
    assert m.frac_out_of_tol == pytest.approx(1 / 3)
    assert m.snr_db == pytest.approx(10 * math.log10(21 / 0.25))
    assert m.required_atol == pytest.approx(0.5)
    assert m.required_rtol == pytest.approx(0.25)


def test_ulp_distance_counts_representable_floats_across_zero():
    ref = np.array([0.0, 1.0], dtype=np.float32)
    out = np.array([-0.0, np.nextafter(np.float32(1), np.float32(2))], dtype=np.float32)
    assert comparator.output_metrics(ref, out, F32).max_ulp == 1
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    assert comparator.output_metrics(np.array([tiny]), np.array([-tiny]), F32).max_ulp == 2


def test_nan_and_inf_positions():
    ref = np.array([np.nan, 1.0, np.inf], dtype=np.float32)
    same = comparator.output_metrics(ref, ref.copy(), F32)
    assert same.nan_mismatch == 0 and same.inf_mismatch == 0
    assert comparator.check(same, F32, "y") == []
    moved = comparator.output_metrics(ref, np.array([1.0, np.nan, -np.inf], dtype=np.float32), F32)
    assert moved.nan_mismatch == 2 and moved.inf_mismatch == 1
    assert "NaN/Inf" in comparator.check(moved, F32, "y")[0]


def test_shape_mismatch_fails_with_both_shapes():
    m = comparator.output_metrics(np.zeros((2, 3)), np.zeros((3, 2)), F32)
    reasons = comparator.check(m, F32, "logits")
    assert reasons and "[3, 2]" in reasons[0] and "[2, 3]" in reasons[0]


def test_top_k_agreement_for_classifiers():
    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], dtype=np.float32)
    out = np.array([[0.1, 0.6, 0.3], [0.3, 0.5, 0.2]], dtype=np.float32)
    m = comparator.output_metrics(ref, out, Tolerance(min_snr_db=0, min_top1=1.0), classifier=True)
    assert m.top1 == 0.5
    assert m.top3 == 1.0
    assert comparator.check(m, Tolerance(min_top1=1.0), "p") == ["p: top-1 agreement 0.50 below 1.0"]


def test_quantised_class_judged_by_snr():
    ref = np.linspace(1, 2, 100)
    noisy = ref + 0.01
    tol = Tolerance(min_snr_db=30.0)
    m = comparator.output_metrics(ref, noisy, tol)
    assert m.snr_db > 30 and comparator.check(m, tol, "y") == []
    m = comparator.output_metrics(ref, ref + 0.2, tol)
    assert comparator.check(m, tol, "y")[0].startswith("y: SNR")


def test_judge_reports_missing_outputs():
    j = comparator.judge({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2)}, {"a": F32, "b": F32})
    assert not j.passed and "b: missing" in j.reasons[0]


def test_quantize_dequantize_round_trip_within_half_a_step():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    scale, zero = 2 / 255, -1
    q = comparator.quantize(x, scale, zero, "int8")
    assert q.dtype == np.int8
    assert np.max(np.abs(comparator.dequantize(q, scale, zero) - x)) <= scale / 2 + 1e-7
    assert comparator.quantize(np.array([100.0]), scale, zero, "int8")[0] == 127  # saturates


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1e3, 1e3, width=32)),
    hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1, 1, width=32)),
)
def test_required_tolerances_are_the_smallest_that_pass(ref, noise):
    """Checked against an independent computation: elementwise in plain Python floats, the smallest atol
    (at the declared rtol) is the largest per-element need; a hair above passes, a hair below fails."""
    noise = np.resize(noise, ref.shape)
    out = (ref + noise).astype(np.float32)
    m = comparator.output_metrics(ref, out, F32)
    needs = [max(abs(float(o) - float(r)) - F32.rtol * abs(float(r)), 0.0) for r, o in zip(ref.tolist(), out.tolist())]
    assert m.required_atol == pytest.approx(max(needs), rel=1e-12, abs=1e-300)
    above = Tolerance(atol=m.required_atol * (1 + 1e-9) + 1e-300, rtol=F32.rtol)
    assert comparator.output_metrics(ref, out, above).frac_out_of_tol == 0
    if m.required_atol > 0:
        below = Tolerance(atol=m.required_atol * (1 - 1e-6), rtol=F32.rtol)
        assert comparator.output_metrics(ref, out, below).frac_out_of_tol > 0, "a smaller atol would not have passed"
    rel_needs = [(max(abs(float(o) - float(r)) - F32.atol, 0.0) / abs(float(r))) if r != 0 else (math.inf if abs(float(o)) > F32.atol else 0.0)
                 for r, o in zip(ref.tolist(), out.tolist())]
    assert m.required_rtol == pytest.approx(max(rel_needs), rel=1e-9)
    if math.isfinite(m.required_rtol) and m.required_rtol > 0:
        below = Tolerance(atol=F32.atol, rtol=m.required_rtol * (1 - 1e-6))
        assert comparator.output_metrics(ref, out, below).frac_out_of_tol > 0


def test_a_wrong_dtype_fails_with_the_reason():
    ref = {"label": np.array([1, 2], np.int64)}
    j = comparator.judge(ref, {"label": np.array([1, 2], np.int32)}, {"label": F32}, dtypes={"label": np.dtype(np.int64)})
    assert not j.passed and j.reasons == ["label: dtype int32 differs from the signature's int64"]
    assert j.metrics["label"].dtype_mismatch and j.metrics["label"].max_abs == 0, "equal values do not excuse the dtype"
    same = comparator.judge(ref, {"label": np.array([1, 2], np.int64)}, {"label": F32}, dtypes={"label": np.dtype(np.int64)})
    assert same.passed
    # Against a float64 oracle, the promised dtype is the signature's, not the oracle's.
    oracle = comparator.judge({"y": np.ones(2, np.float64)}, {"y": np.ones(2, np.float32)}, {"y": F32}, dtypes={"y": np.dtype(np.float32)})
    assert oracle.passed


def test_an_extra_output_fails_with_the_reason():
    j = comparator.judge({"a": np.ones(2)}, {"a": np.ones(2), "z": np.zeros(3)}, {"a": F32})
    assert not j.passed and j.reasons == ["unexpected output(s) ['z']: the reference has only ['a']"]


@pytest.mark.parametrize("first, others, why", [
    ({"y": np.array([0.25, 0.5], np.float32)}, [{"y": np.array([0.25, 0.5], np.float32)}], "identical for 2 different input sets"),
    ({"y": np.zeros((3, 2), np.float32)}, [], "all zero"),
    ({"y": np.full((2, 2), np.nan, np.float32)}, [], "NaN/Inf everywhere"),
    ({"y": np.tile(np.array([0.1, 0.9], np.float32), (4, 1))}, [], "same for every one of the 4 rows"),
    ({"y": np.array([[3e-11, -2e-11]], np.float32)}, [], "largest magnitude 3e-11 is within atol=1e-05"),
    ({"y": np.array([], np.float32)}, [], "empty"),
])
def test_degenerate_references_are_named(first, others, why):
    assert why in comparator.degenerate(first, others, {"y": F32})["y"]


def test_a_reference_with_signal_is_not_degenerate():
    a = {"y": np.array([[0.1, 0.9], [0.7, 0.3]], np.float32), "label": np.array([1, 0], np.int64)}
    b = {"y": np.array([[0.2, 0.8], [0.6, 0.4]], np.float32), "label": np.array([1, 0], np.int64)}
    assert comparator.degenerate(a, [b], {"y": F32, "label": F32}) == {"label": comparator.degenerate(a, [b], {"y": F32, "label": F32})["label"]}
    assert "identical" in comparator.degenerate(a, [b], {"y": F32, "label": F32})["label"]
    c = {"y": b["y"], "label": np.array([0, 0], np.int64)}
    assert comparator.degenerate(a, [b, c], {"y": F32, "label": F32}) == {}, "one input set that changes the label is enough"
    # Equal labels across a batch can be real; quantised classes (no atol) are not judged by magnitude.
    assert comparator.degenerate({"label": np.array([3, 3, 3], np.int64)}, [], {"label": F32}) == {}
    assert comparator.degenerate({"y": np.array([1e-9, 2e-9], np.float32)}, [], {"y": Tolerance(min_snr_db=30.0)}) == {}


def test_judge_measures_top1_only_for_classifier_outputs():
    ref = {"p": np.array([[0.1, 0.7, 0.2]], np.float32), "v": np.array([[0.1, 0.7, 0.2]], np.float32)}
    j = comparator.judge(ref, {k: v.copy() for k, v in ref.items()}, {"p": F32, "v": F32}, classifiers=("p",))
    assert j.metrics["p"].top1 == 1.0 and j.metrics["v"].top1 is None


def test_a_nan_where_the_reference_has_a_number_fails_on_its_own():
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    out = np.array([1.0, np.nan, 3.0, 4.0], np.float32)
    m = comparator.output_metrics(ref, out, F32)
    assert m.nan_mismatch == 1 and m.inf_mismatch == 0 and m.frac_out_of_tol == 0.25
    assert comparator.check(m, F32, "y") == ["y: NaN/Inf at different positions (1 NaN, 0 Inf)", "y: 25.0% of elements beyond atol=1e-05 rtol=1e-05 (max_abs 0, max_rel 0)"]
    inf = comparator.output_metrics(ref, np.array([1.0, np.inf, 3.0, 4.0], np.float32), F32)
    assert inf.inf_mismatch == 1 and inf.nan_mismatch == 0 and comparator.check(inf, F32, "y")


def test_an_snr_rule_reports_no_elementwise_fraction():
    ref = np.linspace(1, 2, 50)
    m = comparator.output_metrics(ref, ref + 0.001, Tolerance(min_snr_db=15.0))
    assert m.frac_out_of_tol is None and m.snr_db > 15
    assert comparator.output_metrics(ref, ref + 0.001, F32).frac_out_of_tol is not None


@pytest.mark.parametrize("tol, fails", [(Tolerance(atol=1e-3), True), (Tolerance(atol=0.2), False), (Tolerance(rtol=1e-3), True),
                                        (Tolerance(rtol=0.2), False)])
def test_atol_only_and_rtol_only_rules_judge_alone(tol, fails):
    ref = np.array([1.0, 2.0], np.float32)
    m = comparator.output_metrics(ref, ref + 0.1, tol)
    assert bool(comparator.check(m, tol, "y")) == fails


def test_snr_and_top1_thresholds_are_inclusive():
    m = OutputMetrics(shape=[2], ref_shape=[2], nan_mismatch=0, inf_mismatch=0, snr_db=30.0, top1=0.75)
    assert comparator.check(m, Tolerance(min_snr_db=30.0, min_top1=0.75), "y") == []
    assert comparator.check(replace(m, snr_db=29.99), Tolerance(min_snr_db=30.0), "y") and comparator.check(replace(m, top1=0.74), Tolerance(min_top1=0.75), "y")


def test_cosine_of_all_zero_outputs():
    zero = np.zeros(3, np.float32)
    assert comparator.output_metrics(zero, zero, F32).cosine == 1.0
    assert comparator.output_metrics(zero, np.array([0.0, 1.0, 0.0], np.float32), F32).cosine == 0.0


def test_string_outputs_are_compared_exactly():
    """String outputs (a lookup's labels) have no distance: equal passes, one differing element fails and is counted."""
    tol = {"label": Tolerance(atol=1e-3, rtol=1e-3)}
    ref = {"label": np.array([[b"cat", b"dog"], [b"ant", b"bee"]], dtype="|S3")}
    assert comparator.judge(ref, {"label": ref["label"].copy()}, tol).passed
    other = ref["label"].copy()
    other[1, 0] = b"elk"
    j = comparator.judge(ref, {"label": other}, tol)
    assert not j.passed and j.metrics["label"].mismatched == 1 and j.metrics["label"].frac_out_of_tol == 0.25
    assert j.reasons == ["label: 1 of the string elements differ from the reference's"]
