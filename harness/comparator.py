"""Comparator: tolerances (what passes, per format class), metrics per output and the tolerance verdict.
Never touches a runtime.

The metrics are the stored records themselves (records.OutputMetrics): what is judged is what
results.jsonl keeps, with no dictionary in between."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from harness.records import OutputMetrics


@dataclass(frozen=True)
class Tolerance:
    """When a case passes. Float classes use atol/rtol (numpy.allclose semantics: |a-b| <= atol + rtol*|ref|);
    quantised classes use SNR and top-1 agreement, since elementwise bounds say little there."""

    atol: float | None = None
    rtol: float | None = None
    min_snr_db: float | None = None
    min_top1: float | None = None


# The format class decides which tolerance applies (design: conformance policy); each format declares
# its class once, in the format registry (harness.export.FORMATS, FormatSpec.tolerance_class;
# harness.export.format_class reads it).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5),
    "float16": Tolerance(atol=2e-3, rtol=2e-3),
    # A float32 format computed in bfloat16 (openvino@bf16): 8 significant bits, four times float16's error.
    "bfloat16": Tolerance(atol=1e-2, rtol=1e-2),
    "dynamic-range": Tolerance(min_snr_db=30.0, min_top1=1.0),
    "int8": Tolerance(min_snr_db=15.0, min_top1=0.75),
}


def describe(tol: Tolerance) -> str:
    """The rule a tolerance applies, in words: what a reader of a verdict needs to know."""
    parts = []
    if tol.atol is not None or tol.rtol is not None:
        parts.append(f"|out - ref| <= {tol.atol or 0:g} + {tol.rtol or 0:g}·|ref| everywhere")
    if tol.min_snr_db is not None:
        parts.append(f"SNR >= {tol.min_snr_db:g} dB")
    if tol.min_top1 is not None:
        parts.append(f"top-1 agreement >= {tol.min_top1:g} (classifier outputs)")
    return " and ".join(parts) or "no bound"


@dataclass
class Judgement:
    passed: bool
    metrics: dict[str, OutputMetrics]
    reasons: list[str] = field(default_factory=list)


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 bit patterns mapped to integers that are monotonic in the value (so -0 == +0)."""
    i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


# Histogram of element-wise absolute errors: bin 0 counts errors below 1e-10 (exact matches included),
# bin i (1..12) counts [1e(i-11), 1e(i-10)), the last bin counts errors of 100 and more.
ERROR_HIST_DECADES = tuple(range(-10, 3))


def error_histogram(diff: np.ndarray) -> list[int]:
    edges = [0.0] + [10.0**k for k in ERROR_HIST_DECADES] + [np.inf]
    counts, _ = np.histogram(diff, bins=edges)
    return [int(c) for c in counts]


def output_metrics(ref: np.ndarray, out: np.ndarray, tol: Tolerance, classifier: bool = False) -> OutputMetrics:
    """Every metric of the conformance policy for one output. `ref` is the baseline (TF reference or
    float64 oracle); both are compared in float64."""
    m = OutputMetrics(shape=list(out.shape), ref_shape=list(ref.shape), dtype=str(out.dtype))
    if ref.shape != out.shape:
        m.shape_mismatch = True
        return m
    if ref.dtype.kind in "SUO" or out.dtype.kind in "SUO":
        # Strings (and bytes) have no distance: every element must equal the baseline's.
        unequal = int(np.count_nonzero(np.asarray(ref, dtype=object) != np.asarray(out, dtype=object)))
        m.mismatched, m.frac_out_of_tol = unequal, (unequal / ref.size) if ref.size else 0.0
        return m
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    nan_mismatch = int(np.count_nonzero(np.isnan(r) != np.isnan(o)))
    inf_mismatch = int(np.count_nonzero((np.isinf(r) | np.isinf(o)) & ~((r == o) & np.isinf(r))))
    both = np.isfinite(r) & np.isfinite(o)
    r_f, o_f = r[both], o[both]
    diff = np.abs(o_f - r_f)
    mag = np.abs(r_f)
    n = r_f.size
    atol = tol.atol if tol.atol is not None else 0.0
    rtol = tol.rtol if tol.rtol is not None else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mag > 0, diff / mag, np.where(diff > 0, np.inf, 0.0))
        need_rtol = np.where(mag > 0, np.maximum(diff - atol, 0) / mag, np.where(diff > atol, np.inf, 0.0))
    out_of_tol = int(np.count_nonzero(diff > atol + rtol * mag)) + nan_mismatch + inf_mismatch
    signal, noise = float(np.sum(r_f**2)), float(np.sum((o_f - r_f) ** 2))
    norm = math.sqrt(float(np.sum(r_f**2)) * float(np.sum(o_f**2)))
    m = replace(
        m,
        max_abs=float(diff.max()) if n else 0.0,
        max_rel=float(rel.max()) if n else 0.0,
        mean_abs=float(diff.mean()) if n else 0.0,
        rmse=float(math.sqrt(noise / n)) if n else 0.0,
        max_ulp=int(np.abs(_ordered(o_f) - _ordered(r_f)).max()) if n else 0,
        cosine=float(np.dot(r_f, o_f) / norm) if norm > 0 else (1.0 if noise == 0 else 0.0),
        snr_db=(math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)),
        frac_out_of_tol=(out_of_tol / r.size) if r.size else 0.0,  # dropped below when the rule has no elementwise bound
        nan_mismatch=nan_mismatch,
        inf_mismatch=inf_mismatch,
        required_atol=float(np.maximum(diff - rtol * mag, 0).max()) if n else 0.0,
        required_rtol=float(need_rtol.max()) if n else 0.0,
        error_hist=error_histogram(diff),
    )
    if tol.atol is None and tol.rtol is None:
        # Judged by SNR/top-1 only: "the fraction beyond atol=0, rtol=0" would read as a failure that is not one.
        m.frac_out_of_tol = None
    if classifier and r.ndim >= 1 and r.shape[-1] > 1:
        rows_r = r.reshape(-1, r.shape[-1])
        rows_o = o.reshape(-1, o.shape[-1])
        top_r = rows_r.argmax(axis=1)
        k = min(5, r.shape[-1])
        top_k_o = np.argsort(-rows_o, axis=1)[:, :k]
        m.top1 = float(np.mean(rows_o.argmax(axis=1) == top_r))
        setattr(m, f"top{k}", float(np.mean([t in row for t, row in zip(top_r, top_k_o)])))
    return m


