"""The latency regression gate that compares two runs' samples, and the machine probes (GEMM peak)
benchmarks are read against. The statistics of one run's samples are harness/stats.py's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from harness.errors import HarnessError
from harness.records import Timing


@dataclass(frozen=True)
class Gate:
    """A regression gate written as pytest-benchmark writes them: `median:10%` (also min, mean, p90)."""

    stat: str
    threshold: float  # fraction: 0.10 for 10%
    # The false-alarm rate across all the cases of one comparison (Benjamini–Hochberg): with every case
    # unchanged, the chance that any is flagged; not a level per case.
    alpha: float = 0.05

    # Gate statistic -> the Timing field it reads (tests/test_records.py checks each is one).
    STATS = {"min": "min_ms", "median": "p50_ms", "p50": "p50_ms", "mean": "mean_ms", "p90": "p90_ms", "p99": "p99_ms"}

    @classmethod
    def parse(cls, text: str, alpha: float = 0.05) -> Gate:
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
        if not 0 < alpha < 1:
            raise HarnessError(f"--alpha {alpha}: expected a false-alarm rate between 0 and 1, like 0.05")
        return cls(stat, threshold, alpha)

    def value(self, timing: Timing) -> float | None:
        """The gated statistic of a case's timing (None when it was not measured)."""
        return timing.stat(self.STATS[self.stat])


# --- the latency gate between two stored runs ------------------------------------------------------
#
# Model: log(round median) = case + machine state (per thread count, per run) + round noise. Between two
# runs the machine state moves for every case together (load, frequency, a neighbour on the other core);
# a case is judged on how far its own change stands out from the change all the cases of its thread
# count showed together, given its rounds' noise and how much the cases disagreed about that common
# change. The machine's yardstick (a GEMM measured in every round, `machine_rounds`) says whether the
# machine itself moved, independently of the runtimes being compared.

POWER = 0.8  # a case is judged only if a change of the gate's size would have been caught this often
COMMON_MIN_CASES = 5  # fewer cases at a thread count: their common change is not estimated from them
# Each side's rounds are trimmed by this fraction at each end (Yuen's test): from 10 rounds a side, one
# slow round on a shared machine no longer hides a real change; under 10 rounds nothing is trimmed.
TRIM = 0.1
METHOD = "Yuen's trimmed t-test (10% a side; Welch's under 10 rounds) on log round medians, relative to the common " \
         "change at each thread count; Benjamini–Hochberg across the comparison's cases"


@dataclass
class CaseRounds:
    """One case's rounds in both runs (what the gate reads)."""

    id: str
    threads: int | None
    base: list[float]
    new: list[float]
    ratio: float | None = None  # the gated statistic's ratio new/base (median:…, p90:…), for the threshold


@dataclass
class CaseJudgement:
    id: str
    change: float  # the case's own change, new/base (geometric mean of its rounds)
    relative: float  # that change relative to its thread count's common change (what is judged)
    noise: float  # the case's round noise: standard deviation of log round medians, both runs pooled
    p_value: float
    q_value: float = 1.0  # Benjamini–Hochberg adjusted
    power: float = 1.0  # chance that a change of the gate's size would have been significant
    flagged: bool = False
    improved: bool = False
    inconclusive: bool = False  # too noisy to have caught a change of the gate's size, or see `cause`
    cause: str = ""  # why inconclusive: "noise" (its rounds) or "machine" (a machine change too few cases can take out)


@dataclass
class CommonShift:
    """What every case of one thread count did together, and what the machine's yardstick did."""

    threads: int | None
    cases: int
    change: float  # median over the cases of their change (1.0: not estimated, too few cases)
    spread: float  # between-case spread of the changes beyond their rounds' noise (log; 0 when unknown)
    machine: float | None = None  # the yardstick's change new/base
    machine_ci: tuple[float, float] | None = None
    verdict: str = "steady"  # steady | machine changed | common regression | common improvement | inconclusive
    why: str = ""

    @property
    def estimated(self) -> bool:
        return self.cases >= COMMON_MIN_CASES


