import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="session")
def exporter():
    """Artifacts from the shared content-addressed cache: the key covers fixture source, exporter
    source and converter versions, so a cached artifact is exactly what a fresh export would write."""
    from harness.export import Exporter

    return Exporter()


@pytest.fixture(scope="session")
def pow_artifacts(exporter):
    from harness.fixtures import get_fixture

    fx = get_fixture("pow")
    return {fmt: exporter.get(fx, fmt) for fmt in ("savedmodel", "onnx13", "tflite", "tflite_int8")}


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(HARNESS + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up (needs root, as on the project's machines and in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
