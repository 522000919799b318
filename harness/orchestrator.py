"""One run, from plan to stored verdicts: the single loop behind `harness run`, `check`, `bench`, the
pytest plugin and the self-tests.

A run plans its cases (recorded in run.json up front), exports what they need, runs them one by one,
stores each result as soon as it exists, and closes with a state: `complete`; `interrupted` on SIGINT or
SIGTERM (the line being written is finished, workers and containers are killed, exit 130/143);
`failed` on a harness-level error such as a full disk. Only a complete run becomes `reports/latest`;
`harness run --resume RUN` runs the planned cases that have no result yet into the same folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.cases import Case, Deviation
from harness.engine import Engine, Options
from harness.errors import HarnessError
from harness.export import Exporter
from harness.export.locks import LockTimeout
from harness.fixtures import Fixture
from harness.records import CaseResult, Timing, summarize
from harness.stats import paired, rounds_timing
from harness.store import RunStore, planned_cases, read_run


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a run. A BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread for the duration."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Outcome:
    results: list[CaseResult]
    summary: dict
    state: str
    reason: str | None = None
    run_dir: Path | None = None
    planned: int = 0
    peaks: dict = field(default_factory=dict)
    repairs: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.state == "interrupted":
            return 130 if self.reason == "SIGINT" else 143
        if self.state == "failed":
            return 2
        return 0 if self.summary["ok"] else 1


class Orchestrator:
    """Runs a list of cases into one run folder (or none: `reports=None`, as the pytest plugin may)."""

    def __init__(self, cases: list[Case], fixtures: dict[str, Fixture], options: Options, reports: Path | None,
                 run_options: dict, *, resume: Path | None = None, refresh: bool = False, bench: bool = False,
                 bisect: bool = False, allow_inconclusive: bool = False, deviations: list[Deviation] | None = None,
                 scratch: Path | None = None, run_id: str | None = None, jobs: int = 1, keep: dict[str, bytes] | None = None):
        # Each case once (a selection that names a batch or runtime twice): a case is run and stored once.
        self.cases, self.fixtures, self.options = list({c.id: c for c in cases}.values()), fixtures, options
        # `run -j N` (harness/parallel.py): N exports and N shares of the cases at once; benchmarks never.
        self.jobs = 1 if bench or options.rounds > 1 else max(1, jobs)
        self._engines: list[Engine] = []  # the other shares' engines (-j)
        self._store_lock = threading.Lock()
        self.bench, self.bisect, self.allow_inconclusive = bench, bisect, allow_inconclusive
        self.results: list[CaseResult] = []
        # A resumed run's summary covers the results it already had, too.
        earlier = read_run(resume) if resume is not None else None
        self.earlier: list[CaseResult] = earlier.results if earlier is not None else []
        # What each fixture's artifacts are made from (the user's model file, the fixture's code): a
        # resume must find the same, or its cases would judge another model than the results it keeps.
        sources = {name: run_digest(fixtures[name]) for name in dict.fromkeys(c.fixture for c in cases)}
        if earlier is not None:
            _check_sources(earlier.folder, earlier.meta.sources, sources)  # before anything of the run is touched
        self.exporter = Exporter(refresh=refresh)
        self.store: RunStore | None = None
        if reports is not None:
            planned = None if resume is not None else [c.record() for c in self.cases]
            self.store = RunStore(reports, run_options, run_id=run_id, planned=planned, resume=resume, keep=keep)
            try:
                self.store.set("sources", {**(self.store.meta.sources or {}), **sources})
            except BaseException:
                self.store.release()
                raise
        if scratch is None:
            if self.store is None:
                raise HarnessError("a run without a run folder needs a scratch folder")
            scratch = self.store.tensors
        self.engine = Engine(self.exporter, scratch, options, fixtures=fixtures, deviations=deviations,
                             logs=self.store.logs if self.store else None)
        self.peaks: dict = {}
        self.pairs: list[dict] = []
        self.machine_rounds: dict[str, list[float | None]] = {}
        self._closed = False

    # --- one case --------------------------------------------------------------------------------
    def run_case(self, case: Case) -> CaseResult:
        """Run, diagnose (first diverging layer, if asked) and store one case."""
        result = self.engine.run_case(case)
        if self.bisect and result.status == "fail":
            from harness.layer_search import first_divergence

            try:
                result.divergence = first_divergence(self.engine, self.fixtures[case.fixture], case)
            except Exception as e:  # the search is a diagnosis: its failure must not cost the run
                result.divergence = {"supported": False, "why": f"the search failed: {type(e).__name__}: {e}"}
        self._store(result)
        return result

    # --- a whole run -----------------------------------------------------------------------------
    def run(self, progress: Callable[[str, int, int], None] | None = None) -> Outcome:
        """Every case, with SIGINT/SIGTERM turned into an interrupted run. Never raises for a case."""
        state, reason = "complete", None
        interrupted: Interrupted | None = None
        with signals_interrupt():
            try:
                self._prepare(progress)
                if self.options.rounds > 1:
                    self._run_rounds(progress)
                elif self.jobs > 1:
                    self._run_parallel(progress)
                else:
                    for i, case in enumerate(self.cases):
                        if progress:
                            progress(case.id, i, len(self.cases))
                        self.run_case(case)
            except Interrupted as e:
                interrupted = e
                state, reason = "interrupted", str(e)
            except HarnessError as e:
                state, reason = "failed", str(e)
            except OSError as e:  # a full disk, a folder gone read-only: the harness cannot go on
                state, reason = "failed", f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
            finally:
                # A second signal while closing must not leave workers behind: hold signals off.
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) \
                    if threading.current_thread() is threading.main_thread() else None
                try:
                    state, reason = self.close(state, reason, kill=interrupted is not None)
                finally:
                    if blocked is not None:
                        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return Outcome(self.results, summarize(self.earlier + self.results, self.allow_inconclusive, state), state, reason,
                       self.store.dir if self.store else None, len(self.cases), self.peaks, list(self.exporter.repairs), self.pairs)

    def _run_rounds(self, progress: Callable[[str, int, int], None] | None) -> None:
        """Benchmarks: every case is measured in `rounds` rounds, interleaved across cases (a seeded
        shuffle per round), so slow drift of a shared machine hits every case alike. Round 0 runs the
        whole case (export, reference, verdict, cold start); later rounds only time it again. A case's
        result is stored once all its rounds are in, with the rounds' medians as the unit of statistics."""
        import random

        rounds = self.options.rounds
        pending: dict[str, tuple[Case, CaseResult, list[Timing]]] = {}
        total, done = rounds * len(self.cases), 0
        # The two builds of a paired benchmark run back to back, A then B, then B then A (ABBA), so
        # drift and order effects fall on both alike.
        groups: dict[tuple, list[Case]] = {}
        for case in self.cases:
            groups.setdefault((case.fixture, case.format, case.device, case.batch, case.threads), []).append(case)
        for r in range(rounds):
            keys = list(groups)
            if r:
                # Fresh worker processes each round: the same artifact's speed moves far more between
                # processes (placement, allocator, JIT state) than within one, and a round that never
                # left its process would hide that noise and make an A/A comparison look significant.
                self.engine.restart_workers()
                random.Random(1000 + r).shuffle(keys)
            order = [c for k in keys for c in (groups[k] if r % 2 == 0 else groups[k][::-1])]
            self._measure_machine(r)
            for case in order:
                if progress:
                    progress(f"round {r + 1}/{rounds}: {case.id}", done, total)
                done += 1
                if r == 0:
                    result = self.engine.run_case(case)
                    if result.timing.samples_ms:
                        pending[case.id] = (case, result, [result.timing])
                    else:
                        self._store(result)
                elif case.id in pending:
                    try:
                        pending[case.id][2].append(self.engine.measure(case))
                    except Exception as e:  # a later round that fails leaves the verdict alone, and is said
                        pending[case.id][1].evidence.setdefault("round_errors", []).append(f"round {r + 1}: {type(e).__name__}: {e}")
        for _case, result, timings in pending.values():
            result.timing = rounds_timing(timings)
            if result.flops and result.timing.p50_ms:
                result.gflops = result.flops / (result.timing.p50_ms * 1e6)
        self.pairs = pair_statistics([result for _case, result, _t in pending.values()], self.cases)
        by_id = {p["b"]: p for p in self.pairs}
        for _case, result, _timings in pending.values():
            if result.id in by_id:
                result.pair = by_id[result.id]
            self._store(result)
        if self.pairs and self.store is not None:
            self.store.set("pairs", self.pairs)

    def _measure_machine(self, r: int) -> None:
        """The machine's yardstick in every round of a benchmark, beside the cases it shares the round
        with: `harness compare` tells a machine that changed between two runs from cases that did."""
        if not self.bench:
            return
        from harness.bench import machine_probe

        for t, ms in machine_probe(sorted({c.threads or os.cpu_count() or 1 for c in self.cases})).items():
            self.machine_rounds.setdefault(t, []).append(ms)
        if self.store is not None:
            self.store.set("machine_rounds", self.machine_rounds)

    def _store(self, result: CaseResult, engine: Engine | None = None) -> None:
        outputs = (engine or self.engine).take_outputs(result.id)  # -j: the share's engine that ran it
        with self._store_lock:  # -j: shares finish cases at once; each line is written whole
            if self.store is not None and not self.store.add(result, outputs):
                return  # its id is stored already: a result is stored, and counted, once
            self.results.append(result)

    def _run_parallel(self, progress: Callable[[str, int, int], None] | None) -> None:
        """`-j N`: the cases in N shares by fixture, each on its own engine (its own workers), at once."""
        from harness.parallel import run_shares, shares

        parts = shares(self.cases, self.jobs)
        base = self.engine.scratch
        for i in range(1, len(parts)):
            engine = Engine(self.exporter, base / f"share-{i}", self.options, fixtures=self.fixtures, deviations=self.engine.deviations,
                            logs=self.store.logs / f"share-{i}" if self.store else None)
            self._engines.append(engine)
        engines = [self.engine, *self._engines]
        stop = threading.Event()
        done = [0]

        def run_one(share: int, case: Case) -> None:
            result = engines[share].run_case(case)
            if stop.is_set():
                return  # interrupted while it ran: its workers were killed under it, so it is not a verdict
            self._store(result, engines[share])
            with self._store_lock:
                done[0] += 1
                if progress:
                    progress(case.id, done[0], len(self.cases))

        run_shares(parts, run_one, stop)

    def _prepare(self, progress: Callable[[str, int, int], None] | None) -> None:
        needed = list(dict.fromkeys([(c.fixture, self.fixtures[c.fixture].reference[0]) for c in self.cases] + [(c.fixture, c.format) for c in self.cases]))
        if self.jobs > 1 and not self.exporter.refresh:
            # Different artifacts exported in parallel, a process per fixture (harness/parallel.py); the loop
            # below then finds them in the cache (and exports what only this process can: a user's model).
            from harness.fixtures import all_fixtures
            from harness.parallel import export_in_processes

            registry = all_fixtures()
            by_fixture: dict[str, list[str]] = {}
            for fixture, fmt in needed:
                if registry.get(fixture) is self.fixtures[fixture] and self.exporter.cached(self.fixtures[fixture], fmt) is None:
                    by_fixture.setdefault(fixture, []).append(fmt)
            if by_fixture:
                if progress:
                    progress(f"exporting {len(by_fixture)} fixtures, {self.jobs} at a time", 0, len(needed))
                export_in_processes(by_fixture, self.jobs, log=self.store.logs / "exports.log" if self.store else None)
        for i, (fixture, fmt) in enumerate(needed):
            if progress:
                progress(f"exporting {fixture}/{fmt}", i, len(needed))
            try:
                self.engine.artifact(self.fixtures[fixture], fmt)
            except LockTimeout:
                pass  # a stuck holder of the entry's lock: each case that needs it says so (error at export, environment)
        if self.bench:
            from harness.bench import gemm_probe, peak_notes

            blas = None
            for t in sorted({c.threads or os.cpu_count() or 1 for c in self.cases}):
                probe = gemm_probe(t)
                self.peaks[str(t)] = float(probe["gflops"]) if probe else None
                blas = blas or (probe or {}).get("blas")
            if self.store is not None:
                self.store.set("machine_peak_gflops", self.peaks)
                self.store.set("machine_blas", blas or [])
                self.store.set("machine_peak_notes", peak_notes(self.peaks))

    def close(self, state: str = "complete", reason: str | None = None, kill: bool = False) -> tuple[str, str | None]:
        """Stop the workers and write the run's final state, which is returned: `failed` where the run's
        record cannot be finished (its folder removed, the disk gone), for a run that cannot say what it
        did is not complete."""
        if self._closed:
            return state, reason
        self._closed = True
        try:
            for engine in self._engines:  # -j: the other shares' workers first
                engine.kill() if kill else engine.close()
            if kill:
                self.engine.kill()
            else:
                self.engine.close()
        finally:
            if self.store is not None:
                try:
                    self.store.set_runtimes(self.engine.runtime_versions())
                    if self.exporter.repairs:
                        self.store.meta.repaired_artifacts = self.exporter.repairs
                    lost = self.store.lost() if self.results else None
                    if lost and state == "complete":
                        state, reason = "failed", lost
                    summary = summarize(self.earlier + self.results, self.allow_inconclusive, state)  # a partial run is never a good one
                    self.store.finish(summary, state, reason)
                except OSError as e:
                    # The disk that stopped the run may not take run.json either: results.jsonl has what ran.
                    self.store.release()
                    if state == "complete":
                        state, reason = "failed", f"cannot write the run's final state in {self.store.dir}: {e.strerror or e}"
        return state, reason


