"""`harness compare A B`: what changed between two runs — verdicts, numerics, latency.

Latency changes are judged by the gate on round medians: a case is flagged only when the change of the
gated statistic is larger than the threshold AND the Mann–Whitney U test over the rounds calls it
significant, so noise on a shared machine does not raise alarms. Conformance runs (one round) are shown,
not judged, unless `--gate-conformance` asks for the test over their pooled iterations — a weaker
test, which the output then names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.bench import Gate, significant_change
from harness.errors import HarnessError
from harness.records import BAD_STATUSES, CaseResult
from harness.store import RunData

GOOD = ("pass", "xfail")


@dataclass
class CaseDiff:
    id: str
    base_status: str | None
    new_status: str | None
    base_ms: float | None = None
    new_ms: float | None = None
    ratio: float | None = None
    p_value: float | None = None
    significant: bool = False
    flagged: bool = False  # a regression beyond the gate
    improved: bool = False  # faster beyond the gate
    judged: bool = False  # both runs have enough rounds for a latency verdict
    on_samples: bool = False  # judged on pooled iterations (--gate-conformance), not on rounds
    not_judged: str = ""  # why latency is shown but never judged: other machines, or an emulated worker
    rounds: tuple[int, int] = (0, 0)
    numerics: str = ""  # "identical", "changed", "" (unknown)
    drift: dict[str, tuple] = field(default_factory=dict)  # output -> (base max_abs, new max_abs)

    @property
    def verdict_changed(self) -> bool:
        return self.base_status != self.new_status

    @property
    def verdict_regressed(self) -> bool:
        return self.base_status in GOOD and self.new_status in BAD_STATUSES + ("inconclusive",)

    @property
    def missing(self) -> bool:
        """In the baseline, absent from the new run (not run, cut short, or its line unreadable)."""
        return self.base_status is not None and self.new_status is None


@dataclass
class RunDiff:
    base: RunData
    new: RunData
    gate: Gate
    cases: list[CaseDiff]
    allow_missing: bool = False

    @property
    def machines(self) -> tuple[str | None, str | None]:
        """The machine labels of the two runs (None: not recorded, or several in a merged run)."""
        return tuple((run.meta.machine or {}).get("label") for run in (self.base, self.new))  # type: ignore[return-value]

    @property
    def across_machines(self) -> bool:
        a, b = self.machines
        return a != b

    @property
    def only_base(self) -> list[str]:
        return [c.id for c in self.cases if c.new_status is None]

    @property
    def only_new(self) -> list[str]:
        return [c.id for c in self.cases if c.base_status is None]

    @property
    def missing(self) -> list[str]:
        return [c.id for c in self.cases if c.missing]

    @property
    def regressions(self) -> list[str]:
        """Why the comparison fails, one line each (empty: it passes)."""
        out = [f"{c.id}: {c.base_status} → {c.new_status}" for c in self.cases if c.verdict_regressed]
        out += [f"{c.id}: latency {c.ratio:.2f}× (p={c.p_value:.2g})" for c in self.cases if c.flagged and c.ratio and c.p_value is not None]
        if not self.allow_missing:
            out += [f"{cid}: {self.base.run_id} has it, {self.new.run_id} does not" for cid in self.missing]
            if self.new.unreadable:
                out.append(f"{self.new.unreadable} unreadable line(s) in {self.new.folder / 'results.jsonl'}: their cases count as missing")
        return out

    @property
    def ok(self) -> bool:
        return not self.regressions


MIN_ROUNDS = 5  # per side: fewer rounds cannot show a significant change (the U test's smallest p-value)


def _numbers(values: list[float] | None) -> list[float]:
    return [s for s in values or [] if isinstance(s, (int, float))]


def run_kind(run: RunData) -> str:
    """`bench` for a run measured in rounds, else `conformance` (run, check, pytest)."""
    return "bench" if run.meta.options.get("command") == "bench" else "conformance"


def diff_runs(base: RunData, new: RunData, gate: Gate, allow_missing: bool = False, gate_conformance: bool = False) -> RunDiff:
    """Case by case. Two runs with no case in common are an error: nothing could be compared."""
    before: dict[str, CaseResult] = {r.id: r for r in base.results}
    after: dict[str, CaseResult] = {r.id: r for r in new.results}
    if not set(before) & set(after):
        raise HarnessError(f"runs {base.run_id} ({len(before)} cases) and {new.run_id} ({len(after)} cases) have no case in common: "
                           "expected two runs of the same fixtures, formats and runtimes")
    out = []
    for cid in list(dict.fromkeys(list(before) + list(after))):
        a, b = before.get(cid), after.get(cid)
        d = CaseDiff(cid, a.status if a else None, b.status if b else None)
        if a and b:
            va, vb = gate.value(a.timing), gate.value(b.timing)
            if a.emulated or b.emulated:
                # An emulated worker's time is the emulator's: never set beside another time.
                va = vb = None
                d.not_judged = f"emulated ({a.emulated or b.emulated}): timings not compared"
            elif (a.machine or "") != (b.machine or "") and a.machine and b.machine:
                d.not_judged = f"other machines ({a.machine}, {b.machine}): shown, not judged"
            if va is not None and vb is not None and va > 0:
                d.base_ms, d.new_ms, d.ratio = va, vb, vb / va
                # The unit of statistics is the round (an independent, interleaved measurement), never
                # the pooled iterations of one process: between-process noise on a shared machine is far
                # larger than within-process noise, so a test over iterations flags an A/A comparison.
                rounds_a, rounds_b = _numbers(a.timing.rounds_ms), _numbers(b.timing.rounds_ms)
                d.rounds = (len(rounds_a), len(rounds_b))
                d.judged = min(d.rounds) >= MIN_ROUNDS and not d.not_judged
                if not d.judged and gate_conformance and not d.not_judged:
                    # Asked for: the pooled iterations of one process each (within-run noise only).
                    samples_a, samples_b = _numbers(a.timing.samples_ms), _numbers(b.timing.samples_ms)
                    d.judged = d.on_samples = min(len(samples_a), len(samples_b)) >= MIN_ROUNDS
                    rounds_a, rounds_b = samples_a, samples_b
                if d.judged:
                    d.significant, d.p_value = significant_change(rounds_a, rounds_b, gate.alpha)
                    d.flagged = d.significant and d.ratio > 1 + gate.threshold
                    d.improved = d.significant and d.ratio < 1 / (1 + gate.threshold)
            da, db = a.output_digest or {}, b.output_digest or {}
            if da and db:
                d.numerics = "identical" if da == db else "changed"
            for name, ma in a.metrics.items():
                mb = b.metrics.get(name)
                d.drift[name] = (ma.max_abs, mb.max_abs if mb is not None else None)
        out.append(d)
    return RunDiff(base, new, gate, out, allow_missing)


def print_diff(diff: RunDiff, console) -> None:
    from rich.table import Table

    console.print(f"compare {diff.base.run_id} → {diff.new.run_id}  (gate {diff.gate.stat}:{diff.gate.threshold:.0%}, "
                  f"Mann–Whitney α={diff.gate.alpha})", highlight=False)
    kinds = (run_kind(diff.base), run_kind(diff.new))
    if kinds[0] != kinds[1]:
        console.print(f"[yellow]note:[/] comparing a {kinds[0]} run ({diff.base.run_id}) with a {kinds[1]} run ({diff.new.run_id}): "
                      "their timings were measured differently (rounds of a benchmark vs a few iterations of a conformance run)",
                      highlight=False, soft_wrap=True)
    if diff.across_machines:
        console.print(f"[yellow]note:[/] the runs are of different machines ({diff.machines[0] or 'unlabelled'} → "
                      f"{diff.machines[1] or 'unlabelled'}): latency is shown, never judged as a regression", highlight=False, soft_wrap=True)
    emulated = sum(1 for c in diff.cases if c.not_judged.startswith("emulated"))
    if emulated:
        console.print(f"[yellow]note:[/] {emulated} case(s) ran under an emulator: their timings are not compared", highlight=False)
    if any(c.on_samples for c in diff.cases):
        console.print("[yellow]note:[/] --gate-conformance: cases without rounds are judged on their pooled iterations, "
                      "which sees only the noise within one process", highlight=False, soft_wrap=True)
    for label, run in (("baseline", diff.base), ("new run", diff.new)):
        for problem in run.problems:
            console.print(f"  [yellow]{label}:[/] {problem}", highlight=False, soft_wrap=True)
    changed = [c for c in diff.cases if c.verdict_changed]
    if changed:
        table = Table(title="verdicts that changed")
        for col in ("case", "before", "after"):
            table.add_column(col)
        for c in changed:
            table.add_row(c.id, c.base_status or "(absent)", ("[red]" if c.verdict_regressed else "") + (c.new_status or "(absent)"))
        console.print(table)
    else:
        console.print("verdicts: none changed")
    drifted = [c for c in diff.cases if c.numerics == "changed"]
    console.print(f"numerics: {sum(c.numerics == 'identical' for c in diff.cases)} cases bit-identical, {len(drifted)} changed", highlight=False)
    if drifted:
        table = Table(title="numeric drift (max abs error vs baseline, before → after)")
        table.add_column("case")
        table.add_column("outputs")
        for c in drifted:
            table.add_row(c.id, "; ".join(f"{k}: {_n(a)} → {_n(b)}" for k, (a, b) in c.drift.items()))
        console.print(table)
    timed = sorted((c for c in diff.cases if c.ratio), key=lambda c: c.ratio or 1, reverse=True)
    unjudged = [c for c in timed if not c.judged and not c.not_judged]
    if unjudged:
        console.print(f"latency: {len(unjudged)} case(s) not judged: fewer than {MIN_ROUNDS} rounds on a side "
                      f"(`harness bench --rounds N` measures rounds; one run is one round; --gate-conformance judges "
                      f"conformance runs on their iterations)", highlight=False)
    if timed:
        table = Table(title=f"latency ({diff.gate.stat}), slowest change first")
        for col in ("case", "before ms", "after ms", "ratio", "rounds", "p-value", "flag"):
            table.add_column(col)
        for c in timed:
            flag = "[red]REGRESSION[/]" if c.flagged else ("[green]faster[/]" if c.improved else ("" if c.judged else "[dim]not judged[/]"))
            flag = f"[dim]{c.not_judged}[/]" if c.not_judged else flag
            table.add_row(c.id, _n(c.base_ms), _n(c.new_ms), f"{c.ratio:.2f}×", f"{c.rounds[0]}/{c.rounds[1]}", _n(c.p_value), flag)
        console.print(table)
    missing = diff.missing
    if missing:
        how = "allowed (--allow-missing)" if diff.allow_missing else "each is a regression (--allow-missing to accept)"
        console.print(f"[red]missing[/]: {len(missing)} case(s) of the baseline have no result in the new run, {how}: "
                      + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""), highlight=False, soft_wrap=True)
    if diff.new.unreadable:
        console.print(f"[red]unreadable[/]: {diff.new.unreadable} line(s) of the new run's results.jsonl could not be read: "
                      "their cases count as missing", highlight=False)
    flagged = [c for c in diff.cases if c.flagged]
    console.print(f"{len(flagged)} latency regression(s), {sum(c.verdict_regressed for c in diff.cases)} verdict regression(s), "
                  f"{len(missing)} missing case(s)", highlight=False)


def _n(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}"


def write_diff(diff: RunDiff, out: Path) -> dict[str, Path]:
    from harness.report.html import render

    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "index.html", "markdown": out / "compare.md"}
    ctx = {"diff": diff, "changed": [c for c in diff.cases if c.verdict_changed],
           "drifted": [c for c in diff.cases if c.numerics == "changed"],
           "timed": sorted((c for c in diff.cases if c.ratio), key=lambda c: c.ratio or 1, reverse=True)}
    paths["html"].write_text(render("compare.html.j2", **ctx))
    paths["markdown"].write_text(render("compare.md.j2", **ctx))
    return paths
