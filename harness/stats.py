"""The statistics of measured latencies, in one place: a worker's raw samples (computed here, never in
the worker), rounds of the same case (the median of the round medians, its interval, the noise), and
paired rounds (B against A, run back to back). Used by the engine, the orchestrator, the benchmarks and
the self-tests; imports nothing of the harness but its records (the timing record it fills in)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from harness.records import Timing


def latency_stats(samples_ns: Sequence[float]) -> dict[str, Any]:
    """The statistics of raw samples (ns) in ms, under their Timing field names (Timing(**stats))."""
    if not samples_ns:
        return {}
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    q = np.percentile(ms, [10, 25, 50, 75, 90, 99])
    mean = float(ms.mean())
    return {
        "min_ms": float(ms.min()),
        "p10_ms": float(q[0]),
        "p50_ms": float(q[2]),
        "p90_ms": float(q[4]),
        "p99_ms": float(q[5]),
        "mean_ms": mean,
        "stdev_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "iqr_ms": float(q[3] - q[1]),
        "throughput_per_s": 1000.0 / mean if mean > 0 else float("inf"),
    }


def round_statistics(round_medians: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """p50 as the median of the rounds' medians, its bootstrap 95% interval over rounds, and the case's
    own between-round noise (coefficient of variation of the round medians)."""
    r = np.asarray(round_medians, dtype=np.float64)
    out: dict = {"rounds": len(r), "rounds_ms": [float(x) for x in r]}
    if len(r) == 0:
        return out
    out["p50_ms"] = float(np.median(r))
    if len(r) >= 2:
        rng = np.random.default_rng(seed)
        boot = np.median(rng.choice(r, size=(resamples, len(r)), replace=True), axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out["p50_ci_ms"] = [float(lo), float(hi)]
        out["round_cv"] = float(np.std(r, ddof=1) / np.mean(r)) if np.mean(r) > 0 else 0.0
    return out


def rounds_timing(timings: list[Timing]) -> Timing:
    """One timing record from several rounds of the same case: the cold start of the first round, the
    pooled samples for the percentiles, and per round its median; p50 is the median of the round
    medians, with a bootstrap 95% interval over rounds and the between-round noise (coefficient of
    variation of the round medians)."""
    samples = [s for t in timings for s in t.samples_ms or []]
    # The rounds' statistics (p50 the median of the round medians) over the pooled samples' percentiles.
    stats = {**latency_stats([int(s * 1e6) for s in samples]), "samples_ms": samples, "iterations": len(samples),
             **round_statistics([float(statistics.median(t.samples_ms or [])) for t in timings])}
    return replace(timings[0], **stats)


PAIR_MIN_EFFECT = 0.05  # a difference smaller than 5% is not called, however consistent


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval for the median from order statistics (the sign test's): the widest
    inner pair (x_k, x_{n-k+1}) whose coverage is at least `confidence`, and that coverage. None when
    n is too small for it (n < 6 at 95%). A bootstrap of the median over five rounds is far too narrow."""
    from scipy.stats import binom  # imported when asked: scipy is slow to import

    x = sorted(values)
    n = len(x)
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * float(binom.cdf(k - 1, n, 0.5))
        if coverage >= confidence:
            best = (x[k - 1], x[n - k], coverage)
        else:
            break
    return best


def paired(a_rounds_ms: list[float], b_rounds_ms: list[float]) -> dict | None:
    """B against A, measured in the same rounds: the ratio B/A of each round's medians (the two ran back
    to back, so machine drift cancels), its median over rounds and a 95% distribution-free interval. B is
    called slower only when the whole interval lies above 1 and the median ratio is at least 5% above it
    (and faster symmetrically); with too few rounds, nothing is called. None when no round has both."""
    n = min(len(a_rounds_ms), len(b_rounds_ms))
    if n == 0:
        return None
    ratios = [float(x) for x in np.asarray(b_rounds_ms[:n]) / np.asarray(a_rounds_ms[:n])]
    item: dict = {"rounds": n, "ratios": ratios, "ratio": float(np.median(ratios)), "verdict": "too few rounds (6 or more for a 95% interval)"}
    interval = median_interval(ratios)
    if interval is not None:
        lo, hi, coverage = interval
        item["ci"], item["coverage"] = [lo, hi], coverage
        if lo > 1 and item["ratio"] >= 1 + PAIR_MIN_EFFECT:
            item["verdict"] = "B slower"
        elif hi < 1 and item["ratio"] <= 1 / (1 + PAIR_MIN_EFFECT):
            item["verdict"] = "B faster"
        else:
            item["verdict"] = "no difference shown"
    return item
