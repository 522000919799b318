"""Latency statistics from a worker's raw samples (computed here, never in the worker)."""

from __future__ import annotations

import numpy as np


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
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
