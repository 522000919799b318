"""`harness run -j N`: what a run does N at a time.

- Exports: each fixture's artifacts are made by a `harness export` process of its own, N processes at
  once (converters keep global state, so never two in one process); the export cache's file locks make
  the run's own lookups afterwards find them. Fixtures outside the registry (a user's model) are
  exported by the run itself, as before.
- Cases: split into N shares by fixture (a fixture's reference is computed once, in the share that
  runs it), balanced by case count; each share runs on its own engine with its own workers.
Benchmarks stay one case at a time (the orchestrator never calls this for them): timings measured
beside another share's load would say nothing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from harness.cases import Case
from harness.errors import HarnessError


def shares(cases: list[Case], jobs: int) -> list[list[Case]]:
    """The cases in at most `jobs` shares, whole fixtures each, the largest fixtures first onto the
    lightest share (case order kept within a share)."""
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.fixture, []).append(c)
    out: list[list[Case]] = [[] for _ in range(max(1, min(jobs, len(groups))))]
    for name in sorted(groups, key=lambda n: -len(groups[n])):
        min(out, key=len).extend(groups[name])
    return [s for s in out if s]


def export_in_processes(needed: dict[str, list[str]], jobs: int, log: Path | None = None,
                        stop: threading.Event | None = None) -> dict[str, int]:
    """`harness export -f FIXTURE -F FORMATS` for each fixture of `needed`, `jobs` processes at a time.
    Returns each fixture's exit code (1: some export failed; the run then finds that failure cached
    and judges it as usual). A process that cannot start at all is a harness error."""
    codes: dict[str, int] = {}
    pending = list(needed.items())
    running: list[tuple[str, subprocess.Popen]] = []
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed below
    sink = handle if handle is not None else subprocess.DEVNULL
    try:
        while pending or running:
            while pending and len(running) < jobs and not (stop and stop.is_set()):
                name, formats = pending.pop(0)
                cmd = [sys.executable, "-m", "harness.cli", "export", "-f", name, "-F", ",".join(formats), "--json"]
                try:
                    running.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sink)))
                except OSError as e:
                    raise HarnessError(f"cannot start an export process ({e.strerror}): {' '.join(cmd)}") from None
            if stop and stop.is_set():
                pending.clear()
            for item in list(running):
                try:
                    code = item[1].wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                codes[item[0]] = code
                running.remove(item)
    finally:
        for _name, proc in running:  # interrupted: the exports in flight are stopped (their locks go with them)
            proc.kill()
            proc.wait()
        if handle is not None:
            handle.close()
    return codes


def run_shares(parts: list[list[Case]], run_one: Callable[[int, Case], None], stop: threading.Event) -> None:
    """Each share in a thread of its own (`run_one(share, case)` for its cases in order), until done or
    `stop` is set. The calling thread waits in short joins, so a signal reaches its handler; the first
    exception of a share is raised here once every thread has ended."""
    errors: list[BaseException] = []

    def work(index: int, cases: list[Case]) -> None:
        try:
            for case in cases:
                if stop.is_set():
                    return
                run_one(index, case)
        except BaseException as e:  # a harness-level failure (a full disk): every share stops
            errors.append(e)
            stop.set()

    # A worker dies with the thread that started it (PR_SET_PDEATHSIG, harness/runners/client.py): each
    # share's engine is used by its own thread only, and its workers end when the share is done.
    threads = [threading.Thread(target=work, args=(i, p), name=f"share-{i}", daemon=True) for i, p in enumerate(parts)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]