@dataclass
class LatencyJudgement:
    cases: list[CaseJudgement]
    common: list[CommonShift]
    threshold: float
    alpha: float
    median_noise: float | None = None
    rounds: int = 0  # rounds a side (the median case's fewer side)
    rounds_needed: dict[str, int | None] = field(default_factory=dict)  # effect ("1.10") -> rounds a side

    def too_noisy(self, effect: float) -> bool:
        """Could the typical case of this comparison not have shown a change of `effect` (1.25 for 25%)?"""
        need = self.rounds_needed.get(f"{effect:.2f}")
        return bool(self.cases) and (need is None or need > self.rounds)


def _logs(values: list[float]) -> np.ndarray:
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and x > 0], dtype=np.float64)
    return np.log(v)


def _side(x: np.ndarray) -> tuple[float, float, int]:
    """One run's rounds: their trimmed mean, their winsorized variance and how many rounds remain (h)."""
    from scipy.stats import mstats, trim_mean

    g = int(TRIM * len(x))
    winsorized = np.asarray(mstats.winsorize(x, limits=(TRIM, TRIM)), dtype=np.float64)
    return float(trim_mean(x, TRIM)), float(np.var(winsorized, ddof=1)), len(x) - 2 * g


def _yuen(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Yuen's two-sample test, as scipy.stats.ttest_ind(trim=TRIM) computes it, in parts (the spread
    between cases is added to its variance): the change in trimmed means, its variance, its degrees of
    freedom, and the rounds' pooled winsorized standard deviation. Without trimming it is Welch's test."""
    (ma, wa, ha), (mb, wb, hb) = _side(a), _side(b)
    da, db = (len(a) - 1) * wa / (ha * (ha - 1)), (len(b) - 1) * wb / (hb * (hb - 1))
    var = da + db
    df = float(ha + hb - 2) if var == 0 else var ** 2 / (da ** 2 / (ha - 1) + db ** 2 / (hb - 1))
    noise = float(np.sqrt(((len(a) - 1) * wa + (len(b) - 1) * wb) / (len(a) + len(b) - 2)))
    return mb - ma, var, float(df), noise


def detection_power(effect: float, se: float, df: float, alpha: float) -> float:
    """The chance that a two-sided t-test at level `alpha` calls a true change of `effect` (log) when
    the difference is estimated with standard error `se` on `df` degrees of freedom (noncentral t)."""
    from scipy.stats import nct, t

    if se <= 0:
        return 1.0
    crit = float(t.ppf(1 - alpha / 2, df))
    nc = abs(effect) / se
    # Both tails as upper tails (P(T < -c | nc) = P(T > c | -nc)): scipy's lower tail of a far-shifted
    # noncentral t comes back NaN; a tail too small to compute is 0.
    return float(sum(0.0 if np.isnan(x) else x for x in (nct.sf(crit, df, nc), nct.sf(crit, df, -nc))))


def rounds_needed(effect: float, noise: float, spread: float, alpha: float, power: float = POWER, most: int = 200) -> int | None:
    """Rounds a side for a change of `effect` (log) to be caught with `power`, at round noise `noise` and
    a between-case spread `spread` (which more rounds do not shrink); None when no count up to `most` does.
    Power grows with the rounds: a bisection."""

    def enough(n: int) -> bool:
        h = n - 2 * int(TRIM * n)  # rounds left after trimming
        return detection_power(effect, float(np.sqrt(2 * noise ** 2 * (n - 1) / (h * (h - 1)) + spread ** 2)), 2 * h - 2, alpha) >= power

    lo, hi = 3, most
    if not enough(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def machine_shift(base: list[float] | None, new: list[float] | None) -> tuple[float, tuple[float, float] | None] | None:
    """The yardstick's change new/base (geometric means of its rounds) and a 95% Welch interval."""
    from scipy.stats import ttest_ind

    a, b = _logs(base or []), _logs(new or [])
    if len(a) == 0 or len(b) == 0:
        return None
    change = float(np.exp(b.mean() - a.mean()))
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return change, None
    ci = ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    return change, (float(np.exp(ci.low)), float(np.exp(ci.high)))


