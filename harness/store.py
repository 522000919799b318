"""Result store: `reports/runs/<run-id>/run.json` (environment, options, summary) and `results.jsonl`
(one object per case, appended and flushed as each case finishes, so a crash keeps what was done).
`reports/latest` points at the newest run. The one place that writes and reads them, through the
typed records of harness/records.py (CaseResult, RunMeta)."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from harness.errors import HarnessError
from harness.machine import identify
from harness.records import KEPT_OUTPUT_BYTES, READABLE, SCHEMA, STATES, CaseResult, RunMeta, sanitize, schema_problem

__all__ = ["READABLE", "SCHEMA", "STATES", "CaseResult", "RunData", "RunMeta", "RunStore", "check_schema", "environment", "git_commit",
           "new_run_id", "planned_cases", "read_outputs", "read_run", "resolve_run", "sanitize"]


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(machine: dict | None = None) -> dict:
    """The software around a run; cpu, cores and memory repeat the machine's identity (run.json
    `machine`, harness/machine.py) for readers of schema 3."""
    machine = machine or identify()
    return {
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "memory_bytes": machine["memory_bytes"],
        "os": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "commit": git_commit(),
    }


OUTPUTS = "outputs"  # a run folder's kept outputs, one .npz per case


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


RUN_LOCK = ".run.lock"  # held by the process writing a run, from its start to its final state


class RunStore:
    """One run folder. Results are appended as they come, one whole line each (signals are held off
    while a line is written); run.json is rewritten atomically. A run records the cases it plans
    up front and its `state`: running, then complete, interrupted (a signal) or failed (a harness
    error such as a full disk). Only a complete run becomes `reports/latest`. The process writing a run
    holds its lock (`.run.lock`, released by the kernel if it dies), so a resume of a run still running
    is refused; and a result whose id is in results.jsonl already is never appended again."""

    def __init__(self, reports: Path, options: dict, run_id: str | None = None, planned: list[dict] | None = None,
                 resume: Path | None = None, keep: dict[str, bytes] | None = None):
        """`keep`: files a new run holds beside its records, by path inside its folder, written before
        anything runs (the model `check --upgrade-opset` converted: the run checks that copy)."""
        self.reports = reports
        self._lock: FileLock | None = None
        try:
            if resume is not None:
                self.dir = Path(resume)
                self.run_id = self.dir.name
                self._lock = _hold(self.dir)
                self.meta = RunMeta.from_json(json.loads((self.dir / "run.json").read_text()))
                check_schema(self.meta, f"cannot resume {self.dir}")
                self.meta.schema_version = SCHEMA
                self.meta.state, self.meta.reason, self.meta.finished = "running", None, None
                self.meta.resumed = [*(self.meta.resumed or []), datetime.now(UTC).isoformat()]
                self._check_same_machine()
                _drop_partial_line(self.dir / "results.jsonl")
            else:
                self.run_id = run_id if run_id is not None else new_run_id()
                if not self.run_id.strip() or "/" in self.run_id or self.run_id.startswith("."):
                    raise HarnessError(f"run name {self.run_id!r} is not valid: expected a non-empty name without '/' that does not start with '.'")
                self.dir = reports / "runs" / self.run_id
                self.dir.mkdir(parents=True, exist_ok=False)
                self._lock = _hold(self.dir)
                for rel, data in (keep or {}).items():
                    target = self.dir / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                machine = identify(options.get("machine"))
                self.meta = RunMeta(SCHEMA, self.run_id, "running", started=datetime.now(UTC).isoformat(),
                                    environment=environment(machine), options=options, planned=planned or [], machine=machine)
            self._write_meta()
            self._results = open(self.dir / "results.jsonl", "a+b")
            self._ids: set[str] = set()
            self._read = 0  # bytes of results.jsonl whose ids are in _ids
        except FileExistsError:
            self.release()
            raise HarnessError(f"run {self.dir} exists already: expected a new run name") from None
        except OSError as e:
            self.release()
            raise HarnessError(f"cannot write a run folder under {reports}: {e.strerror or e} (expected a writable folder with free space)") from None
        except BaseException:
            self.release()
            raise
        self._t0 = time.monotonic()

    def _check_same_machine(self) -> None:
        """A run resumed on another kind of machine would mix two machines' numbers under one label."""
        recorded = self.meta.machine
        if not recorded:
            return
        here = identify(recorded.get("label"))
        for key in ("arch", "cpu"):
            if recorded.get(key) != here[key]:
                raise HarnessError(f"cannot resume {self.dir} here: it ran on machine {recorded.get('label')} ({key} {recorded.get(key)}), "
                                   f"this machine has {key} {here[key]} (expected the same machine; start a new run here and harness merge the two)")

    def release(self) -> None:
        """Let go of the run's lock (a finished run; a run that could not start)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def tensors(self) -> Path:
        return self.dir / "tensors"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def outputs(self) -> Path:
        return self.dir / OUTPUTS

    def add(self, result: CaseResult | dict, outputs: dict | None = None) -> bool:
        """Append one result (a dict is read as a CaseResult first: a key without a field is an error).
        Its outputs, when given and small (records.KEPT_OUTPUT_BYTES), are kept in outputs/<id>.npz,
        written before the result line: a result that says it ran has its outputs there. False, and
        nothing written, when results.jsonl holds that case's id already (whoever wrote it)."""
        if not isinstance(result, CaseResult):
            result = CaseResult.from_json(result, strict=True)
        if result.machine is None and self.meta.machine:
            result.machine = self.meta.machine.get("label")  # every result says where it ran (merge keeps it)
        line = (json.dumps(result.to_json()) + "\n").encode()
        # A signal arriving now is delivered after the line is complete, never in the middle of it.
        blocked = _block_signals()
        try:
            # Under an exclusive lock on the file: the lines others appended since our last look are read
            # first, so two writers of one run (a lock that did not hold, a copy) never store an id twice.
            fcntl.flock(self._results.fileno(), fcntl.LOCK_EX)
            try:
                self._results.seek(self._read)
                for text in self._results.read().splitlines():
                    try:
                        self._ids.add(json.loads(text)["id"])
                    except (ValueError, TypeError, KeyError):
                        pass  # half-written or foreign: read_run counts it
                if result.id in self._ids:
                    self._read = self._results.tell()
                    return False
                if outputs:
                    self.add_outputs(result.id, outputs)
                self._results.write(line)
                self._results.flush()
                self._read = self._results.tell()
                self._ids.add(result.id)
                return True
            finally:
                fcntl.flock(self._results.fileno(), fcntl.LOCK_UN)
        finally:
            _unblock_signals(blocked)

    def add_outputs(self, case_id: str, outputs: dict) -> None:
        arrays = {k: np.asarray(v) for k, v in outputs.items()}
        if sum(v.nbytes for v in arrays.values()) > KEPT_OUTPUT_BYTES or any(v.dtype.kind not in "biufS" for v in arrays.values()):
            return
        self.outputs.mkdir(exist_ok=True)
        tmp = self.outputs / f".{case_id}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
        os.replace(tmp, self.outputs / f"{case_id}.npz")

    def lost(self) -> str | None:
        """Why the results written are no longer where the run says they are (results.jsonl removed or
        replaced while the run wrote it: a clean-up script, a user's rm -rf), or None."""
        try:
            mine, there = os.fstat(self._results.fileno()), os.stat(self.dir / "results.jsonl")
        except OSError:
            return f"{self.dir / 'results.jsonl'} is gone: removed while the run wrote it"
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return f"{self.dir / 'results.jsonl'} was replaced while the run wrote it"
        return None

    def set(self, key: str, value) -> None:
        """Another top-level entry of run.json (e.g. the machine's measured peak GFLOP/s): a field of RunMeta."""
        self.meta.set(key, value)
        self._write_meta()

    def set_runtimes(self, runtimes: dict) -> None:
        self.set("runtimes", runtimes)

    def finish(self, summary: dict, state: str = "complete", reason: str | None = None) -> None:
        """Close the run with its final state; `latest` moves only to a complete run."""
        if state not in STATES[1:]:
            raise ValueError(f"final state {state!r}: expected one of {STATES[1:]}")
        try:
            self._results.close()
        except OSError:
            pass
        self.meta.state, self.meta.reason = state, reason
        self.meta.finished = datetime.now(UTC).isoformat()
        self.meta.wall_s = round(time.monotonic() - self._t0, 3)
        self.meta.summary = summary
        try:
            self._write_meta()
        finally:
            self.release()
        if state != "complete":
            return
        latest = self.reports / "latest"
        tmp = self.reports / f".latest-{self.run_id}"
        os.symlink(Path("runs") / self.run_id, tmp)
        os.replace(tmp, latest)

    def _write_meta(self) -> None:
        """Atomically (a temporary file, then rename). run.json is padded with spaces to whole 4 KiB
        blocks plus one spare block, so that on a full disk the final state can still be written in
        place over the blocks it already owns."""
        text = json.dumps(self.meta.to_json(), indent=2) + "\n"
        size = (len(text.encode()) // 4096 + 2) * 4096
        tmp = self.dir / "run.json.tmp"
        try:
            tmp.write_text(text.ljust(size))
            os.replace(tmp, self.dir / "run.json")
        except OSError:
            tmp.unlink(missing_ok=True)
            path = self.dir / "run.json"
            have = path.stat().st_size if path.exists() else 0
            if len(text.encode()) > have:
                raise
            with open(path, "r+", encoding="utf-8") as f:  # in place: no new block is needed
                f.write(text.ljust(have))


def _hold(folder: Path) -> FileLock:
    """The run's lock, taken without waiting: a run being written by another process is refused in one line."""
    lock = FileLock(str(folder / RUN_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise HarnessError(f"run {folder} is still running (another harness holds {folder / RUN_LOCK}): "
                           "expected a run that has stopped; wait for it to end, or stop it first") from None
    return lock


_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _block_signals():
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (ValueError, OSError):
        return None


def _unblock_signals(previous) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _drop_partial_line(path: Path) -> None:
    """Cut a half-written last line (a run killed mid-write) so appended results start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def planned_cases(meta: RunMeta) -> list[dict]:
    """The cases a run planned (each a dict with id, fixture, format, runtime, device, batch, threads)."""
    return [c for c in meta.planned if isinstance(c, dict) and "id" in c]


def check_schema(meta: RunMeta, what: str) -> None:
    """Refuse, in one line, a run whose numbers may not mean what this harness's mean (compare, merge, resume)."""
    problem = schema_problem(meta)
    if problem is not None:
        raise HarnessError(f"{what}: {problem} (or no readable run.json)")


class RunData:
    """A run as well as it can be read: what could not be read is listed in `problems`, and the rest
    is kept, so a report of a crashed or foreign run still shows what there is. `missing` lists the
    planned cases without a readable result; `unreadable` counts lines of results.jsonl that could
    not be read."""

    def __init__(self, folder: Path, meta: RunMeta | None, results: list[CaseResult], problems: list[str], unreadable: int = 0):
        self.folder, self.results, self.problems, self.unreadable = folder, results, problems, unreadable
        self.has_meta = meta is not None  # False: run.json missing or unreadable (meta is then all defaults)
        self.meta = meta if meta is not None else RunMeta(schema_version=None, state="unknown")

    @property
    def run_id(self) -> str:
        return self.meta.run_id or self.folder.name

    @property
    def state(self) -> str:
        """complete, interrupted, failed, running (still running, or killed without a trace); `unknown`
        for a run.json that does not say."""
        return self.meta.state if self.meta.state in STATES else "unknown"

    @property
    def planned(self) -> list[dict]:
        return planned_cases(self.meta)

    @property
    def missing(self) -> list[str]:
        done = {r.id for r in self.results}
        return [c["id"] for c in self.planned if c["id"] not in done]


def resolve_run(reference: str | Path, reports: Path = Path("reports")) -> Path:
    """A run given as a folder, a run id under reports/runs, or `latest`."""
    if not str(reference).strip():
        raise HarnessError("the run name is empty: expected a run folder, a run id under reports/runs, or 'latest'")
    ref = Path(reference)
    for candidate in (ref, reports / "runs" / str(reference), reports / str(reference)):
        if candidate.is_dir():
            return candidate.resolve()
    raise HarnessError(f"run not found: {reference} (expected a run folder, a run id under {reports / 'runs'}, or 'latest')")


def rewrite_results(folder: Path, change: Callable[[CaseResult], CaseResult]) -> None:
    """Every result of a finished run through `change`, written back whole or not at all (a sibling file
    renamed over results.jsonl): the self-tests' relabelling of a run goes through the store like any write."""
    run = read_run(folder)
    path = Path(folder) / "results.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(change(r).to_json()) + "\n" for r in run.results), encoding="utf-8")
    os.replace(tmp, path)


def read_outputs(folder: Path, case_id: str) -> dict[str, np.ndarray] | None:
    """A case's kept outputs (outputs/<id>.npz), or None when the run did not keep them (too large, an
    older run) or they cannot be read."""
    path = Path(folder) / OUTPUTS / f"{case_id}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def read_run(folder: Path) -> RunData:
    """A run folder, read as well as it can be: what could not be read is listed in `problems`. A run of
    another schema is read too (a report shows what it can, saying so); compare, merge and resume refuse it."""
    folder = Path(folder)
    problems: list[str] = []
    meta: RunMeta | None = None
    meta_path = folder / "run.json"
    if not folder.is_dir():
        raise HarnessError(f"run not found: {folder} is not a folder")
    try:
        raw = json.loads(meta_path.read_text())
        if isinstance(raw, dict):
            meta = RunMeta.from_json(raw)
        else:
            problems.append(f"{meta_path} is not a JSON object; environment unknown")
    except FileNotFoundError:
        problems.append(f"{meta_path} is missing; environment and options unknown")
    except ValueError as e:
        problems.append(f"{meta_path} is not valid JSON ({e}); environment and options unknown")
    if meta is not None and schema_problem(meta):
        problems.append(f"{meta_path} has {schema_problem(meta)}; showing what could be read")
    results: list[CaseResult] = []
    path = folder / "results.jsonl"
    bad = 0
    if not path.exists():
        problems.append(f"{path} is missing: no case results")
    else:
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                results.append(CaseResult.from_json(json.loads(line)))
            except (ValueError, TypeError):
                bad += 1
        if bad:
            problems.append(f"{bad} line(s) of {path} could not be read (half-written or foreign) and were skipped")
    run = RunData(folder, meta, results, problems, bad)
    if meta is not None:
        state, reason, missing = run.state, meta.reason, run.missing
        of = f"{len(missing)} of {len(run.planned)} planned cases have no result" if run.planned else "the planned cases are unknown"
        if state == "running" or (state == "unknown" and not meta.finished):
            problems.append(f"incomplete run: it did not finish (still running, or killed without a trace); {of}")
        elif state in ("interrupted", "failed"):
            problems.append(f"incomplete run: {state}" + (f" ({reason})" if reason else "") + f"; {of}")
        elif missing:
            problems.append(f"{of}, though the run says it is complete")
    return run
