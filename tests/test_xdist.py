"""pytest-xdist: `-n 2` shares one export cache and produces one run."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_two_xdist_workers_write_one_run(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py",
                           "--harness-fixtures", "pow,mlp", "--harness-runtimes", "tf,ort", "--harness-formats", "savedmodel,onnx13",
                           "--harness-store", str(reports), "--benchmark-disable"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "HARNESS_MATRIX": "full"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "bringing up nodes" in proc.stdout and "8 passed" in proc.stdout
    [run] = list((reports / "runs").iterdir())
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(results) == 8 and len({r["id"] for r in results}) == 8
    meta = json.loads((run / "run.json").read_text())
    assert meta["state"] == "complete" and len(meta["shards"]) == 2, "both workers took part and their runs were merged"
    assert (reports / "latest").resolve() == run.resolve()
