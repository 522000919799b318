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
    # A fixed width: what the CLI prints must not depend on the terminal the tests were started from.
    return subprocess.run(HARNESS + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


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


def check_run_schema(folder: Path) -> int:
    """Validate a run folder's run.json and every line of results.jsonl against the checked-in JSON
    Schemas (harness/schemas); returns the number of results checked."""
    import json

    import jsonschema

    schemas = REPO / "harness" / "schemas"
    run_schema = json.loads((schemas / "run.schema.json").read_text())
    result_schema = json.loads((schemas / "result.schema.json").read_text())
    jsonschema.validate(json.loads((folder / "run.json").read_text()), run_schema)
    lines = [line for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    for line in lines:
        jsonschema.validate(json.loads(line), result_schema)
    return len(lines)
