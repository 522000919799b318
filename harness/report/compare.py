"""`harness compare A B`: what changed between two runs — verdicts, numerics, latency.

Latency is judged over rounds (bench runs), all cases at once (harness.bench.judge_latency): each
case's change relative to the change every case of its thread count showed together (the machine's
drift between the two runs), tested on its round medians, the false alarms held to `--alpha` across
the whole comparison (Benjamini–Hochberg). A case too noisy to have shown a change of the gate's size
is inconclusive, and so is the comparison: not a pass. Conformance runs (one round) are shown, not
judged, unless `--gate-conformance` asks for the test over their pooled iterations — a weaker test,
which the output then names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.bench import METHOD, POWER, CaseRounds, CommonShift, Gate, LatencyJudgement, judge_latency
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
    threads: int | None = None
    relative: float | None = None  # the change relative to its thread count's common change (what is judged)
    q_value: float | None = None  # Benjamini–Hochberg adjusted p-value
    noise: float | None = None  # round noise (standard deviation of log round medians)
    power: float | None = None  # chance a change of the gate's size would have been caught
    inconclusive: bool = False  # judged, but too noisy to have caught a change of the gate's size (or see cause)
    cause: str = ""  # "noise" or "machine" (harness.bench.CaseJudgement)
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

    @property
    def new_failure(self) -> bool:
        """Absent from the baseline (a new case, or its baseline line lost) and not good in the new run:
        nothing says it was ever better, but nothing says it is fine either."""
        return self.base_status is None and self.new_status in BAD_STATUSES + ("inconclusive",)


@dataclass
class RunDiff:
    base: RunData
    new: RunData
    gate: Gate
    cases: list[CaseDiff]
    allow_missing: bool = False
    latency: LatencyJudgement | None = None
    allow_new: bool = False  # a case absent from the baseline that does not pass is not a regression

    @property
    def common(self) -> list[CommonShift]:
        return self.latency.common if self.latency else []

    @property
    def inconclusive(self) -> list[str]:
        """Why the comparison can neither pass nor fail on latency, one line each (empty: it can)."""
        out = [f"{s.threads} thread(s): {s.why}" for s in self.common if s.verdict == "inconclusive"]
        lat = self.latency
        if lat and lat.too_noisy(1 + self.gate.threshold):
            need = lat.rounds_needed.get(f"{1 + self.gate.threshold:.2f}")
            out.append(f"too noisy to show a {self.gate.threshold:.0%} change: median round noise {lat.median_noise or 0:.1%} over "
                       f"{len(lat.cases)} cases, {lat.rounds} rounds a side; "
                       + (f"{need} rounds a side would do (bench --rounds {need})" if need else
                          "no number of rounds would at this machine's noise (a quieter machine, or bench --pair)"))
        return out

    @property
    def noisy_cases(self) -> list[CaseDiff]:
        """Cases noisier than the rest that could not have shown the gate's change (said, and not judged)."""
        return [c for c in self.cases if c.inconclusive and c.cause == "noise"]

    @property
    def verdict(self) -> str:
        """`regression` (exit 1), `inconclusive` (exit 4: the machine was too noisy to tell) or `pass`."""
        return "regression" if self.regressions else ("inconclusive" if self.inconclusive else "pass")

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
        out += [f"{c.id}: latency {c.ratio:.2f}×, {c.relative:.2f}× beyond the common change (q={c.q_value:.2g})"
                for c in self.cases if c.flagged and c.ratio and c.relative and c.q_value is not None]
        out += [f"{s.threads} thread(s): {s.why}" for s in self.common if s.verdict == "common regression"]
        if not self.allow_new:
            out += [f"{c.id}: (absent) → {c.new_status}: not in {self.base.run_id}, and not a pass in {self.new.run_id}"
                    for c in self.cases if c.new_failure]
        if not self.allow_missing:
            out += [f"{cid}: {self.base.run_id} has it, {self.new.run_id} does not" for cid in self.missing]
            for label, run in (("new run", self.new), ("baseline", self.base)):
                if run.unreadable:  # a baseline cut short hides what it held: never a silent pass
                    out.append(f"{run.unreadable} unreadable line(s) in the {label}'s {run.folder / 'results.jsonl'}: "
                               "their cases cannot be compared")
        return out

    @property
    def ok(self) -> bool:
        return not self.regressions


MIN_ROUNDS = 5  # per side: with fewer rounds a case's own noise is not known well enough to judge it


