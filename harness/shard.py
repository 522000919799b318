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
from dataclasses import replace
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


def machine_of(meta) -> dict:
    """A run's machine identity; a schema-3 run (no `machine`) is known by its environment's CPU."""
    from harness.machine import short_model

    if meta.machine:
        return meta.machine
    env = meta.environment
    arch, cpu = env.get("machine") or "unknown", env.get("cpu") or "unknown"
    return {"label": f"{arch}-{short_model(cpu)}", "arch": arch, "cpu": cpu, "features": [], "cores": env.get("cores")}


def merge(folders: list[Path], reports: Path, name: str | None = None) -> tuple[Path, dict]:
    """One run made of several: the shards of one machine (`harness run --shard K/N`), the runs of
    several machines, or both. Every result once, the planned cases of all, the runs merged listed in
    run.json. Runs of more than one machine make a cross-machine run: the machine is then part of each
    case's identity (ids end in `@<machine>`, run.json `machines` has each machine's identity).

    Refused, each in one line: an incomplete run (finish it with `harness run --resume`), runs of
    different commits or schemas, a case twice on one machine, one label for two different machines,
    and a machine's shards that are not every shard of one split (`--shard K/N` with the same N)."""
    from harness.records import summarize, with_machine
    from harness.store import RunStore, check_schema, read_outputs, read_run

    if len(folders) < 2:
        raise HarnessError("harness merge takes two or more runs: expected the runs of every shard, or of every machine")
    runs = [read_run(f) for f in folders]
    commits = set()
    machines: dict[str, dict] = {}  # label -> identity
    of_machine: dict[str, list] = defaultdict(list)  # label -> its (unmerged) runs
    for run in runs:
        check_schema(run.meta, f"cannot merge {run.folder}")
        if run.state != "complete" or run.missing:
            raise HarnessError(f"cannot merge {run.folder}: it is {run.state} with {len(run.missing)} case(s) missing "
                               "(expected complete runs: finish it with harness run --resume)")
        commit = run.meta.environment.get("commit")
        if commit:
            commits.add(commit)
        for label, identity in (run.meta.machines or {machine_of(run.meta)["label"]: machine_of(run.meta)}).items():
            known = machines.setdefault(label, identity)
            for key in ("arch", "cpu"):
                if known.get(key) != identity.get(key):
                    raise HarnessError(f"cannot merge: machine {label} is {known.get(key)} in one run and {identity.get(key)} in {run.run_id} "
                                       f"(expected one label per machine: run one of them again with --machine OTHER_NAME)")
        if not run.meta.machines:
            of_machine[machine_of(run.meta)["label"]].append(run)
    if len(commits) > 1:
        raise HarnessError(f"cannot merge runs of different commits: {sorted(commits)}")
    across = len(machines) > 1

    def ident(run, case_id: str, label: str | None) -> str:
        # In a cross-machine run the machine is part of the case's identity; a merged one has it already.
        return with_machine(case_id, label) if across and not run.meta.machines and label else case_id

    seen: dict[str, str] = {}
    for run in runs:
        label = machine_of(run.meta)["label"]
        for r in run.results:
            cid = ident(run, r.id, r.machine or label)
            if cid in seen:
                where = f" on machine {r.machine or label}" if across else ""
                raise HarnessError(f"cannot merge: case {r.id} is in {seen[cid]} and in {run.run_id}{where} "
                                   f"(expected each case in one shard{' per machine' if across else ''})")
            seen[cid] = run.run_id
    for label, group in of_machine.items():
        shards: list[str] = [str(run.meta.options.get("shard") or "") for run in group]
        if len(group) > 1 and all(shards):
            on = f" of machine {label}" if len(machines) > 1 else ""
            totals = {parse_shard(s)[1] for s in shards}
            parts = sorted(parse_shard(s)[0] for s in shards)
            if len(totals) > 1:
                raise HarnessError(f"cannot merge shards{on} of different splits: {sorted(shards)}")
            if parts != list(range(1, totals.pop() + 1)):
                raise HarnessError(f"cannot merge: shards{on} {sorted(shards)} are not every shard of the split, each once")
    first = runs[0].meta
    options = {**first.options, "command": "merge", "shard": None, "shards": [run.run_id for run in runs]}
    planned = [{**c, "id": ident(run, c["id"], machine_of(run.meta)["label"]), "machine": c.get("machine", machine_of(run.meta)["label"])}
               for run in runs for c in run.planned]
    store = RunStore(reports, options, run_id=name, planned=planned)
    # Where the cases ran, not where they were merged (CI merges on yet another runner).
    store.set("machine", None if across else next(iter(machines.values())))
    runtimes: dict = {}
    results = []
    for run in runs:
        label = machine_of(run.meta)["label"]
        for rt, info in run.meta.runtimes.items():
            # Across machines each machine's versions are kept (an Arm64 runner's build is another build).
            runtimes[f"{rt} on {label}" if across and not run.meta.machines else rt] = info
        for r in run.results:
            cid = ident(run, r.id, r.machine or label)
            outputs = read_outputs(run.folder, r.id)
            r = replace(r, id=cid, machine=r.machine or label)
            if outputs is not None:
                store.add_outputs(cid, outputs)
            store.add(r)
            results.append(r)
    store.set_runtimes(runtimes)
    if across:
        store.set("machines", machines)
    store.set("shards", [{"run_id": run.run_id, "shard": run.meta.options.get("shard"), "machine": machine_of(run.meta)["label"],
                          "environment": run.meta.environment, "wall_s": run.meta.wall_s} for run in runs])
    # Inconclusive verdicts are allowed in the merge where every part allowed them (run.json's summary says).
    summary = summarize(results, allow_inconclusive=all(bool(run.meta.summary.get("allow_inconclusive")) for run in runs))
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
