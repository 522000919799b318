"""Which sandboxes run here, and where each worker runs: bwrap (harness/sandbox.py, for every worker
that has no container) and docker (the runtimes of the table whose worker is in a container already,
go-tfgo@docker: their own sandbox). Above both the sandbox and the runtime table, which it joins."""

from __future__ import annotations

from harness.availability import Availability
from harness.errors import HarnessError
from harness.runners.table import RUNTIMES
from harness.sandbox import Limits, bwrap_availability, check_kind


def docker_availability() -> Availability:
    docker = [spec for spec in RUNTIMES.values() if _containerized(spec)]
    if not docker:
        return Availability(False, None, "no runtime of the table runs in a container", "")
    a = docker[0].availability()
    return Availability(a.ok, a.version, a.reason, a.fix)


def availability(kind: str) -> Availability:
    if kind == "bwrap":
        return bwrap_availability()
    if kind == "docker":
        return docker_availability()
    return Availability(True, None, "no isolation: only for the harness's own fixtures")


def _containerized(spec) -> bool:
    return bool(spec.container)  # the table entry says (RuntimeSpec.container)


def containerized(runtime: str) -> bool:
    """Runtimes whose worker is in a container already (go-tfgo@docker): their own sandbox."""
    root = runtime if runtime in RUNTIMES else runtime.partition("@")[0]
    return root in RUNTIMES and _containerized(RUNTIMES[root])


def require(kind: str) -> None:
    """A one-line error when the chosen sandbox cannot run here (never fall back to none silently)."""
    if kind != "none":
        Limits.from_env()  # a bad HARNESS_SANDBOX_* value is its own one-line error
    a = availability(check_kind(kind))
    if not a.ok:
        raise HarnessError(f"--sandbox {kind} is not available here: {a.reason} (fix: {a.fix}; or --sandbox none to run the "
                           "model unsandboxed, only for models you trust)")
