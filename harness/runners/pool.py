"""Worker pool: one reused worker per runtime; a dead or killed worker is replaced on next use."""

from __future__ import annotations

import os

from harness.runners.client import WorkerClient
from harness.runners.table import REPO, RUNTIMES

START_TIMEOUT_S = 120.0


class WorkerPool:
    def __init__(self):
        self._workers: dict[str, WorkerClient] = {}
        self.info: dict[str, dict] = {}
        self.starts: dict[str, int] = {}

    def get(self, runtime: str) -> WorkerClient:
        worker = self._workers.get(runtime)
        if worker is not None and worker.alive:
            return worker
        if worker is not None:
            worker.kill()
        spec = RUNTIMES[runtime]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        worker = WorkerClient(runtime, spec.command(), cwd=REPO, env=env)
        self._workers[runtime] = worker
        self.starts[runtime] = self.starts.get(runtime, 0) + 1
        try:
            self.info[runtime] = worker.call("info", timeout=START_TIMEOUT_S)
        except Exception:
            self.discard(runtime)
            raise
        return worker

    def discard(self, runtime: str) -> None:
        worker = self._workers.pop(runtime, None)
        if worker is not None:
            worker.kill()

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