def check(metrics: OutputMetrics, tol: Tolerance, name: str) -> list[str]:
    """Why an output fails its tolerance; empty when it passes."""
    m = metrics
    if m.shape_mismatch:
        return [f"{name}: shape {m.shape} differs from the reference's {m.ref_shape}"]
    if m.mismatched is not None:
        return [f"{name}: {m.mismatched} of the string elements differ from the reference's"] if m.mismatched else []
    reasons = []
    if m.nan_mismatch or m.inf_mismatch:
        reasons.append(f"{name}: NaN/Inf at different positions ({m.nan_mismatch} NaN, {m.inf_mismatch} Inf)")
    if tol.atol is not None or tol.rtol is not None:
        if m.frac_out_of_tol is not None and m.frac_out_of_tol > 0:
            reasons.append(
                f"{name}: {m.frac_out_of_tol:.1%} of elements beyond atol={tol.atol} rtol={tol.rtol} "
                f"(max_abs {m.max_abs:.3g}, max_rel {m.max_rel:.3g})"
            )
    if tol.min_snr_db is not None and m.snr_db is not None and m.snr_db < tol.min_snr_db:
        reasons.append(f"{name}: SNR {m.snr_db:.1f} dB below {tol.min_snr_db} dB")
    if tol.min_top1 is not None and m.top1 is not None and m.top1 < tol.min_top1:
        reasons.append(f"{name}: top-1 agreement {m.top1:.2f} below {tol.min_top1}")
    return reasons


def judge(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], tolerances: dict[str, Tolerance],
          classifiers: tuple[str, ...] = (), dtypes: dict[str, np.dtype] | None = None) -> Judgement:
    """Judge every output against the baseline. `dtypes` are the dtypes the signature promises (the
    reference's, not a float64 oracle's): an output of another dtype fails, as does an output the
    baseline does not have."""
    metrics: dict[str, OutputMetrics] = {}
    reasons: list[str] = []
    for name, ref in reference.items():
        if name not in outputs:
            reasons.append(f"{name}: missing from the outputs (got {sorted(outputs)})")
            continue
        tol = tolerances[name]
        m = output_metrics(ref, outputs[name], tol, classifier=name in classifiers)
        metrics[name] = m
        want = None if dtypes is None else dtypes.get(name)
        if want is not None and np.dtype(outputs[name].dtype) != np.dtype(want):
            m.dtype_mismatch = True
            m.expected_dtype = str(np.dtype(want))
            reasons.append(f"{name}: dtype {outputs[name].dtype} differs from the signature's {np.dtype(want)}")
        reasons += check(m, tol, name)
    extra = sorted(set(outputs) - set(reference))
    if extra:
        reasons.append(f"unexpected output(s) {extra}: the reference has only {sorted(reference)}")
    return Judgement(passed=not reasons, metrics=metrics, reasons=reasons)


def degenerate(first: dict[str, np.ndarray], others: list[dict[str, np.ndarray]], tolerances: dict[str, Tolerance]) -> dict[str, str]:
    """Why comparing against a reference could not fail, per output (empty when every output carries
    signal). `first` is the reference for the case's inputs, `others` the same model's outputs for
    other input sets at the same batch: an output identical for every input set ignores its input.
    Float outputs are also degenerate when constant across the batch, all zero, not finite anywhere,
    or smaller in magnitude than the absolute tolerance (which would then pass any answer near zero).
    Integer outputs (labels) are judged on input dependence only: a batch of equal labels can be real."""
    why: dict[str, str] = {}
    for name, ref in first.items():
        ref = np.asarray(ref)
        if ref.size == 0:
            why[name] = "the output is empty"
            continue
        if others and all(name in o and np.array_equal(np.asarray(o[name]), ref, equal_nan=True) for o in others):
            why[name] = f"the output is identical for {len(others) + 1} different input sets: it does not depend on its input"
            continue
        if ref.dtype.kind != "f":
            continue
        finite = np.isfinite(ref)
        if not finite.any():
            why[name] = "the output is NaN/Inf everywhere"
        elif not np.any(ref[finite]):
            why[name] = "the output is all zero"
        elif ref.ndim >= 1 and ref.shape[0] > 1 and all(np.array_equal(ref[0], row, equal_nan=True) for row in ref[1:]):
            why[name] = f"the output is the same for every one of the {ref.shape[0]} rows of the batch"
        else:
            tol = tolerances.get(name)
            atol = tol.atol if tol is not None and tol.atol is not None else 0.0
            peak = float(np.max(np.abs(ref[finite])))
            if peak <= atol:
                why[name] = f"the output's largest magnitude {peak:.3g} is within atol={atol:g}: any answer near zero would pass"
    return why


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