def run_digest(fixture: Fixture) -> str:
    """What a fixture's results in a run depend on besides the options: what its artifacts are made
    from, and a user's own inputs and golden outputs (`check --inputs/--expected`), whose files may
    change between an interrupted run and its resume too."""
    given = [*(fixture.given_inputs or {}).items(), *(fixture.golden or {}).items()]
    if not given:
        return fixture.digest()
    h = hashlib.sha256(fixture.digest().encode())
    for name, value in given:
        array = np.ascontiguousarray(value)
        h.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def _check_sources(folder: Path, recorded: dict[str, str] | None, now: dict[str, str]) -> None:
    """Refuse, in one line, to resume a run whose models changed since it started (runs that recorded
    nothing, from before this check, are resumed as before)."""
    changed = sorted(name for name, digest in now.items() if recorded and name in recorded and recorded[name] != digest)
    if changed:
        raise HarnessError(f"cannot resume {folder}: what {', '.join(changed)} {'is' if len(changed) == 1 else 'are'} made from "
                           "(the model file, the fixture's code, the given inputs) changed since the run started, and its results "
                           "are of the old one: expected the same inputs; start a new run instead")


def resume_plan(folder: Path) -> tuple[list[Case], dict]:
    """The planned cases of an earlier run that have no result yet, and its options."""
    run = read_run(folder)
    if not run.has_meta:
        raise HarnessError(f"cannot resume {folder}: its run.json is missing or unreadable")
    planned = planned_cases(run.meta)
    if not planned:
        raise HarnessError(f"cannot resume {folder}: run.json lists no planned cases (a run of an older harness?)")
    missing = set(run.missing)
    if not missing:
        raise HarnessError(f"nothing to resume in {folder}: every planned case has a result (state {run.state})")
    cases = [Case.from_record(c) for c in planned if c["id"] in missing]
    return cases, run.meta.options