def judge_latency(cases: list[CaseRounds], threshold: float, alpha: float,
                  machine: tuple[dict | None, dict | None] = (None, None), effects: tuple[float, ...] = (1.25,)) -> LatencyJudgement:
    """Every case at once. Per thread count: the common change (median of the cases' changes) and the
    spread of the cases around it beyond their own noise; each case's change relative to the common one
    is tested (Yuen's trimmed t on log round medians, the spread added to its variance), the p-values adjusted
    together (Benjamini–Hochberg, scipy), and a case whose change of the gate's size would not have been
    caught with POWER is inconclusive. A common change beyond the threshold is the machine's when the
    yardstick moved with it, one regression when the yardstick stood still, else inconclusive."""
    from scipy.stats import false_discovery_control, t

    limit = float(np.log1p(threshold))
    rows = []
    for c in cases:
        a, b = _logs(c.base), _logs(c.new)
        if len(a) < 2 or len(b) < 2:
            continue
        change, var, df, noise = _yuen(a, b)
        rows.append((c, change, var, df, noise))
    common: list[CommonShift] = []
    center: dict = {}
    spread: dict = {}
    base_machine, new_machine = machine
    for threads in sorted({c.threads for c, *_ in rows}, key=lambda x: (x is None, x or 0)):
        group = [r for r in rows if r[0].threads == threads]
        shift = CommonShift(threads, len(group), 1.0, 0.0)
        key = str(threads)
        yard = machine_shift((base_machine or {}).get(key), (new_machine or {}).get(key))
        if yard:
            shift.machine, shift.machine_ci = yard
        if shift.estimated:
            changes = np.asarray([r[1] for r in group])
            mid = float(np.median(changes))
            mad = 1.4826 * float(np.median(np.abs(changes - mid)))
            shift.change = float(np.exp(mid))
            shift.spread = float(np.sqrt(max(0.0, mad ** 2 - float(np.median([r[2] for r in group])))))
            center[threads], spread[threads] = mid, shift.spread
            _classify(shift, threshold)
        else:
            # Too few cases to tell their common change from their own. The yardstick is no stand-in for
            # it (a GEMM on two busy cores can slow 100x while a model slows 1.5x): the cases are judged
            # as measured where the yardstick stood still, and not at all where it moved.
            center[threads], spread[threads] = 0.0, 0.0
            up = 1 + threshold
            if shift.machine is not None and not 1 / up <= shift.machine <= up:
                shift.verdict = "inconclusive"
                shift.why = (f"the machine changed (its yardstick moved {shift.machine:.2f}×) and {len(group)} case(s) are too few "
                             f"to take that out ({COMMON_MIN_CASES} or more a thread count)")
            elif shift.machine_ci is not None and 1 / (1 + threshold / 2) <= shift.machine_ci[0] and shift.machine_ci[1] <= 1 + threshold / 2:
                shift.why = f"{len(group)} case(s), judged as measured: the machine's yardstick stood still ({_ci(shift.machine_ci)})"
            else:
                shift.why = f"{len(group)} case(s), judged as measured, with no drift taken out (" + (
                    "no yardstick in both runs)" if shift.machine is None else f"the yardstick moved {shift.machine:.2f}×, {_ci(shift.machine_ci)})")
        common.append(shift)
    unjudgeable = {s.threads for s in common if s.verdict == "inconclusive" and not s.estimated}
    judged = []
    for c, d, var, df, pooled in rows:
        rel = d - center[c.threads]
        se = float(np.sqrt(var + spread[c.threads] ** 2))
        if se == 0:
            p = 0.0 if rel != 0 else 1.0
        else:
            p = float(2 * t.sf(abs(rel) / se, df))
        judged.append(CaseJudgement(c.id, float(np.exp(d)), float(np.exp(rel)), pooled, p))
    if judged:
        q = false_discovery_control([j.p_value for j in judged], method="bh")
        lone = alpha / len(judged)  # the bar Benjamini–Hochberg sets for a single change among them all
        for j, qv, (c, _d, var, df, _pooled) in zip(judged, q, rows, strict=True):
            j.q_value = float(qv)
            # The threshold applies to the gated statistic's change, relative to the common change.
            rel_stat = (c.ratio if c.ratio else j.change) / float(np.exp(center[c.threads]))
            significant = j.q_value < alpha
            j.flagged = significant and rel_stat > 1 + threshold
            j.improved = significant and rel_stat < 1 / (1 + threshold)
            j.power = detection_power(limit, float(np.sqrt(var + spread[c.threads] ** 2)), df, lone)
            j.inconclusive = not (j.flagged or j.improved) and j.power < POWER
            j.cause = "noise" if j.inconclusive else ""
            if c.threads in unjudgeable:
                j.flagged = j.improved = False
                j.inconclusive, j.cause = True, "machine"
    out = LatencyJudgement(judged, common, threshold, alpha)
    if rows:
        out.median_noise = float(np.median([r[4] for r in rows]))
        out.rounds = int(np.median([min(len(c.base), len(c.new)) for c, *_ in rows]))
        worst_spread = max(spread.values(), default=0.0)
        lone = alpha / len(rows)
        for effect in sorted({round(1 + threshold, 4), *effects}):
            out.rounds_needed[f"{effect:.2f}"] = rounds_needed(float(np.log(effect)), out.median_noise, worst_spread, lone)
    return out


