"""Latency statistics from a worker's raw samples (computed here, never in the worker), and the
regression gate that compares two runs' samples."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.records import Timing


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


@dataclass(frozen=True)
class Gate:
    """A regression gate written as pytest-benchmark writes them: `median:10%` (also min, mean, p90)."""

    stat: str
    threshold: float  # fraction: 0.10 for 10%
    alpha: float = 0.01  # significance level of the Mann–Whitney U test on the raw samples

    # Gate statistic -> the Timing field it reads (tests/test_records.py checks each is one).
    STATS = {"min": "min_ms", "median": "p50_ms", "p50": "p50_ms", "mean": "mean_ms", "p90": "p90_ms", "p99": "p99_ms"}

    @classmethod
    def parse(cls, text: str, alpha: float = 0.01) -> Gate:
        try:
            stat, value = text.split(":")
            value = value.strip()
            threshold = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError:
            raise HarnessError(f"--fail-on {text!r} is not valid: expected STAT:PERCENT like median:10%") from None
        if stat not in cls.STATS:
            raise HarnessError(f"--fail-on {text!r}: unknown statistic {stat!r}, expected one of {', '.join(cls.STATS)}")
        if threshold <= 0:
            raise HarnessError(f"--fail-on {text!r}: the threshold must be positive")
        return cls(stat, threshold, alpha)

    def value(self, timing: Timing) -> float | None:
        """The gated statistic of a case's timing (None when it was not measured)."""
        return timing.stat(self.STATS[self.stat])


def significant_change(base_ms: list[float], new_ms: list[float], alpha: float = 0.01) -> tuple[bool, float | None]:
    """Two-sided Mann–Whitney U on the raw samples: is the difference more than noise? Needs at least
    5 samples a side; with fewer, no change can be called significant."""
    if len(base_ms) < 5 or len(new_ms) < 5:
        return False, None
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(base_ms, new_ms, alternative="two-sided").pvalue)
    return p < alpha, p


_GEMM = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info
n = int(sys.argv[1])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(7))
blas = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture")}
        for p in threadpool_info() if p.get("user_api") == "blas"]
print(json.dumps({"gflops": 2.0 * n**3 / best / 1e9, "blas": blas}))
"""


def gemm_probe(threads: int, n: int = 1024) -> dict | None:
    """This machine's float32 GEMM rate (NumPy's BLAS, best of 7) at a thread count, measured in a
    fresh process so the BLAS thread setting takes effect, and the BLAS that did it (threadpoolctl:
    library, version, threads it ran with): the yardstick for each runtime's GFLOP/s."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        out = subprocess.run([sys.executable, "-c", _GEMM, str(n)], env=env, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (subprocess.SubprocessError, ValueError):
        return None


def peak_gflops(threads: int, n: int = 1024) -> float | None:
    probe = gemm_probe(threads, n)
    return float(probe["gflops"]) if probe else None


def peak_notes(peaks: dict[str, float | None]) -> list[str]:
    """Where the GEMM peak drops as threads are added (on a shared or small machine it can): said, so
    that a runtime's lower GFLOP/s at more threads is not read as the runtime's fault alone."""
    known = sorted((int(t), v) for t, v in peaks.items() if v)
    return [f"GEMM peak drops from {a:.1f} GFLOP/s at {ta} thread(s) to {b:.1f} at {tb}"
            for (ta, a), (tb, b) in zip(known, known[1:]) if b < a]


class ReplayTimer:
    """A timer for pytest-benchmark that replays samples measured inside a worker: each
    (start, end) pair of calls is one sample apart, so pytest-benchmark's statistics, histograms,
    saved JSON and comparisons are of the worker's own timings, not of the round trip to it."""

    __name__ = "harness_worker_samples"

    def __init__(self, samples_s: list[float]):
        self._ticks = []
        clock = 0.0
        for s in samples_s:
            self._ticks += [clock, clock + s]
            clock += s + 1.0
        self._ticks.reverse()

    def __call__(self) -> float:
        return self._ticks.pop() if self._ticks else 0.0

    def __repr__(self) -> str:
        return "harness_worker_samples"


def replay_into(benchmark, samples_ms: list[float], extra_info: dict) -> None:
    """Feed worker samples to a pytest-benchmark fixture (one round per sample)."""
    if not samples_ms:
        return
    benchmark.extra_info.update(extra_info)
    benchmark._timer = ReplayTimer([s / 1000.0 for s in samples_ms])
    benchmark.pedantic(lambda: None, rounds=len(samples_ms), iterations=1, warmup_rounds=0)
