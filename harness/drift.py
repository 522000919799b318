"""Drift between two results of the same case: two builds or variants of a runtime or converter in one
run, or one case in two runs (two commits, two machines). The question across versions is not pass or
fail but what moved: bit-identical or not, by how much (max abs, max ULP), and, where the fixture has
a float64 oracle, which side is closer to it.

Reads only what the store kept: each case's outputs (`outputs/<case>.npz` in the run folder, under
the store's size cap) and, past the cap or for older runs, the output digests of results.jsonl, which
still tell identical from not. Knows nothing of runtimes or reports; harness/report/release.py and the
cross-machine view build on it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.records import CaseResult
from harness.store import read_outputs


@dataclass(frozen=True)
class OutputDrift:
    """One output, B against A."""

    name: str
    identical: bool | None  # bit for bit; None when neither outputs nor digests tell
    max_abs: float | None = None  # over elements finite on both sides; None when not measured
    max_ulp: int | None = None  # in the output's own float type (float32 or float64); |a-b| for integers
    differ: int | None = None  # how many elements are not bit-identical (NaN positions included)
    nonfinite_mismatch: int = 0  # elements NaN or infinite on one side and not the same on the other
    shape_changed: bool = False
    # Distance of each side to the fixture's float64 oracle (max abs), and which is closer: "A", "B",
    # "same" (equal distance) or None (no oracle).
    oracle_a: float | None = None
    oracle_b: float | None = None
    closer: str | None = None


@dataclass(frozen=True)
class CaseDrift:
    """Every output of one case, B against A, and the case's summary over its outputs."""

    outputs: dict[str, OutputDrift] = field(default_factory=dict)
    source: str = "outputs"  # "outputs" (kept tensors compared) or "digests" (identity only)

    @property
    def identical(self) -> bool | None:
        known = [o.identical for o in self.outputs.values()]
        if not known or any(k is None for k in known):
            return None if all(k is not False for k in known) else False
        return all(known)

    @property
    def max_abs(self) -> float | None:
        values = [o.max_abs for o in self.outputs.values() if o.max_abs is not None]
        return max(values) if values else None

    @property
    def max_ulp(self) -> int | None:
        values = [o.max_ulp for o in self.outputs.values() if o.max_ulp is not None]
        return max(values) if values else None

    @property
    def closer(self) -> str | None:
        """Which side is closer to the oracle over all outputs (by the largest distance), or None."""
        a = [o.oracle_a for o in self.outputs.values() if o.oracle_a is not None]
        b = [o.oracle_b for o in self.outputs.values() if o.oracle_b is not None]
        return _closer(max(a), max(b)) if a and b else None

    def to_dict(self) -> dict:
        return {"identical": self.identical, "max_abs": self.max_abs, "max_ulp": self.max_ulp, "closer": self.closer,
                "source": self.source, "outputs": {k: asdict(v) for k, v in self.outputs.items()}}


def _closer(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "A" if math.isnan(b) and not math.isnan(a) else "B" if math.isnan(a) and not math.isnan(b) else "same"
    return "same" if a == b else "A" if a < b else "B"


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise distance in units in the last place of the arrays' float type (float16/32/64):
    the number of representable values between them (-0 and +0 are one value). Integers: |a - b|."""
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype.kind != "f":
        return np.abs(a.astype(np.int64) - b.astype(np.int64))
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[dtype.itemsize]
    mask = {2: 0x7FFF, 4: 0x7FFFFFFF, 8: 0x7FFFFFFFFFFFFFFF}[dtype.itemsize]

    def ordered(x: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(x, dtype=dtype).view(ints).astype(np.int64)
        return np.where(i < 0, -(i & mask), i)

    # Python ints for float64: the difference of two int64 patterns can overflow int64.
    oa, ob = ordered(a), ordered(b)
    if dtype.itemsize == 8:
        return np.abs(oa.astype(object) - ob.astype(object))
    return np.abs(oa - ob)


def output_drift(name: str, a: np.ndarray, b: np.ndarray) -> OutputDrift:
    """B against A for one output's arrays."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return OutputDrift(name, identical=False, shape_changed=a.shape != b.shape)
    same_bits = np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    if a.dtype.kind not in "fiub":
        return OutputDrift(name, identical=same_bits, differ=0 if same_bits else int(np.count_nonzero(a != b)))
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    both = np.isfinite(fa) & np.isfinite(fb)
    if a.dtype.kind == "f":
        unequal = (a.view(f"u{a.dtype.itemsize}") != b.view(f"u{b.dtype.itemsize}"))
    else:
        unequal = a != b
    max_abs = float(np.abs(fa[both] - fb[both]).max()) if both.any() else 0.0
    ulps = ulp_distance(a[both], b[both]) if both.any() else np.zeros(0, dtype=np.int64)
    # NaN against NaN, or the same infinity, agrees; any other non-finite element is an unbounded difference.
    same_special = (np.isnan(fa) & np.isnan(fb)) | (np.isinf(fa) & (fa == fb))
    return OutputDrift(name, identical=same_bits, max_abs=max_abs, max_ulp=int(ulps.max()) if ulps.size else 0,
                       differ=int(np.count_nonzero(unequal)), nonfinite_mismatch=int(np.count_nonzero(~both & ~same_special)))


def _oracle_distance(result: CaseResult, name: str) -> float | None:
    """The case's max abs distance to the float64 oracle for one output (judged against the oracle when
    it is the reference itself, else its oracle metrics), or None when the fixture has no oracle."""
    metrics = result.metrics if result.baseline == "oracle" else result.oracle_metrics
    m = metrics.get(name)
    return m.number("max_abs") if m is not None else None


def case_drift(a: CaseResult, b: CaseResult, a_outputs: dict | None, b_outputs: dict | None) -> CaseDrift | None:
    """B against A for one case whose two sides both produced outputs; None when either produced none
    (an error, a crash: that is a verdict change, not drift)."""
    da, db = a.output_digest or {}, b.output_digest or {}
    if not da or not db:
        return None
    names = sorted(set(da) | set(db))
    out: dict[str, OutputDrift] = {}
    kept = a_outputs is not None and b_outputs is not None
    for name in names:
        oa, ob = _oracle_distance(a, name), _oracle_distance(b, name)
        closer = _closer(oa, ob) if oa is not None and ob is not None else None
        if kept and name in a_outputs and name in b_outputs:  # type: ignore[operator]
            d = output_drift(name, a_outputs[name], b_outputs[name])  # type: ignore[index]
        elif name in da and name in db:
            d = OutputDrift(name, identical=da[name] == db[name])
        else:
            d = OutputDrift(name, identical=False, shape_changed=True)  # an output appeared or vanished
        out[name] = OutputDrift(**{**asdict(d), "oracle_a": oa, "oracle_b": ob, "closer": closer})
    return CaseDrift(out, source="outputs" if kept else "digests")


def drift_between(a: CaseResult, a_run: Path, b: CaseResult, b_run: Path) -> CaseDrift | None:
    """B against A, reading each side's kept outputs from its run folder."""
    return case_drift(a, b, read_outputs(a_run, a.id), read_outputs(b_run, b.id))
