"""Worker pool: one reused worker per runtime; a dead or killed worker is replaced on next use."""

from __future__ import annotations

import os
from pathlib import Path

from harness.runners.client import WorkerClient
from harness.runners.sandboxes import containerized
from harness.runners.table import REPO, WorkerContext, check_runtime
from harness.sandbox import Sandbox, Wrapped, grant_container_read

START_TIMEOUT_S = 120.0


class WorkerPool:
    def __init__(self, context: WorkerContext, logs: Path | None = None, sandbox: Sandbox | str = "none"):
        # The folders its workers see: the artifacts they load (the export cache, a test's folder) and
        # the scratch folder they write; the caller knows where they are (WorkerContext.scratch_of).
        self.context = context
        self.logs = logs  # a folder: each worker's stderr goes to <key>.log there
        # Every worker this pool starts runs in this sandbox (harness/sandbox.py); a runtime that is in
        # a container already (go-tfgo@docker) is its own sandbox.
        self.sandbox = Sandbox.of(sandbox) if isinstance(sandbox, str) else sandbox
        self._workers: dict[str, WorkerClient] = {}
        self.info: dict[str, dict] = {}
        self.starts: dict[str, int] = {}

    def get(self, runtime: str, key: str | None = None) -> WorkerClient:
        """The worker for `runtime`, started if needed. `key` names a separate worker of the same
        runtime (one per thread setting, since some runtimes fix threads per process)."""
        key = key or runtime
        worker = self._workers.get(key)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:
            worker.kill()
        spec = check_runtime(runtime)
        launch = spec.launch(self.context)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.update(spec.env)  # a variant's settings (harness/runners/table.py Variant)
        env.update(launch.env)
        wrapped = Wrapped(launch.command)
        if self.sandbox.active and not containerized(runtime):
            # bwrap, and for --sandbox docker the workers that have no container (the TF reference among them).
            wrapped = self.sandbox.wrap(launch.command, artifacts=self.context.artifacts, scratch=self.context.scratch, env=env)
        log = self.logs / f"{key.replace('/', '_')}.log" if self.logs is not None else None
        worker = WorkerClient(key, wrapped.command, cwd=REPO, env=env, cleanup=launch.cleanup, log=log, on_exit=wrapped.release)
        if containerized(runtime):
            worker.before_load = grant_container_read
        self._workers[key] = worker
        self.starts[key] = self.starts.get(key, 0) + 1
        try:
            self.info[key] = worker.call("info", timeout=START_TIMEOUT_S)
        except Exception:
            self.discard(key)
            raise
        return worker

    def existing(self, key: str) -> WorkerClient | None:
        """The worker under `key` if one was started, alive or not; starts nothing."""
        return self._workers.get(key)

    def discard(self, key: str) -> None:
        worker = self._workers.pop(key, None)
        if worker is not None:
            worker.kill()

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    def kill(self) -> None:
        """Kill every worker now (and remove its container), without asking it to shut down."""
        for worker in self._workers.values():
            worker.kill()
        self._workers.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
