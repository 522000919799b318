"""Faults that used to give a wrong or lost answer (issue 23), each caused for real — a helper edited,
bytes flipped, a run resumed after its model changed or while it still runs, a cache refreshed under a
reader, a baseline cut short, a harness killed with SIGKILL, a disk made read-only — and its outcome
asserted, with what was already written checked to be intact. The real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import HARNESS, REPO, run_cli
from harness.store import read_run


def _results(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines() if x.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _fixtures_copy(root: Path) -> Path:
    """A copy of the fixtures package, first on PYTHONPATH as `harness_fixtures`: its files can be edited
    as a fixture author edits them, without touching the checkout."""
    pkg = root / "pkg" / "harness_fixtures"
    pkg.mkdir(parents=True)
    for f in (REPO / "fixtures").iterdir():
        if f.suffix in (".py", ".toml"):
            shutil.copy(f, pkg / f.name)
    return pkg


def _wait_for(what, timeout: float = 300, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    return None


def _lines(folder: Path) -> int:
    path = folder / "results.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- 1. a fixture's shared helper is part of its cache key ----------------------------------------------

def test_a_change_of_a_shared_helper_makes_a_new_artifact(tmp_path):
    pkg = _fixtures_copy(tmp_path)
    # resize_norm takes its pixel scale from the shared helper module, as the architecture fixtures take their layers.
    source = (pkg / "resize_norm.py").read_text()
    (pkg / "resize_norm.py").write_text(source.replace("layers.Rescaling(1.0 / 127.5,", "layers.Rescaling(_nn.pixel_scale(),"))
    helper = (pkg / "_nn.py").read_text()
    env = {"PYTHONPATH": str(pkg.parent), "HARNESS_CACHE": str(tmp_path / "cache")}

    def export() -> dict:
        proc = run_cli("export", "-f", "resize_norm", "-F", "savedmodel", "--json", env=env)
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    raise ValueError('a broken helper')\n")  # the helper broken
    broken = export()
    assert broken["status"] == "error", broken
    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    return 1.0 / 127.5\n")  # ... and mended: not the old error from the cache
    mended = export()
    assert mended["status"] == "ok" and mended["key"] != broken["key"], mended
    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    return 1.0 / 255\n")  # a default changed: a new SavedModel, not the stale one
    changed = export()
    assert changed["status"] == "ok" and changed["key"] not in (broken["key"], mended["key"]), changed