def _numbers(values: list[float] | None) -> list[float]:
    return [s for s in values or [] if isinstance(s, (int, float))]


def run_kind(run: RunData) -> str:
    """`bench` for a run measured in rounds, else `conformance` (run, check, pytest)."""
    return "bench" if run.meta.options.get("command") == "bench" else "conformance"


def diff_runs(base: RunData, new: RunData, gate: Gate, allow_missing: bool = False, gate_conformance: bool = False,
              effects: tuple[float, ...] = (1.25,), allow_new: bool = False) -> RunDiff:
    """Case by case. Two runs with no case in common are an error: nothing could be compared."""
    before: dict[str, CaseResult] = {r.id: r for r in base.results}
    after: dict[str, CaseResult] = {r.id: r for r in new.results}
    if not set(before) & set(after):
        raise HarnessError(f"runs {base.run_id} ({len(before)} cases) and {new.run_id} ({len(after)} cases) have no case in common: "
                           "expected two runs of the same fixtures, formats and runtimes")
    out = []
    rounds: list[CaseRounds] = []
    for cid in list(dict.fromkeys(list(before) + list(after))):
        a, b = before.get(cid), after.get(cid)
        either = a or b
        d = CaseDiff(cid, a.status if a else None, b.status if b else None, threads=either.threads if either else None)
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
                if d.judged and min(rounds_a + rounds_b) > 0:
                    rounds.append(CaseRounds(cid, d.threads, rounds_a, rounds_b, d.ratio))
                else:
                    d.judged = False
            da, db = a.output_digest or {}, b.output_digest or {}
            if da and db:
                d.numerics = "identical" if da == db else "changed"
            for name, ma in a.metrics.items():
                mb = b.metrics.get(name)
                d.drift[name] = (ma.max_abs, mb.max_abs if mb is not None else None)
        out.append(d)
    latency = None
    if rounds:
        latency = judge_latency(rounds, gate.threshold, gate.alpha, (base.meta.machine_rounds, new.meta.machine_rounds), effects)
        by_id = {d.id: d for d in out}
        for j in latency.cases:
            d = by_id[j.id]
            d.relative, d.p_value, d.q_value, d.noise, d.power = j.relative, j.p_value, j.q_value, j.noise, j.power
            d.significant, d.flagged, d.improved, d.inconclusive, d.cause = j.q_value < gate.alpha, j.flagged, j.improved, j.inconclusive, j.cause
    return RunDiff(base, new, gate, out, allow_missing, latency, allow_new)


def print_diff(diff: RunDiff, console) -> None:
    from rich.table import Table

    console.print(f"compare {diff.base.run_id} → {diff.new.run_id}  (gate {diff.gate.stat}:{diff.gate.threshold:.0%}, "
                  f"false alarms held to {diff.gate.alpha:g} across the comparison)", highlight=False)
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
    from harness.report.release import runtime_version_changes

    for line in runtime_version_changes(diff.base.meta.runtimes or {}, diff.new.meta.runtimes or {}):
        console.print(f"[yellow]versions changed:[/] {line}", highlight=False, soft_wrap=True)
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
        for col in ("case", "before ms", "after ms", "ratio", "vs common", "noise", "rounds", "q-value", "flag"):
            table.add_column(col)
        for c in timed:
            table.add_row(c.id, _n(c.base_ms), _n(c.new_ms), f"{c.ratio:.2f}×", f"{c.relative:.2f}×" if c.relative else "–",
                          f"{c.noise:.1%}" if c.noise is not None else "–", f"{c.rounds[0]}/{c.rounds[1]}", _n(c.q_value), _flag(c))
        console.print(table)
    if diff.latency:
        print_latency_method(diff, console)
    missing = diff.missing
    if missing:
        how = "allowed (--allow-missing)" if diff.allow_missing else "each is a regression (--allow-missing to accept)"
        console.print(f"[red]missing[/]: {len(missing)} case(s) of the baseline have no result in the new run, {how}: "
                      + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""), highlight=False, soft_wrap=True)
    if diff.new.unreadable:
        console.print(f"[red]unreadable[/]: {diff.new.unreadable} line(s) of the new run's results.jsonl could not be read: "
                      "their cases count as missing", highlight=False)
    if diff.base.unreadable:
        how = "allowed (--allow-missing)" if diff.allow_missing else "a regression (--allow-missing to accept)"
        console.print(f"[red]unreadable[/]: {diff.base.unreadable} line(s) of the baseline's results.jsonl could not be read: "
                      f"the cases they held cannot be compared, {how}", highlight=False)
    new_failures = [c.id for c in diff.cases if c.new_failure]
    if new_failures:
        how = "allowed (--allow-new)" if diff.allow_new else "each is a regression (--allow-new to accept)"
        console.print(f"[red]new, not passing[/]: {len(new_failures)} case(s) absent from the baseline do not pass, {how}: "
                      + ", ".join(new_failures[:10]) + (" …" if len(new_failures) > 10 else ""), highlight=False, soft_wrap=True)
    flagged = [c for c in diff.cases if c.flagged] + [s for s in diff.common if s.verdict == "common regression"]
    console.print(f"{len(flagged)} latency regression(s), {sum(c.verdict_regressed for c in diff.cases)} verdict regression(s), "
                  f"{len(new_failures)} new case(s) not passing, {len(missing)} missing case(s)", highlight=False)
    noisy = diff.noisy_cases
    if noisy:
        console.print(f"[yellow]too noisy to judge[/]: {len(noisy)} case(s) could not have shown a {diff.gate.threshold:.0%} change "
                      f"(round noise {min(c.noise or 0 for c in noisy):.1%}–{max(c.noise or 0 for c in noisy):.1%}): "
                      + ", ".join(c.id for c in noisy[:5]) + (" …" if len(noisy) > 5 else ""), highlight=False, soft_wrap=True)
    for line in diff.inconclusive:
        console.print(f"[yellow]inconclusive[/]: {line}", highlight=False, soft_wrap=True)
    console.print(f"verdict: {diff.verdict}", highlight=False)


