"""harness/drift.py: B against A for one output, the arithmetic the release report and the
cross-machine view (harness/report/agreement.py) share."""

import numpy as np

from harness.drift import output_drift
from harness.report.agreement import _drift


def test_non_finite_elements_agree_only_with_the_same_value_on_the_other_side():
    a = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    same = output_drift("o", a, a.copy())
    assert (same.identical, same.max_abs, same.nonfinite_mismatch) == (True, 0.0, 0)
    moved = output_drift("o", a, np.array([1.5, np.nan, np.inf, -np.inf], np.float32))
    assert (moved.identical, moved.max_abs, moved.max_ulp, moved.nonfinite_mismatch) == (False, 0.5, 1 << 22, 0)
    lost = output_drift("o", a, np.array([1.0, 2.0, -np.inf, -np.inf], np.float32))
    assert lost.nonfinite_mismatch == 2 and lost.max_abs == 0.0  # max_abs is over elements finite on both sides
    # The cross-machine view reads the same numbers: a NaN that appeared is an unbounded drift.
    assert _drift({"o": a}, {"o": a.copy()}) == 0.0
    assert _drift({"o": a}, {"o": np.array([1.5, np.nan, np.inf, -np.inf], np.float32)}) == 0.5
    assert _drift({"o": a}, {"o": np.array([1.0, 2.0, -np.inf, -np.inf], np.float32)}) == float("inf")
    assert _drift({"o": a}, {"o": a[:2]}) is None
