"""What the Python side has of its own: signature names through ONNX, TF's signature check, a model file
ONNX Runtime cannot parse, and the client's handling of real workers that die or hang. The protocol
itself (framing, every error by code and field) is tests/protocol_kit, run against every worker."""

import os
import resource
import signal
import sys
import threading

import numpy as np
import pytest

from conftest import worker_pool
from harness.runners import RpcError, WorkerCrash, WorkerTimeout


@pytest.fixture(scope="module")
def ort_worker():
    with worker_pool() as pool:
        yield pool.get("ort")


def _inputs(tmp_path, **arrays):
    paths = {}
    for name, value in arrays.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, value)
        paths[name] = str(path)
    return paths


def test_load_and_run_returns_signature_names(ort_worker, pow_artifacts, tmp_path):
    art = pow_artifacts["onnx13"]
    loaded = ort_worker.call("load", {"artifact": str(art.dir), "format": "onnx13", "device": "cpu", "threads": 1})
    assert [i["name"] for i in loaded["inputs"]] == ["x", "y"] and loaded["load_ns"] > 0
    x = np.array([2.0, 3.0], dtype=np.float32)
    y = np.array([3.0, 2.0], dtype=np.float32)
    reply = ort_worker.call("run", {"handle": loaded["handle"], "inputs": _inputs(tmp_path, x=x, y=y),
                                    "output_dir": str(tmp_path / "out"), "warmup": 1, "iterations": 5})
    assert set(reply["outputs"]) == {"pow_x_y", "pow_y_x"}  # not the ONNX graph's Identity:0 names
    np.testing.assert_allclose(np.load(reply["outputs"]["pow_x_y"]), [8.0, 9.0], rtol=1e-6)
    assert len(reply["samples_ns"]) == 5 and reply["first_ns"] > 0 and reply["peak_rss_bytes"] > 0
    ort_worker.call("unload", {"handle": loaded["handle"]})


def test_ort_names_a_model_file_it_cannot_parse(ort_worker, pow_artifacts, tmp_path):
    """A damaged model.onnx behind a sound artifact.json is ONNX Runtime's own load failure, and the worker
    serves on (the protocol's other errors: tests/protocol_kit, every worker)."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "artifact.json").write_text((pow_artifacts["onnx13"].dir / "artifact.json").read_text())
    (corrupt / "model.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(RpcError) as e:
        ort_worker.call("load", {"artifact": str(corrupt), "format": "onnx13"})
    assert e.value.kind == "load_failed" and str(e.value).startswith("InvalidProtobuf: ") and "Protobuf parsing failed" in str(e.value)
    assert ort_worker.call("info")["runtime"] == "ort"


def test_tf_worker_rejects_missing_signature(pow_artifacts, tmp_path):
    with worker_pool() as pool:
        tf = pool.get("tf")
        with pytest.raises(RpcError, match="has no signature 'nope': expected one of \\['serving_default'\\]") as e:
            tf.call("load", {"artifact": str(pow_artifacts["savedmodel"].dir), "format": "savedmodel", "signature": "nope"})
        assert e.value.kind == "load_failed"


@pytest.fixture
def no_core_dumps():
    """Workers inherit a core size limit of 0: a fatal signal must not leave core files in the repository."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def test_a_worker_aborted_mid_run_is_a_crash_with_its_signal_and_stderr(pow_artifacts, tmp_path, monkeypatch, no_core_dumps):
    """A native abort inside a long run of the real ort worker: the client names the signal and keeps
    what the worker wrote to stderr as it died (Python's fault handler writes the stack there)."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
    x = np.array([2.0, 3.0], dtype=np.float32)
    with worker_pool() as pool:
        worker = pool.get("ort")
        handle = worker.call("load", {"artifact": str(pow_artifacts["onnx13"].dir), "format": "onnx13"})["handle"]
        params = {"handle": handle, "inputs": _inputs(tmp_path, x=x, y=x), "output_dir": str(tmp_path / "out"),
                  "warmup": 0, "iterations": 10**7}  # minutes of work: the abort lands inside this run
        killer = threading.Timer(1.0, os.kill, (worker.proc.pid, signal.SIGABRT))
        killer.start()
        try:
            with pytest.raises(WorkerCrash) as e:
                worker.call("run", params, timeout=120)
        finally:
            killer.cancel()
        assert str(e.value) == "worker ort died during run: signal 6 (SIGABRT)"
        assert "Fatal Python error: Aborted" in e.value.stderr_tail, e.value.stderr_tail
        assert "runners/ort.py" in e.value.stderr_tail, "the worker's own stack, as it wrote it"
        assert not worker.alive


def test_a_worker_that_exits_is_a_crash_with_its_exit_code():
    with worker_pool() as pool:
        worker = pool.get("ort")
        assert worker.call("shutdown") == {}
        worker.proc.wait(timeout=30)
        with pytest.raises(WorkerCrash, match=r"^worker ort died (while sending|during) info: exit code 0$"):
            worker.call("info", timeout=30)


def test_client_kills_a_worker_that_does_not_answer():
    with worker_pool() as pool:
        worker = pool.get("ort")
        pid = worker.proc.pid
        os.kill(pid, signal.SIGSTOP)  # alive but not answering
        with pytest.raises(WorkerTimeout, match=r"^worker ort did not answer info within 1 s; killed$"):
            worker.call("info", timeout=1)
        assert not worker.alive and worker.proc.returncode == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, not merely stopped


# A worker of a few lines that answers load well and run with samples that are not numbers.
TYPED_WORKER = r"""
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    result = {"info": {"runtime": "typed", "formats": ["onnx13"]},
              "load": {"handle": "h1", "load_ns": 2500000, "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 3]}],
                       "outputs": [{"name": "y", "dtype": "float32", "shape": None}]},
              "run": {"outputs": {"y": "/nowhere/y.npy"}, "first_ns": 7, "samples_ns": ["fast"], "peak_rss_bytes": None}}
    print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result.get(req["method"], {})}), flush=True)
"""


def test_answers_are_typed_messages_at_the_client_and_a_wrong_field_is_the_workers_fault():
    """load and run answers are parsed once, at the client, into typed messages (harness/runners/messages.py);
    an answer the message cannot be read from kills the worker as a protocol violation (blamed on its
    runtime), not a KeyError or TypeError deep in the harness."""
    from harness.runners.client import ProtocolViolation, WorkerClient
    from harness.runners.messages import LoadReply, TensorInfo

    worker = WorkerClient("typed", [sys.executable, "-c", TYPED_WORKER])
    try:
        loaded = worker.load({"artifact": "/nowhere", "format": "onnx13"})
        assert loaded == LoadReply("h1", 2500000, (TensorInfo("x", "float32", (None, 3)),), (TensorInfo("y", "float32", None),))
        assert loaded.load_ms == 2.5
        with pytest.raises(ProtocolViolation, match=r"answering run: field 'samples_ns' is \[\"fast\"\] \(expected a list of numbers\)"):
            worker.run({"handle": loaded.handle, "inputs": {}, "output_dir": "/nowhere"})
        assert not worker.alive
    finally:
        worker.kill()
