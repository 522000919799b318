"""Agreement across back-ends and machines: for each artifact at one batch (fixture × format × device ×
batch × threads), which runtimes, variants and machines computed bit-identical outputs, the largest
drift between any two of them, and which is closest to the float64 oracle where the fixture has one.

Bit-identity comes from the output digests every result carries; drift needs the values, which the
store keeps for small outputs (outputs/<id>.npz, records.KEPT_OUTPUT_BYTES): for larger ones drift is
unknown and said so. Latency is shown per member, never judged: machines differ, and an emulated
member's time is the emulator's (marked, and left out of every latency comparison)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.drift import output_drift
from harness.records import CaseResult

Outputs = dict[str, np.ndarray]


@dataclass
class Member:
    """One result of the group: a runtime (or variant) on a machine."""

    label: str
    runtime: str
    machine: str | None
    status: str | None
    digest: tuple | None
    oracle_max_abs: float | None
    p50_ms: float | None
    emulated: str | None
    outputs: Outputs | None = field(default=None, repr=False)


@dataclass
class Group:
    key: str  # the case id without runtime and machine: fixture-format-device-bBATCH[-tT]
    members: list[Member]
    clusters: list[list[str]]  # labels of members with bit-identical outputs, largest cluster first
    max_drift: float | None  # largest |a - b| over every pair of members and every output; None: unknown
    drift_pair: tuple[str, str] | None
    drift_unknown: list[str]  # members whose outputs were not kept (too large, or an older run)
    closest: str | None  # closest to the float64 oracle (smallest max abs error against it)

    @property
    def identical(self) -> bool:
        return len(self.clusters) == 1


def _group_key(r: CaseResult) -> str:
    return f"{r.fixture}-{r.format}-{r.device}-b{r.batch}" + (f"-t{r.threads}" if r.threads else "")


def _drift(a: Outputs, b: Outputs) -> float | None:
    """The largest |a - b| over every output (harness/drift.py per output); infinite where a NaN or an
    infinity is not matched on the other side or a non-numeric output differs; None: not comparable."""
    worst = 0.0
    for name, x in a.items():
        y = b.get(name)
        if y is None:
            return None
        d = output_drift(name, x, y)
        if d.shape_changed:
            return None
        if d.max_abs is None:  # not numeric: equal or not
            if not d.identical:
                return float("inf")
            continue
        worst = max(worst, float("inf") if d.nonfinite_mismatch else d.max_abs)
    return worst


def agreement(results: list[CaseResult], outputs: Callable[[CaseResult], Outputs | None], many_machines: bool) -> list[Group]:
    """Groups of two or more results that produced outputs, in first-seen order."""
    by_key: dict[str, list[CaseResult]] = {}
    for r in results:
        if r.output_digest:
            by_key.setdefault(_group_key(r), []).append(r)
    groups = []
    for key, members in by_key.items():
        if len(members) < 2:
            continue
        ms = []
        for r in members:
            oracle = [m.max_abs for m in r.oracle_metrics.values() if m.max_abs is not None]
            label = f"{r.runtime} on {r.machine}" if many_machines and r.machine else r.runtime
            digest = tuple(sorted((r.output_digest or {}).items()))
            ms.append(Member(label, r.runtime, r.machine, r.status, digest, max(oracle) if oracle else None,
                             r.timing.stat("p50_ms"), r.emulated, outputs(r)))
        clusters: dict[tuple, list[str]] = {}
        for m in ms:
            clusters.setdefault(m.digest or (), []).append(m.label)
        worst, pair = 0.0, None
        known = [m for m in ms if m.outputs is not None]
        for i, a in enumerate(known):
            for b in known[i + 1:]:
                if a.digest == b.digest:
                    continue
                d = _drift(a.outputs or {}, b.outputs or {})
                if d is None:
                    d = float("inf")
                if d > worst or pair is None:
                    worst, pair = d, (a.label, b.label)
        unknown = [m.label for m in ms if m.outputs is None]
        if len(clusters) == 1:
            drift: float | None = 0.0
        elif pair is None or unknown:
            drift = None if pair is None else worst  # a lower bound when some are unknown
        else:
            drift = worst
        scored = [m for m in ms if m.oracle_max_abs is not None]
        closest = min(scored, key=lambda m: m.oracle_max_abs or 0.0).label if scored and len(clusters) > 1 else None
        groups.append(Group(key, ms, sorted(clusters.values(), key=len, reverse=True), drift, pair, unknown, closest))
    return groups


def machines_of(results: list[CaseResult]) -> list[str]:
    return list(dict.fromkeys(r.machine for r in results if r.machine))


def print_agreement(groups: list[Group], console, title: str = "agreement across back-ends and machines") -> None:
    from rich.table import Table

    if not groups:
        return
    same = sum(g.identical for g in groups)
    console.print(f"{title}: {same} of {len(groups)} artifacts bit-identical everywhere they ran", highlight=False)
    table = Table(title=f"{title} (bit-identical clusters; largest drift; closest to the float64 oracle)")
    for col in ("case", "bit-identical", "max drift", "between", "closest to oracle"):
        table.add_column(col)
    for g in groups:
        if g.identical:
            continue
        clusters = " | ".join(", ".join(c) for c in g.clusters)
        drift = "unknown (outputs not kept)" if g.max_drift is None else f"{g.max_drift:.3g}" + (" or more" if g.drift_unknown else "")
        table.add_row(g.key, clusters, drift, " vs ".join(g.drift_pair) if g.drift_pair else "–", g.closest or "–")
    if same < len(groups):
        console.print(table)


def drift_rows(groups: list[Group]) -> list[dict]:
    """The groups as plain rows for the HTML and Markdown reports."""
    return [{"key": g.key, "identical": g.identical, "clusters": g.clusters, "max_drift": g.max_drift,
             "drift_pair": list(g.drift_pair) if g.drift_pair else None, "unknown": g.drift_unknown, "closest": g.closest,
             "members": [{"label": m.label, "status": m.status, "oracle_max_abs": m.oracle_max_abs,
                          "p50_ms": m.p50_ms, "emulated": m.emulated} for m in g.members]}
            for g in groups]


__all__ = ["Group", "Member", "agreement", "drift_rows", "machines_of", "print_agreement"]
