"""Harness side of the runner protocol: the client, the worker pool and the table of runtimes."""

from harness.runners.client import RpcError, WorkerClient, WorkerCrash, WorkerTimeout
from harness.runners.pool import WorkerPool
from harness.runners.table import RUNTIMES, Availability, RuntimeSpec, check_runtime

__all__ = [
    "RUNTIMES",
    "Availability",
    "RpcError",
    "RuntimeSpec",
    "WorkerClient",
    "WorkerCrash",
    "WorkerPool",
    "WorkerTimeout",
    "check_runtime",
]
