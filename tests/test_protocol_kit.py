"""The worker conformance kit: the language-neutral protocol cases of tests/protocol_kit/cases.json, run
against a worker of every language. A new worker is listed in WORKERS with the format it loads and gets
the whole protocol test; the per-language suites (js/test, go/...) keep only what is their own."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from harness.export import Exporter
from harness.fixtures import get_fixture
from harness.runners import RpcError, WorkerPool
from harness.runners.table import RUNTIMES

KIT = json.loads((Path(__file__).parent / "protocol_kit" / "cases.json").read_text())["cases"]
# One worker of each language and binding, with the format of the pow fixture it loads.
WORKERS = {
    "tf": "savedmodel", "litert": "tflite", "ort": "onnx13",
    "node-tfjs-cpu": "tfjs_graph", "node-ort": "onnx13",
    "go-tfgo": "savedmodel", "go-ort": "onnx13",
    "browser-ort-wasm": "onnx13",
}


def _other_format(runtime: str) -> str:
    return next(f for f in ("tflite", "onnx13", "savedmodel") if f not in RUNTIMES[runtime].formats)


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Started on first use, one per runtime, each with the pow model loaded (the `$handle`)."""
    started: dict[str, tuple] = {}
    pool = WorkerPool()
    exporter = Exporter()

    def get(runtime: str):
        if runtime not in started:
            avail = RUNTIMES[runtime].availability()
            if not avail.ok:
                if os.environ.get("CI") == "true" and RUNTIMES[runtime].required_in_ci:
                    pytest.fail(f"runtime {runtime} is required in CI but unavailable: {avail.reason}")
                pytest.skip(f"runtime {runtime} unavailable: {avail.reason}")
            fmt, other = WORKERS[runtime], _other_format(runtime)
            art = exporter.get(get_fixture("pow"), fmt)
            other_art = exporter.get(get_fixture("pow"), other)
            worker = pool.get(runtime)
            handle = worker.call("load", {"artifact": str(art.dir), "format": fmt})["handle"]
            tmp = tmp_path_factory.mktemp(runtime)
            meta = json.loads((art.dir / "artifact.json").read_text())
            variants = {}
            for name, text in [("mislabelled", json.dumps({**meta, "format": other})), ("corrupt", '{"format": '),
                               ("array", "[1]"), ("failed", json.dumps({**meta, "status": "error", "error": "converter exploded"}))]:
                (tmp / name).mkdir()
                (tmp / name / "artifact.json").write_text(text)
                variants[f"${name}_artifact"] = str(tmp / name)
            started[runtime] = (worker, {"$artifact": str(art.dir), "$format": fmt, "$other_artifact": str(other_art.dir),
                                         "$other_format": other, "$handle": handle, "$tmp": str(tmp),
                                         "$formats": repr(list(RUNTIMES[runtime].formats)), **variants})
        return started[runtime]

    yield get
    pool.close()


def _substitute(value, names: dict):
    if isinstance(value, str):
        for key in sorted(names, key=len, reverse=True):
            value = value.replace(key, names[key])
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def _tensor_file(spec: str, folder: Path, name: str) -> str:
    path = folder / f"{name}-{abs(hash(spec))}.npy"
    if spec == "absent":
        return str(folder / "absent.npy")
    if spec == "corrupt":
        path.write_bytes(b"not numpy at all")
        return str(path)
    m = re.fullmatch(r"(f32|f64)\[([\d,]+)\](?::([-\d.,]+))?", spec)
    assert m, f"kit input spec {spec!r}"
    shape = [int(d) for d in m.group(2).split(",")]
    dtype = np.float32 if m.group(1) == "f32" else np.float64
    values = np.array([float(v) for v in m.group(3).split(",")], dtype) if m.group(3) else np.ones(shape, dtype)
    np.save(path, values.reshape(shape))
    return str(path)


def _check_message(runtime: str, message: str, expect: dict) -> None:
    """Word for word where every language can say the same thing; else its start and a part."""
    message = message.replace(f"runtime {runtime} ", "runtime R ")
    if "message" in expect:
        assert message == expect["message"], f"{runtime}: {message!r}"
    assert message.startswith(expect.get("prefix", "")), f"{runtime}: {message!r}"
    assert expect.get("contains", "") in message, f"{runtime}: {message!r}"


@pytest.mark.parametrize("case", KIT, ids=[c["name"].replace(" ", "_") for c in KIT])
@pytest.mark.parametrize("runtime", list(WORKERS))
def test_protocol_case(workers, runtime, case):
    worker, names = workers(runtime)
    expect = _substitute(case["expect"], names)
    if "raw" in case:
        worker.proc.stdin.write(case["raw"] + "\n")
        worker.proc.stdin.flush()
        answer = json.loads(worker._lines.get(timeout=60))
        error = answer.get("error")
        assert error is not None, answer
        assert error["data"]["kind"] == expect["error"]["kind"]
        if "code" in expect["error"]:
            assert error["code"] == expect["error"]["code"]
        _check_message(runtime, error["message"], expect["error"])
        return
    request = _substitute(case["request"], names)
    params = request.get("params")
    if isinstance(params, dict) and isinstance(params.get("inputs"), dict):
        folder = Path(names["$tmp"])
        params["inputs"] = {k: _tensor_file(v, folder, k) for k, v in params["inputs"].items()}
    try:
        result = worker.call(request["method"], params)
    except RpcError as e:
        assert "error" in expect, f"{runtime} answered an error where a result was expected: {e.kind}: {e}"
        assert e.kind == expect["error"]["kind"], f"{runtime}: {e.kind}: {e}"
        _check_message(runtime, str(e), expect["error"])
        return
    assert "error" not in expect, f"{runtime} answered {result} where the error {expect['error']} was expected"
    assert set(expect.get("result_keys", [])) <= set(result), result
    for key, value in expect.get("result", {}).items():
        assert result[key] == value
    if "formats_include" in expect:
        assert expect["formats_include"] in result["formats"]
        assert set(result["formats"]) == set(RUNTIMES[runtime].formats), "the worker's formats are the runtime table's"
    if "samples" in expect:
        assert len(result["samples_ns"]) == expect["samples"]
    if "min_sample_ns" in expect:
        assert min(result["samples_ns"]) >= expect["min_sample_ns"], result["samples_ns"]
    for name, values in expect.get("outputs", {}).items():
        np.testing.assert_allclose(np.load(result["outputs"][name]), values, rtol=1e-5)