def _flag(c: CaseDiff) -> str:
    if c.not_judged:
        return f"[dim]{c.not_judged}[/]"
    if c.flagged:
        return "[red]REGRESSION[/]"
    if c.improved:
        return "[green]faster[/]"
    if c.inconclusive:
        return "[yellow]machine changed[/]" if c.cause == "machine" else f"[yellow]too noisy[/] (power {c.power or 0:.0%})"
    return "" if c.judged else "[dim]not judged[/]"


def print_latency_method(diff: RunDiff, console) -> None:
    """How latency was judged, in words: the method and its false-alarm control, what each thread count
    did together and what the machine's yardstick did, and how many rounds a change needs at this noise."""
    lat = diff.latency
    assert lat is not None
    console.print(f"latency method: {METHOD} (false-discovery rate {lat.alpha:g}); a case is judged only if a "
                  f"{diff.gate.threshold:.0%} change would have been caught with {POWER:.0%} power", highlight=False, soft_wrap=True)
    for s in lat.common:
        yard = (f"machine yardstick (GEMM) {s.machine:.2f}×" + (f" ({s.machine_ci[0]:.2f}–{s.machine_ci[1]:.2f})" if s.machine_ci else "")
                if s.machine is not None else "no machine yardstick in both runs")
        if s.estimated:
            console.print(f"  {s.threads} thread(s): {s.cases} cases moved {s.change:.2f}× together (between-case spread "
                          f"{s.spread:.1%}); {yard}" + (f": [bold]{s.verdict}[/] — {s.why}" if s.verdict != "steady" else ""),
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"  {s.threads} thread(s): {s.why}; {yard}", highlight=False, soft_wrap=True)
    if lat.median_noise is not None:
        needs = ", ".join(f"{effect}× needs {n if n else 'more than 200'} rounds a side" for effect, n in lat.rounds_needed.items())
        console.print(f"  round noise: median {lat.median_noise:.1%} over {len(lat.cases)} cases; at {POWER:.0%} power and "
                      f"Benjamini–Hochberg's bar for a single change ({lat.alpha:g}/{len(lat.cases)}): {needs}",
                      highlight=False, soft_wrap=True)


def _n(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}"


def write_diff(diff: RunDiff, out: Path) -> dict[str, Path]:
    from harness.report.html import render, write_files

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot write the comparison to {out}: {e.strerror or e} (expected a writable folder with free space)") from None
    paths = {"html": out / "index.html", "markdown": out / "compare.md"}
    ctx = {"diff": diff, "changed": [c for c in diff.cases if c.verdict_changed],
           "drifted": [c for c in diff.cases if c.numerics == "changed"], "method": METHOD,
           "timed": sorted((c for c in diff.cases if c.ratio), key=lambda c: c.ratio or 1, reverse=True)}
    write_files({paths["html"]: render("compare.html.j2", **ctx), paths["markdown"]: render("compare.md.j2", **ctx)})
    return paths
