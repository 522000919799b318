"""Comparator: metric values on known inputs, tolerance verdicts, quantisation round trips."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import compare
from harness.fixtures import Tolerance

F32 = Tolerance(atol=1e-5, rtol=1e-5)


def test_identical_outputs_have_zero_error_and_infinite_snr():
    x = np.linspace(-1, 1, 11, dtype=np.float32)
    m = compare.output_metrics(x, x.copy(), F32)
    assert m["max_abs"] == 0 and m["max_ulp"] == 0 and m["snr_db"] == math.inf
    assert m["cosine"] == pytest.approx(1.0)
    assert compare.check(m, F32, "y") == []


def test_known_differences():
    ref = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    out = np.array([1.0, 2.5, 4.0], dtype=np.float32)
    m = compare.output_metrics(ref, out, Tolerance(atol=0.0, rtol=0.0))
    assert m["max_abs"] == pytest.approx(0.5)
    assert m["max_rel"] == pytest.approx(0.25)
    assert m["mean_abs"] == pytest.approx(0.5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(0.25 / 3))
    assert m["frac_out_of_tol"] == pytest.approx(1 / 3)
    assert m["snr_db"] == pytest.approx(10 * math.log10(21 / 0.25))
    assert m["required_atol"] == pytest.approx(0.5)
    assert m["required_rtol"] == pytest.approx(0.25)


def test_ulp_distance_counts_representable_floats_across_zero():
    ref = np.array([0.0, 1.0], dtype=np.float32)
    out = np.array([-0.0, np.nextafter(np.float32(1), np.float32(2))], dtype=np.float32)
    assert compare.output_metrics(ref, out, F32)["max_ulp"] == 1
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    assert compare.output_metrics(np.array([tiny]), np.array([-tiny]), F32)["max_ulp"] == 2


def test_nan_and_inf_positions():
    ref = np.array([np.nan, 1.0, np.inf], dtype=np.float32)
    same = compare.output_metrics(ref, ref.copy(), F32)
    assert same["nan_mismatch"] == 0 and same["inf_mismatch"] == 0
    assert compare.check(same, F32, "y") == []
    moved = compare.output_metrics(ref, np.array([1.0, np.nan, -np.inf], dtype=np.float32), F32)
    assert moved["nan_mismatch"] == 2 and moved["inf_mismatch"] == 1
    assert "NaN/Inf" in compare.check(moved, F32, "y")[0]


def test_shape_mismatch_fails_with_both_shapes():
    m = compare.output_metrics(np.zeros((2, 3)), np.zeros((3, 2)), F32)
    reasons = compare.check(m, F32, "logits")
    assert reasons and "[3, 2]" in reasons[0] and "[2, 3]" in reasons[0]


def test_top_k_agreement_for_classifiers():
    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], dtype=np.float32)
    out = np.array([[0.1, 0.6, 0.3], [0.3, 0.5, 0.2]], dtype=np.float32)
    m = compare.output_metrics(ref, out, Tolerance(min_snr_db=0, min_top1=1.0), classifier=True)
    assert m["top1"] == 0.5
    assert m["top3"] == 1.0
    assert compare.check(m, Tolerance(min_top1=1.0), "p") == ["p: top-1 agreement 0.50 below 1.0"]


def test_quantised_class_judged_by_snr():
    ref = np.linspace(1, 2, 100)
    noisy = ref + 0.01
    tol = Tolerance(min_snr_db=30.0)
    m = compare.output_metrics(ref, noisy, tol)
    assert m["snr_db"] > 30 and compare.check(m, tol, "y") == []
    m = compare.output_metrics(ref, ref + 0.2, tol)
    assert compare.check(m, tol, "y")[0].startswith("y: SNR")


def test_judge_reports_missing_outputs():
    j = compare.judge({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2)}, {"a": F32, "b": F32})
    assert not j.passed and "b: missing" in j.reasons[0]


def test_quantize_dequantize_round_trip_within_half_a_step():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    scale, zero = 2 / 255, -1
    q = compare.quantize(x, scale, zero, "int8")
    assert q.dtype == np.int8
    assert np.max(np.abs(compare.dequantize(q, scale, zero) - x)) <= scale / 2 + 1e-7
    assert compare.quantize(np.array([100.0]), scale, zero, "int8")[0] == 127  # saturates


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1e3, 1e3, width=32)),
    hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1, 1, width=32)),
)
def test_required_tolerances_would_have_passed(ref, noise):
    noise = np.resize(noise, ref.shape)
    out = (ref + noise).astype(np.float32)
    m = compare.output_metrics(ref, out, F32)
    # The smallest atol (at the declared rtol) passes, as does the smallest rtol (at the declared atol).
    with_atol = Tolerance(atol=m["required_atol"] * (1 + 1e-9) + 1e-12, rtol=F32.rtol)
    assert compare.output_metrics(ref, out, with_atol)["frac_out_of_tol"] == 0
    if math.isfinite(m["required_rtol"]):
        with_rtol = Tolerance(atol=F32.atol, rtol=m["required_rtol"] * (1 + 1e-9) + 1e-12)
        assert compare.output_metrics(ref, out, with_rtol)["frac_out_of_tol"] == 0
