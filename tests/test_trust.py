"""Faults that used to give a green result, each caused for real and its outcome asserted: a run cut
short, a damaged cache, a converter that emits an invalid model, a model whose output ignores its
input, a full or read-only disk, framework log noise. The real CLI in a subprocess, as a user runs it."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import HARNESS, REPO, alive, check_run_schema, results_of, run_cli
from harness.store import read_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    proc = run_cli("run", "-f", "pow,mlp", "-r", "ort,litert", "-n", "3", "--reports", str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return reports


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_so_and_resumes(finished_run, tmp_path, sig, code):
    reports = tmp_path / "reports"
    shutil.copytree(finished_run, reports, symlinks=True)
    before = (reports / "latest").resolve()
    # Its own process group, as a terminal's Ctrl-C reaches it; many iterations keep it busy.
    proc = subprocess.Popen(HARNESS + ["run", "-f", "pow,mlp", "-r", "ort,litert", "-n", "2000", "--reports", str(reports)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    new = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        folders = [p for p in (reports / "runs").iterdir() if p.resolve() != before]
        if folders and (folders[0] / "results.jsonl").exists() and len((folders[0] / "results.jsonl").read_text().splitlines()) >= 2:
            new = folders[0]
            break
        time.sleep(0.2)
    assert new is not None, "the run never got going"
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout + stderr
    run = read_run(new)
    assert run.state == "interrupted" and run.meta.reason == sig.name
    assert run.unreadable == 0, "the line being written was finished"
    assert 2 <= len(run.results) < len(run.planned) and run.missing
    assert f"run interrupted ({sig.name})" in stderr and f"harness run --resume {new.name}" in stderr
    assert (reports / "latest").resolve() == before, "latest moves only to complete runs"
    pids = [info["pid"] for info in run.meta.runtimes.values() if isinstance(info, dict) and "pid" in info]
    assert pids and not any(alive(pid) for pid in pids), "no worker outlives the run"

    report = run_cli("report", str(new), "--reports", str(reports))
    assert report.returncode == 0
    assert f"incomplete run: interrupted ({sig.name}); {len(run.missing)} of {len(run.planned)} planned cases have no result" \
        in (new / "index.html").read_text()
    assert "incomplete run" in (new / "report.md").read_text()

    compared = run_cli("compare", str(before), str(new), "--fail-on", "median:1000%", "--reports", str(reports))
    assert compared.returncode == 1 and "missing" in compared.stdout, compared.stdout
    allowed = run_cli("compare", str(before), str(new), "--fail-on", "median:1000%", "--allow-missing", "--reports", str(reports))
    assert allowed.returncode == 0, allowed.stdout

    resumed = run_cli("run", "--resume", new.name, "--reports", str(reports))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = read_run(new)
    assert run.state == "complete" and run.missing == [] and len(run.results) == len(run.planned)
    assert (reports / "latest").resolve() == new.resolve()
    assert run.meta.summary["cases"] == len(run.planned), "the summary counts every case of the run, resumed or not"
    assert check_run_schema(new) == len(run.planned)


def test_compare_counts_an_unreadable_line_as_missing_and_refuses_runs_with_nothing_in_common(finished_run, tmp_path):
    base = (finished_run / "latest").resolve()
    cut = tmp_path / "cut"
    shutil.copytree(base, cut)
    lines = (cut / "results.jsonl").read_text().splitlines()
    (cut / "results.jsonl").write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    proc = run_cli("compare", str(base), str(cut), "--fail-on", "median:1000%")
    assert proc.returncode == 1
    assert "1 line(s) of the new run's results.jsonl could not be read" in proc.stdout and "1 missing case(s)" in proc.stdout
    other = tmp_path / "other"
    shutil.copytree(base, other)
    (other / "results.jsonl").write_text("\n".join(json.dumps({**json.loads(x), "id": "x" + json.loads(x)["id"]}) for x in lines) + "\n")
    none = run_cli("compare", str(base), str(other))
    assert none.returncode == 2 and "have no case in common" in none.stderr and len(none.stderr.strip().splitlines()) == 1


def _keras(path, kind):
    import keras
    import numpy as np

    if kind == "lstm":
        inputs = keras.Input(shape=(6, 3), name="seq")
        outputs = keras.layers.Dense(2)(keras.layers.LSTM(4)(inputs))
    elif kind == "constant":  # the output ignores its input: a zero kernel and a bias
        inputs = keras.Input(shape=(5,), name="x")
        dense = keras.layers.Dense(3)
        outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    if kind == "constant":
        dense.set_weights([np.zeros((5, 3), "float32"), np.array([0.5, -1.0, 2.0], "float32")])
    model.save(path)


def test_a_converter_that_emits_an_invalid_onnx_model_is_blamed_once_with_the_op(tmp_path):
    model = tmp_path / "rnn.keras"
    _keras(model, "lstm")
    proc = run_cli("check", str(model), "-F", "onnx13,onnx18", "-r", "ort,node-ort,node-ort-web,go-ort", "-b", "1", "-n", "1",
                   "--no-bisect", "--reports", str(tmp_path / "r"))
    assert proc.returncode == 1
    run = read_run(next((tmp_path / "r" / "runs").iterdir()))
    onnx = [r for r in run.results if r.format.startswith("onnx")]
    available = [r for r in onnx if r.status != "skip"]
    assert available, "at least the Python ONNX Runtime ran"
    for r in available:
        assert (r.status, r.stage, r.culprit) == ("error", "validate", "converter"), r
        assert r.evidence["op"] == "PartitionedCall"
        assert "converter emitted PartitionedCall, not an ONNX op" in r.summary
        assert "No Op registered for PartitionedCall" in r.error, "the whole upstream message is kept"
    # One line for the cause, not one per runtime.
    assert f"error at validate, converter: {len(available)} case" in proc.stdout
    assert proc.stdout.count("converter emitted PartitionedCall") == 1
    check_run_schema(run.folder)


def test_a_model_whose_output_ignores_its_input_is_inconclusive_never_pass(tmp_path):
    model = tmp_path / "const.keras"
    _keras(model, "constant")
    args = ["check", str(model), "-F", "savedmodel,onnx13", "-r", "tf,ort", "-b", "2", "-n", "1"]
    proc = run_cli(*args, "--reports", str(tmp_path / "r1"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = results_of(next((tmp_path / "r1" / "runs").iterdir()))
    assert results and {r["status"] for r in results} == {"inconclusive"}
    assert all("does not depend on its input" in r["reason"] and r["culprit"] == "model" for r in results)
    assert "inconclusive" in proc.stdout and "--allow-inconclusive" in proc.stdout
    check_run_schema(next((tmp_path / "r1" / "runs").iterdir()))
    allowed = run_cli(*args, "--allow-inconclusive", "--reports", str(tmp_path / "r2"))
    assert allowed.returncode == 0, allowed.stdout
    # One rule for "ok": the page's summary.json and run.json's summary agree, each way.
    for reports, ok in (("r1", False), ("r2", True)):
        folder = next((tmp_path / reports / "runs").iterdir())
        page, meta = json.loads((folder / "summary.json").read_text()), json.loads((folder / "run.json").read_text())
        assert page["ok"] is meta["summary"]["ok"] is ok, (reports, page["ok"], meta["summary"])


def test_framework_logs_never_reach_the_terminal_unless_verbose(pow_artifacts, tmp_path):
    """check imports TensorFlow (its C++ and absl lines go to fd 2): the user still sees one line."""
    args = ["check", str(pow_artifacts["savedmodel"].model_path), "--signature", "nope", "--reports", str(tmp_path)]
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}  # make TensorFlow as loud as it gets
    proc = run_cli(*args, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: SavedModel {pow_artifacts['savedmodel'].model_path} has no signature 'nope': expected one of ['serving_default']"]
    loud = run_cli("-v", *args, env=env)
    assert loud.returncode == 2 and len(loud.stderr.strip().splitlines()) >= 1


@pytest.mark.parametrize("args, message", [
    (["run", "-n", "-1"], "Invalid value for '--iterations' / '-n': -1 is not in the range x>=0"),
    (["run", "--warmup", "-3"], "Invalid value for '--warmup': -3 is not in the range x>=0"),
    (["run", "--timeout", "0"], "Invalid value for '--timeout': 0.0 is not in the range x>0"),
    (["run", "--resume", "nope"], "run not found: nope"),
    (["bench", "--threads", "0"], "--threads 0 is not valid: expected positive counts"),
    (["compare", "nope"], "run not found: nope"),
    (["compare", "", "latest"], "the run name is empty"),
    (["report", " "], "the run name is empty"),
])
def test_option_values_are_checked_before_any_work(args, message, tmp_path):
    proc = run_cli(*args, "--reports", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "runs").exists(), "nothing was started"


def test_a_full_reports_disk_fails_the_run_in_one_line_and_keeps_what_was_written(small_disk):
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 24 * 1024))  # room for run.json and a few tensors, not all
    proc = run_cli("run", "-f", "mnist_cnn", "-r", "ort,litert", "-b", "4", "--keep-tensors", "-n", "1", "--reports", str(small_disk))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr and "run failed" in proc.stderr
    (folder,) = (small_disk / "runs").iterdir()
    (small_disk / "filler").unlink()
    run = read_run(folder)
    assert run.state in ("failed", "running") and run.unreadable == 0, "every stored line is whole"
    assert not (small_disk / "latest").exists()


def test_a_read_only_reports_or_cache_folder_is_one_line(small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = run_cli("run", "-f", "pow", "-r", "ort", "--reports", str(small_disk))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: cannot write a run folder under {small_disk}: Read-only file system (expected a writable folder with free space)"]
    cache = run_cli("export", "-f", "pow", "-F", "savedmodel", env={"HARNESS_CACHE": str(small_disk / "cache")})
    assert cache.returncode == 2 and len(cache.stderr.strip().splitlines()) == 1
    assert f"cannot create the export cache {small_disk / 'cache'}: Read-only file system" in cache.stderr
