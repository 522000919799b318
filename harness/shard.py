"""Sharding a run across CI jobs (`harness run --shard K/N`) and merging the shards' runs into one
(`harness merge RUN...`).

A shard is a deterministic share of the case matrix, balanced by expected cost: cases are grouped by
(fixture, format), so that each artifact is exported by one shard only, and the groups are dealt out
longest first to the least loaded shard. The cost model is coarse (a browser case costs about a
second, a Python case a fraction of one, an export a couple of seconds); it only has to keep shards
of one matrix within a small factor of each other, and it never depends on the machine.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from harness.errors import HarnessError

# Seconds a case is expected to take, by the runtime's language (the runtime table's `language`).
CASE_COST_S = {"browser": 1.0, "node": 0.4, "go": 0.3, "python": 0.25}
EXPORT_COST_S = 2.0  # one artifact, exported once by the shard that holds its group


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` (1 <= K <= N) → (K, N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise HarnessError(f"--shard {text} is not valid: expected K/N with 1 <= K <= N, like 2/4")
    return int(m.group(1)), int(m.group(2))


def case_cost(case) -> float:
    from harness.runners.table import RUNTIMES

    spec = RUNTIMES.get(case.runtime)
    return CASE_COST_S.get(spec.language if spec else "", 0.5)


def assign(cases: list, n: int) -> list[list]:
    """The cases dealt into n shards (each in the matrix's order), balanced by expected cost."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for c in cases:
        groups[(c.fixture, c.format)].append(c)
    cost = {key: EXPORT_COST_S + sum(case_cost(c) for c in members) for key, members in groups.items()}
    load = [0.0] * n
    owner: dict[tuple[str, str], int] = {}
    for key in sorted(groups, key=lambda k: (-cost[k], k)):
        target = min(range(n), key=lambda i: (load[i], i))
        owner[key] = target
        load[target] += cost[key]
    shards: list[list] = [[] for _ in range(n)]
    for c in cases:
        shards[owner[(c.fixture, c.format)]].append(c)
    return shards


def shard(cases: list, k: int, n: int) -> list:
    """Shard k of n (1-based)."""
    return assign(cases, n)[k - 1]


def merge(folders: list[Path], reports: Path, name: str | None = None) -> tuple[Path, dict]:
    """One run made of the shards' runs: every result once, the planned cases of all, the shards listed
    in run.json. Refused: an incomplete shard (finish it with `harness run --resume`), shards of
    different commits or schemas, a case in two shards, and a shard that is not a sharded run of the
    same matrix (`--shard K/N` with the same N)."""
    from harness.records import summarize
    from harness.store import RunStore, check_schema, read_run

    if len(folders) < 2:
        raise HarnessError("harness merge takes two or more runs: expected the runs of every shard")
    runs = [read_run(f) for f in folders]
    seen: dict[str, str] = {}
    commits = set()
    for run in runs:
        check_schema(run.meta, f"cannot merge {run.folder}")
        if run.state != "complete" or run.missing:
            raise HarnessError(f"cannot merge {run.folder}: it is {run.state} with {len(run.missing)} case(s) missing "
                               "(expected complete shards: finish it with harness run --resume)")
        for r in run.results:
            if r.id in seen:
                raise HarnessError(f"cannot merge: case {r.id} is in {seen[r.id]} and in {run.run_id} (expected each case in one shard)")
            seen[r.id] = run.run_id
        commit = run.meta.environment.get("commit")
        if commit:
            commits.add(commit)
    if len(commits) > 1:
        raise HarnessError(f"cannot merge runs of different commits: {sorted(commits)}")
    shards: list[str] = [str(run.meta.options.get("shard") or "") for run in runs]
    if all(shards):
        totals = {parse_shard(s)[1] for s in shards}
        parts = sorted(parse_shard(s)[0] for s in shards)
        if len(totals) > 1:
            raise HarnessError(f"cannot merge shards of different splits: {sorted(shards)}")
        if parts != list(range(1, totals.pop() + 1)):
            raise HarnessError(f"cannot merge: shards {sorted(shards)} are not every shard of the split, each once")
    first = runs[0].meta
    options = {**first.options, "command": "merge", "shard": None, "shards": [run.run_id for run in runs]}
    planned = [c for run in runs for c in run.planned]
    store = RunStore(reports, options, run_id=name, planned=planned)
    runtimes: dict = {}
    for run in runs:
        runtimes.update(run.meta.runtimes)
        for r in run.results:
            store.add(r)
    store.set_runtimes(runtimes)
    store.set("shards", [{"run_id": run.run_id, "shard": run.meta.options.get("shard"),
                          "environment": run.meta.environment, "wall_s": run.meta.wall_s} for run in runs])
    results = [r for run in runs for r in run.results]
    summary = summarize(results, allow_inconclusive=bool(options.get("allow_inconclusive")))
    store.finish(summary, "complete")
    return store.dir, summary


# Seconds a worker takes to start, by language (TensorFlow's import is most of the Python one): paid
# once per runtime in a run.
WORKER_START_S = {"browser": 6.0, "node": 1.0, "go": 0.5, "python": 3.0}


def estimate(cases: list, cached: set[tuple[str, str]]) -> dict:
    """What running `cases` should take, by the same coarse cost model that balances shards: seconds per
    case by language, a worker start per runtime, and an export for each (fixture, format) not in
    `cached` (the export cache's entries). Returns {seconds, cases, exports, cached, runtimes}."""
    from harness.runners.table import RUNTIMES

    groups = {(c.fixture, c.format) for c in cases}
    exports = len(groups - cached)
    runtimes = {c.runtime for c in cases}
    starts = sum(WORKER_START_S.get(RUNTIMES[r].language if r in RUNTIMES else "", 1.0) for r in runtimes)
    seconds = sum(case_cost(c) for c in cases) + exports * EXPORT_COST_S + starts
    return {"seconds": seconds, "cases": len(cases), "exports": exports, "cached": len(groups) - exports, "runtimes": len(runtimes)}


def duration(seconds: float) -> str:
    """About how long, in words a person plans by: `40 s`, `3 min`, `1 h 20 min`."""
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
