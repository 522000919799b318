"""Whether something the harness needs is here (a runtime, a sandbox): the answer `harness doctor` shows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Availability:
    ok: bool
    version: str | None = None
    reason: str = ""
    fix: str = ""
