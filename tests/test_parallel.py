"""`harness run -j N` (harness/parallel.py): shares by fixture, exports in processes, an interrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from harness.cases import Case, Selection, matrix
from harness.parallel import shares
from tests.conftest import REPO, run_cli


def test_shares_keep_each_fixture_whole_and_balance_case_counts():
    cases = [Case(f, "onnx13", "ort", batch=b) for f, n in (("a", 6), ("b", 3), ("c", 2), ("d", 1)) for b in range(n)]
    parts = shares(cases, 2)
    assert len(parts) == 2 and sorted(len(p) for p in parts) == [6, 6]
    for p in parts:
        for f in {c.fixture for c in p}:
            assert [c for c in p if c.fixture == f] == [c for c in cases if c.fixture == f]  # whole, in order
    assert shares(cases[:6], 4) == [cases[:6]]  # one fixture: one share, whatever -j says


def test_run_j2_runs_every_case_once_on_two_engines(tmp_path):
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow,mlp", "-F", "savedmodel,onnx13", "-r", "tf,ort", "-b", "1", "-j", "2", "--reports", str(reports), "-o", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = sorted(r["id"] for r in map(json.loads, proc.stdout.splitlines()) if r.get("id"))
    assert got == sorted(c.id for c in matrix(Selection(fixtures=["pow", "mlp"], formats=["savedmodel", "onnx13"], runtimes=["tf", "ort"],
                                                        batches=[1])))
    run = (reports / "latest").resolve()
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == got and all(r["status"] == "pass" for r in lines)
    assert json.loads((run / "run.json").read_text())["options"]["jobs"] == 2
    assert (run / "logs" / "share-1").is_dir(), "the second share had workers of its own"


def test_an_interrupted_j2_run_keeps_what_it_wrote_and_says_interrupted(tmp_path):
    """SIGINT to the whole process group while two shares run: exit 130, state interrupted, every line whole."""
    reports = tmp_path / "reports"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "-f", "pow,mlp,conv3x3", "-r", "tf,ort,litert", "-j", "2", "-n", "200",
                             "--reports", str(reports), "-q"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 300
    results = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((reports / "runs").glob("*/results.jsonl")) if (reports / "runs").is_dir() else []
        if found and found[0].stat().st_size > 0:
            results = found[0]
            break
        time.sleep(0.2)
    assert results is not None, "no case finished in time"
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    meta = json.loads((results.parent / "run.json").read_text())
    assert meta["state"] == "interrupted"
    lines = results.read_text().splitlines()
    assert lines and all(json.loads(line)["status"] for line in lines)
    assert len(lines) < len(meta["planned"])
