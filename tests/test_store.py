"""Result store: run folder layout, appended results, atomic run.json, run states, latest link, damaged runs."""

import json

import pytest

from harness.errors import HarnessError
from harness.store import RunStore, read_run, sanitize


def _case(cid: str) -> dict:
    return {"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1}


def test_run_folder_results_and_latest(tmp_path):
    planned = [{"id": "a"}, {"id": "b"}]
    store = RunStore(tmp_path, {"command": "test"}, planned=planned)
    meta = json.loads((store.dir / "run.json").read_text())
    env = meta["environment"]
    assert env["cores"] >= 1 and env["memory_bytes"] > 0 and env["cpu"] and env["os"]
    assert meta["finished"] is None and meta["state"] == "running" and meta["planned"] == planned
    store.add({**_case("a"), "status": "pass", "metrics": {"y": {"snr_db": float("inf")}}})
    # Appended and flushed at once: a reader sees it before the run ends.
    assert json.loads((store.dir / "results.jsonl").read_text())["metrics"]["y"]["snr_db"] == "inf"
    assert read_run(store.dir).missing == ["b"]
    store.add({**_case("b"), "status": "fail"})
    store.set_runtimes({"ort": {"versions": {"onnxruntime": "x"}}})
    store.finish({"cases": 2})
    run = read_run(tmp_path / "latest")
    assert run.meta.finished and run.meta.summary == {"cases": 2} and run.meta.runtimes["ort"]
    assert run.state == "complete" and run.missing == [] and run.problems == []
    assert [r.id for r in run.results] == ["a", "b"]

    second = RunStore(tmp_path, {})
    second.finish({})
    assert (tmp_path / "latest").resolve() == second.dir.resolve()
    assert store.dir.exists(), "an older run is never removed"


@pytest.mark.parametrize("state", ["interrupted", "failed"])
def test_an_incomplete_run_never_becomes_latest(tmp_path, state):
    done = RunStore(tmp_path, {})
    done.finish({})
    cut = RunStore(tmp_path, {}, planned=[{"id": "a"}, {"id": "b"}, {"id": "c"}])
    cut.add({**_case("a"), "status": "pass"})
    cut.finish({"cases": 1}, state=state, reason="SIGINT" if state == "interrupted" else "No space left on device")
    assert (tmp_path / "latest").resolve() == done.dir.resolve()
    run = read_run(cut.dir)
    assert run.state == state and run.missing == ["b", "c"]
    assert any(p.startswith(f"incomplete run: {state}") and "2 of 3 planned cases have no result" in p for p in run.problems)


def test_half_written_run_keeps_complete_lines_and_resume_cuts_the_half_line(tmp_path):
    store = RunStore(tmp_path, {}, planned=[{"id": "a"}, {"id": "b"}])
    store.add({**_case("a"), "status": "pass"})
    with open(store.dir / "results.jsonl", "a") as f:
        f.write('{"id": "b", "sta')  # the run died mid-line
    store.release()  # ... and the kernel let go of its lock
    run = read_run(store.dir)
    assert run.meta.finished is None and [r.id for r in run.results] == ["a"]
    assert run.unreadable == 1 and run.missing == ["b"] and run.state == "running"
    assert any("did not finish" in p for p in run.problems)
    again = RunStore(tmp_path, {}, resume=store.dir)
    again.add({**_case("b"), "status": "pass"})
    again.finish({})
    run = read_run(store.dir)
    assert [r.id for r in run.results] == ["a", "b"] and run.unreadable == 0 and run.state == "complete"
    assert (tmp_path / "latest").resolve() == store.dir.resolve()


def test_bad_run_folders_and_names(tmp_path):
    with pytest.raises(HarnessError, match="run not found"):
        read_run(tmp_path / "nope")
    store = RunStore(tmp_path, {})
    (store.dir / "run.json").write_text('{"schema": 99}')
    assert any("schema 99" in p for p in read_run(store.dir).problems)
    for name in ("", " ", "a/b", ".hidden"):
        with pytest.raises(HarnessError, match="is not valid: expected a non-empty name"):
            RunStore(tmp_path, {}, run_id=name)


def test_sanitize_non_finite():
    assert sanitize({"a": [float("nan"), float("-inf"), 1.5]}) == {"a": ["nan", "-inf", 1.5]}


def test_run_json_final_state_fits_in_place_on_a_full_disk(small_disk):
    store = RunStore(small_disk, {}, planned=[{"id": "a"}, {"id": "b"}])
    store.add({**_case("a"), "status": "pass"})
    free = __import__("shutil").disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * free)  # not one block left
    store.finish({"cases": 1}, state="failed", reason="No space left on device")
    run = read_run(store.dir)
    assert run.state == "failed" and run.meta.reason == "No space left on device" and run.missing == ["b"]


def test_a_line_that_is_not_a_case_result_is_unreadable(tmp_path):
    store = RunStore(tmp_path, {})
    store.add({**_case("a"), "status": "pass"})
    with pytest.raises(ValueError, match="not a case result: 'fixture' missing"):
        store.add({"id": "x", "status": "pass"})  # the store writes case results only
    with open(store.dir / "results.jsonl", "a") as f:  # valid JSON, but no fixture, format, runtime, batch
        f.write('{"id": "x", "status": "pass"}\n')
    store.finish({})
    run = read_run(store.dir)
    assert [r.id for r in run.results] == ["a"] and run.unreadable == 1


def test_rewrite_results_changes_every_result_through_the_record(tmp_path):
    from harness.store import rewrite_results

    store = RunStore(tmp_path, {"command": "test"})
    store.add({**_case("gemm272-a"), "status": "pass"})
    store.add({**_case("gemm272-b"), "status": "fail"})
    store.finish({"cases": 2})

    def relabel(r):
        r.id = r.id.replace("gemm272", "gemm256")
        return r

    rewrite_results(store.dir, relabel)
    run = read_run(store.dir)
    assert [r.id for r in run.results] == ["gemm256-a", "gemm256-b"] and [r.status for r in run.results] == ["pass", "fail"]
    assert not list(store.dir.glob("*.tmp")) and run.problems == []
