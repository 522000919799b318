"""Result store: run folder layout, appended results, atomic run.json, latest link, damaged runs."""

import json

import pytest

from harness.errors import HarnessError
from harness.store import RunStore, load_run, sanitize


def test_run_folder_results_and_latest(tmp_path):
    store = RunStore(tmp_path, {"command": "test"})
    meta = json.loads((store.dir / "run.json").read_text())
    env = meta["environment"]
    assert env["cores"] >= 1 and env["memory_bytes"] > 0 and env["cpu"] and env["os"]
    assert meta["finished"] is None
    store.add({"id": "a", "status": "pass", "metrics": {"y": {"snr_db": float("inf")}}})
    # Appended and flushed at once: a reader sees it before the run ends.
    assert json.loads((store.dir / "results.jsonl").read_text())["metrics"]["y"]["snr_db"] == "inf"
    store.add({"id": "b", "status": "fail"})
    store.set_runtimes({"ort": {"versions": {"onnxruntime": "x"}}})
    store.finish({"cases": 2})
    meta, results = load_run(tmp_path / "latest")
    assert meta["finished"] and meta["summary"] == {"cases": 2} and meta["runtimes"]["ort"]
    assert [r["id"] for r in results] == ["a", "b"]

    second = RunStore(tmp_path, {})
    second.finish({})
    assert (tmp_path / "latest").resolve() == second.dir.resolve()
    assert store.dir.exists(), "an older run is never removed"


def test_half_written_run_keeps_complete_lines(tmp_path):
    store = RunStore(tmp_path, {})
    store.add({"id": "a", "status": "pass"})
    with open(store.dir / "results.jsonl", "a") as f:
        f.write('{"id": "b", "sta')  # the run died mid-line
    meta, results = load_run(store.dir)
    assert meta["finished"] is None and [r["id"] for r in results] == ["a"]


def test_bad_run_folders(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        load_run(tmp_path / "nope")
    store = RunStore(tmp_path, {})
    (store.dir / "run.json").write_text('{"schema": 99}')
    with pytest.raises(HarnessError, match="schema 99, expected 1"):
        load_run(store.dir)


def test_sanitize_non_finite():
    assert sanitize({"a": [float("nan"), float("-inf"), 1.5]}) == {"a": ["nan", "-inf", 1.5]}
