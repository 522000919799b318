"""Result store: `reports/runs/<run-id>/run.json` (environment, options, summary) and `results.jsonl`
(one object per case, appended and flushed as each case finishes, so a crash keeps what was done).
`reports/latest` points at the newest run."""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import HarnessError

SCHEMA = 1


def sanitize(value):
    """JSON for every reader: non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "commit": git_commit(),
    }


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class RunStore:
    """One run folder. Results are appended as they come; run.json is rewritten atomically."""

    def __init__(self, reports: Path, options: dict, run_id: str | None = None):
        self.reports = reports
        self.run_id = run_id or new_run_id()
        self.dir = reports / "runs" / self.run_id
        self.dir.mkdir(parents=True, exist_ok=False)
        self.meta = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "started": datetime.now(timezone.utc).isoformat(),
            "finished": None,
            "environment": environment(),
            "runtimes": {},
            "options": options,
            "summary": {},
        }
        self._write_meta()
        self._results = open(self.dir / "results.jsonl", "a", encoding="utf-8")
        self._t0 = time.monotonic()

    @property
    def tensors(self) -> Path:
        return self.dir / "tensors"

    def add(self, result: dict) -> None:
        self._results.write(json.dumps(sanitize(result)) + "\n")
        self._results.flush()

    def set(self, key: str, value) -> None:
        """Another top-level entry of run.json (e.g. the machine's measured peak GFLOP/s)."""
        self.meta[key] = value
        self._write_meta()

    def set_runtimes(self, runtimes: dict) -> None:
        self.meta["runtimes"] = runtimes
        self._write_meta()

    def finish(self, summary: dict) -> None:
        self._results.close()
        self.meta["finished"] = datetime.now(timezone.utc).isoformat()
        self.meta["wall_s"] = round(time.monotonic() - self._t0, 3)
        self.meta["summary"] = summary
        self._write_meta()
        latest = self.reports / "latest"
        tmp = self.reports / f".latest-{self.run_id}"
        os.symlink(Path("runs") / self.run_id, tmp)
        os.replace(tmp, latest)

    def _write_meta(self) -> None:
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(sanitize(self.meta), indent=2))
        os.replace(tmp, self.dir / "run.json")


def load_run(folder: Path) -> tuple[dict, list[dict]]:
    """run.json and the results of a run folder; a half-written last line (a run that died) is dropped."""
    meta_path = folder / "run.json"
    if not meta_path.exists():
        raise HarnessError(f"not a run folder: {meta_path} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise HarnessError(f"corrupt run: {meta_path} is not valid JSON ({e})") from None
    if meta.get("schema") != SCHEMA:
        raise HarnessError(f"run {folder} has schema {meta.get('schema')}, expected {SCHEMA}")
    results = []
    path = folder / "results.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                results.append(json.loads(line))
            except ValueError:
                continue
    return meta, results


class RunData:
    """A run as well as it can be read: what could not be read is listed in `problems`, and the rest
    is kept, so a report of a crashed or foreign run still shows what there is."""

    def __init__(self, folder: Path, meta: dict, results: list[dict], problems: list[str]):
        self.folder, self.meta, self.results, self.problems = folder, meta, results, problems

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id") or self.folder.name


def resolve_run(reference: str | Path, reports: Path = Path("reports")) -> Path:
    """A run given as a folder, a run id under reports/runs, or `latest`."""
    ref = Path(reference)
    for candidate in (ref, reports / "runs" / str(reference), reports / str(reference)):
        if candidate.is_dir():
            return candidate.resolve()
    raise HarnessError(f"run not found: {reference} (expected a run folder, a run id under {reports / 'runs'}, or 'latest')")


def read_run(folder: Path) -> RunData:
    folder = Path(folder)
    problems: list[str] = []
    meta: dict = {}
    meta_path = folder / "run.json"
    if not folder.is_dir():
        raise HarnessError(f"run not found: {folder} is not a folder")
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            problems.append(f"{meta_path} is not a JSON object; environment unknown")
            meta = {}
    except FileNotFoundError:
        problems.append(f"{meta_path} is missing; environment and options unknown")
    except ValueError as e:
        problems.append(f"{meta_path} is not valid JSON ({e}); environment and options unknown")
    if meta and meta.get("schema") != SCHEMA:
        problems.append(f"{meta_path} has schema {meta.get('schema')!r}, this harness reads schema {SCHEMA}; showing what could be read")
    if meta and not meta.get("finished"):
        problems.append("the run did not finish (it crashed or is still running): results may be incomplete")
    results: list[dict] = []
    path = folder / "results.jsonl"
    if not path.exists():
        problems.append(f"{path} is missing: no case results")
    else:
        bad = 0
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or "id" not in item or "status" not in item:
                    raise ValueError("not a case result")
                results.append(item)
            except ValueError:
                bad += 1
        if bad:
            problems.append(f"{bad} line(s) of {path} could not be read (half-written or foreign) and were skipped")
    return RunData(folder, meta, results, problems)
