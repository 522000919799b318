"""Worker pool: one reused worker per runtime; a dead or killed worker is replaced on next use."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.runners.client import WorkerClient
from harness.runners.table import REPO, RUNTIMES, WorkerContext

START_TIMEOUT_S = 120.0


class WorkerPool:
    def __init__(self, context: WorkerContext | None = None, logs: Path | None = None):
        from harness.export import cache_root

        # Without a run's scratch folder, a folder of our own (a container mounts it; /tmp itself is
        # the container's tmpfs).
        self.context = context or WorkerContext(cache_root(), Path(tempfile.gettempdir()) / "harness-scratch")
        self.logs = logs  # a folder: each worker's stderr goes to <key>.log there
        self._workers: dict[str, WorkerClient] = {}
        self.info: dict[str, dict] = {}
        self.starts: dict[str, int] = {}

    def get(self, runtime: str, key: str | None = None, build: str | None = None) -> WorkerClient:
        """The worker for `runtime`, started if needed. `key` names a separate worker of the same
        runtime (one per thread setting, since some runtimes fix threads per process)."""
        key = key or runtime
        worker = self._workers.get(key)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:
            worker.kill()
        launch = RUNTIMES[runtime].launch(self.context, build)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.update(launch.env)
        log = self.logs / f"{key.replace('/', '_')}.log" if self.logs is not None else None
        worker = WorkerClient(key, launch.command, cwd=REPO, env=env, cleanup=launch.cleanup, log=log)
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