def newest_incomplete(reports: Path) -> Path:
    runs = reports / "runs"
    folders = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True) if runs.is_dir() else []
    for folder in folders:
        run = read_run(folder)
        if run.state != "complete" and run.missing:
            return folder
    raise HarnessError(f"no incomplete run under {runs} to resume: give the run to resume (--resume RUN)")


def pair_statistics(results: list[CaseResult], cases: list[Case]) -> list[dict]:
    """For each case measured as build A and build B in the same rounds: the ratio B/A of each round's
    medians, its median and interval, and the verdict (harness.stats.paired)."""
    by_id = {r.id: r for r in results}
    out = []
    for b in (c for c in cases if c.variant == "B"):
        a = next((c for c in cases if c.variant == "A" and (c.fixture, c.format, c.device, c.batch, c.threads)
                  == (b.fixture, b.format, b.device, b.batch, b.threads)), None)
        ra, rb = by_id.get(a.id) if a else None, by_id.get(b.id)
        if not ra or not rb:
            continue
        pair = paired(ra.timing.rounds_ms or [], rb.timing.rounds_ms or [])
        if pair is None:
            continue
        head = {k: pair.pop(k) for k in ("rounds", "ratios", "ratio")}
        out.append({"a": ra.id, "b": rb.id, **head, "a_p50_ms": ra.timing.p50_ms, "b_p50_ms": rb.timing.p50_ms,
                    "a_status": ra.status, "b_status": rb.status, **pair})
    return out