def _classify(shift: CommonShift, threshold: float) -> None:
    """Name a common change beyond the threshold: the machine's (its yardstick moved the same way, beyond
    the threshold), the build's (the yardstick's interval lies within half the threshold), or neither."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    if down <= shift.change <= up:
        return
    slower = shift.change > 1
    moved = shift.machine is not None and (shift.machine > up if slower else shift.machine < down)
    still = shift.machine_ci is not None and 1 / (1 + threshold / 2) <= shift.machine_ci[0] and shift.machine_ci[1] <= 1 + threshold / 2
    what = f"every case at {shift.threads} thread(s) moved {shift.change:.2f}× together"
    if moved:
        shift.verdict, shift.why = "machine changed", f"{what}, and so did the machine's yardstick ({shift.machine:.2f}×)"
    elif still:
        shift.verdict = "common regression" if slower else "common improvement"
        shift.why = f"{what} while the machine's yardstick stood still ({_ci(shift.machine_ci)})"
    else:
        shift.verdict = "inconclusive"
        shift.why = f"{what}; the machine's yardstick " + (
            f"moved {shift.machine:.2f}× ({_ci(shift.machine_ci)}): cannot tell the machine from the build"
            if shift.machine is not None else "was not measured in both runs: cannot tell the machine from the build")


def _ci(ci: tuple[float, float] | None) -> str:
    return f"95% interval {ci[0]:.2f}–{ci[1]:.2f}×" if ci else "no interval"


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


_PROBE = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
n, least_s = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
out = {}
for t in json.loads(sys.argv[3]):
    with threadpool_limits(t, user_api="blas"):
        for _ in range(3):
            a @ b
        samples, end = [], time.perf_counter() + least_s
        while len(samples) < 15 or (time.perf_counter() < end and len(samples) < 1000):
            s = time.perf_counter_ns(); a @ b; samples.append(time.perf_counter_ns() - s)
    out[str(t)] = sorted(samples)[len(samples) // 2] / 1e6
print(json.dumps(out))
"""


def machine_probe(threads: list[int], n: int = 256, least_s: float = 0.05) -> dict[str, float | None]:
    """The machine's yardstick for one round: the median time (ms) of a fixed float32 GEMM at each
    thread count, in a fresh process (it ends, so no BLAS thread keeps spinning into the next case).
    NumPy's BLAS, not a runtime under test: a new runtime build cannot move it, only the machine can.
    Its median, not its best, because the round medians it stands beside are medians too."""
    import os
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(n), str(least_s), json.dumps(sorted(set(threads)))],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, OPENBLAS_NUM_THREADS=str(max(threads))))
        values = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (subprocess.SubprocessError, ValueError):
        values = {}
    return {str(t): values.get(str(t)) for t in sorted(set(threads))}


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
