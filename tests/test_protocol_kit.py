"""The worker conformance kit: the language-neutral protocol cases of tests/protocol_kit/cases.json, run
against a worker of every language. A new worker is marked `protocol_kit` in the runtime table (a runtime
of the matrix: WORKERS) or listed in KIT_ONLY (a worker the kit starts itself) with the format it loads and gets the whole protocol test; the
per-language suites (js/test, go/...) keep only what is their own. Every answer is validated against
harness/schemas/protocol.schema.json, and errors are checked on their structure (kind, code, fields);
the sentence a person reads is formed by the harness (harness/runners/errors.py) and checked too."""

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from conftest import worker_pool
from harness.export import Exporter
from harness.fixtures import get_fixture
from harness.runners import RpcError, WorkerClient
from harness.runners.errors import SENTENCES, ErrorData
from harness.runners.table import REPO, RUNTIMES

KIT = json.loads((Path(__file__).parent / "protocol_kit" / "cases.json").read_text())["cases"]
SCHEMA = json.loads((REPO / "harness" / "schemas" / "protocol.schema.json").read_text())
# One worker of each language and binding (the runtime table's entries marked protocol_kit: one per worker
# program at least, tests/test_registries.py), with the format of the pow fixture it loads: its first.
WORKERS = {name: spec.formats[0] for name, spec in RUNTIMES.items() if spec.protocol_kit}


@dataclass(frozen=True)
class KitWorker:
    """A worker that is no runtime of the matrix: the kit starts it itself."""

    binary: Path
    sources: Path  # a binary older than a file under its src/ is stale
    format: str
    formats: tuple[str, ...]
    setup: str


# The toy worker in Rust (rust/): the protocol in a language the harness does not otherwise use, to show
# what a new language costs; its runtime interprets TF.js graph models of a few element-wise ops.
KIT_ONLY = {
    "rust-toy": KitWorker(REPO / "rust" / "target" / "release" / "harness-toy-worker", REPO / "rust", "tfjs_graph", ("tfjs_graph",), "make rust"),
}


def _formats(runtime: str) -> tuple[str, ...]:
    return KIT_ONLY[runtime].formats if runtime in KIT_ONLY else RUNTIMES[runtime].formats


def _other_format(runtime: str) -> str:
    return next(f for f in ("tflite", "onnx13", "savedmodel", "tfjs_graph") if f not in _formats(runtime))


def _unavailable(runtime: str) -> str | None:
    """Why the worker cannot be tested here, or None."""
    if runtime in KIT_ONLY:
        kit = KIT_ONLY[runtime]
        if not kit.binary.exists():
            return f"{kit.binary.relative_to(REPO)} is not built (set up: {kit.setup})"
        newest = max(p.stat().st_mtime for p in kit.sources.glob("src/**/*"))  # an edit there always relinks
        if kit.binary.stat().st_mtime < newest:
            return f"{kit.binary.relative_to(REPO)} is older than its sources (rebuild: {kit.setup})"
        return None
    avail = RUNTIMES[runtime].availability()
    return None if avail.ok else avail.reason


def _skip_or_fail(runtime: str, reason: str) -> None:
    required = runtime in KIT_ONLY or RUNTIMES[runtime].required_in_ci
    if os.environ.get("CI") == "true" and required:
        pytest.fail(f"worker {runtime} is required in CI but unavailable: {reason}")
    pytest.skip(f"worker {runtime} unavailable: {reason}")


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"})


RESPONSE = _validator("response")
REQUEST = _validator("request")
RESULTS = {method: _validator(f"{method}_result") for method in ("info", "load", "run", "unload", "shutdown")}
_ids = itertools.count(10**6)  # request ids of the kit's own, apart from the client's


def _exchange(worker: WorkerClient, line: str) -> dict:
    """Send one raw line, read the answer, and hold it to the schema."""
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(line + "\n")
    worker.proc.stdin.flush()
    answer = json.loads(worker._lines.get(timeout=60))
    errors = sorted(RESPONSE.iter_errors(answer), key=str)
    assert not errors, f"{worker.name} answered {answer}, which the protocol schema refuses: {errors[0].message} at {list(errors[0].absolute_path)}"
    return answer


def _call(worker: WorkerClient, method: str, params) -> dict:
    request = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
    answer = _exchange(worker, json.dumps(request))
    assert answer["id"] == request["id"], answer
    if "result" in answer:
        errors = list(RESULTS[method].iter_errors(answer["result"]))
        assert not errors, f"{worker.name}: the {method} result {answer['result']} breaks the schema: {errors[0].message}"
    return answer


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Started on first use, one per runtime, each with the pow model loaded (the `$handle`)."""
    started: dict[str, tuple] = {}
    pool = worker_pool()
    exporter = Exporter()
    own: list[WorkerClient] = []

    def get(runtime: str):
        if runtime not in started:
            reason = _unavailable(runtime)
            if reason is not None:
                _skip_or_fail(runtime, reason)
            fmt = KIT_ONLY[runtime].format if runtime in KIT_ONLY else WORKERS[runtime]
            other = _other_format(runtime)
            art = exporter.get(get_fixture("pow"), fmt)
            other_art = exporter.get(get_fixture("pow"), other)
            if runtime in KIT_ONLY:
                worker = WorkerClient(runtime, [str(KIT_ONLY[runtime].binary)], cwd=REPO)
                own.append(worker)
                worker.call("info")
            else:
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
            formats = list(_formats(runtime))
            started[runtime] = (worker, {"$artifact": str(art.dir), "$format": fmt, "$other_artifact": str(other_art.dir),
                                         "$other_format": other, "$handle": handle, "$tmp": str(tmp),
                                         "$formats_repr": repr(formats), "$formats": formats, **variants})
        return started[runtime]

    yield get
    pool.close()
    for worker in own:
        worker.close()


def _substitute(value, names: dict):
    """Placeholders replaced: a whole value by its name's value (a list stays a list), else as text."""
    if isinstance(value, str):
        if value in names:
            return names[value]
        for key in sorted((k for k in names if isinstance(names[k], str)), key=len, reverse=True):
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


def _same(got, want) -> bool:
    """Equal, with lists of names in any order (the schema fixes no order for them)."""
    if isinstance(want, list) and isinstance(got, list) and all(isinstance(w, str) for w in want):
        return sorted(got) == sorted(want) if all(isinstance(g, str) for g in got) else False
    return bool(got == want)


def _check_error(runtime: str, error: dict, expect: dict) -> None:
    """The structure first, then the sentence the harness forms from it."""
    data = error["data"]
    assert (data["kind"], data["code"]) == (expect["kind"], expect["code"]), f"{runtime}: {error}"
    if "rpc_code" in expect:
        assert error["code"] == expect["rpc_code"], f"{runtime}: {error}"
    for key in ("field", "expected", "got", "path"):
        if key in expect:
            assert _same(data.get(key), expect[key]), f"{runtime}: {key} is {data.get(key)!r}, expected {expect[key]!r} in {error}"
    if expect.get("detail") is True:
        assert isinstance(data.get("detail"), str) and data["detail"].strip(), f"{runtime}: no detail in {error}"
    elif "detail" in expect:
        assert data.get("detail") == expect["detail"], f"{runtime}: {error}"
    rpc = RpcError.from_answer(error, runtime)
    assert rpc.kind == expect["kind"]
    sentence = str(rpc).replace(f"runtime {runtime} ", "runtime R ")
    if "sentence" in expect:
        assert sentence == expect["sentence"], f"{runtime}: {sentence!r}"
    assert sentence.startswith(expect.get("sentence_prefix", "")), f"{runtime}: {sentence!r}"
    assert expect.get("sentence_contains", "") in sentence, f"{runtime}: {sentence!r}"


@pytest.mark.parametrize("case", KIT, ids=[c["name"].replace(" ", "_") for c in KIT])
@pytest.mark.parametrize("runtime", [*WORKERS, *KIT_ONLY])
def test_protocol_case(workers, runtime, case):
    worker, names = workers(runtime)
    expect = _substitute(case["expect"], names)
    if "raw" in case:
        answer = _exchange(worker, case["raw"])
        assert "error" in answer, answer
        _check_error(runtime, answer["error"], expect["error"])
        return
    request = _substitute(case["request"], names)
    params = request.get("params")
    if isinstance(params, dict) and isinstance(params.get("inputs"), dict):
        folder = Path(names["$tmp"])
        params["inputs"] = {k: _tensor_file(v, folder, k) for k, v in params["inputs"].items()}
    answer = _call(worker, request["method"], params if params is not None else {})
    if "error" in answer:
        assert "error" in expect, f"{runtime} answered an error where a result was expected: {answer['error']}"
        _check_error(runtime, answer["error"], expect["error"])
        return
    result = answer["result"]
    assert "error" not in expect, f"{runtime} answered {result} where the error {expect['error']} was expected"
    assert not list(REQUEST.iter_errors({"jsonrpc": "2.0", "id": 1, **request})), "a request that succeeds is one the schema takes"
    assert set(expect.get("result_keys", [])) <= set(result), result
    for key, value in expect.get("result", {}).items():
        assert result[key] == value
    if "formats_include" in expect:
        assert expect["formats_include"] in result["formats"]
        assert set(result["formats"]) == set(_formats(runtime)), "the worker's formats are the runtime table's"
    if "samples" in expect:
        assert len(result["samples_ns"]) == expect["samples"]
    if "min_sample_ns" in expect:
        assert min(result["samples_ns"]) >= expect["min_sample_ns"], result["samples_ns"]
    for name, values in expect.get("outputs", {}).items():
        np.testing.assert_allclose(np.load(result["outputs"][name]), values, rtol=1e-5)


def test_every_code_of_the_schema_has_a_sentence_and_no_other():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    codes = SCHEMA["$defs"]["error_data"]["properties"]["code"]["enum"]
    assert sorted(SENTENCES) == sorted(codes)
    described = {c for rule in SCHEMA["$defs"]["error_data"]["allOf"] for c in
                 ([rule["if"]["properties"]["code"]["const"]] if "const" in rule["if"]["properties"]["code"] else rule["if"]["properties"]["code"]["enum"])}
    assert described == set(codes), "each code says which fields it gives"


def test_the_harness_reads_errors_of_older_and_newer_workers():
    """A worker without structured errors (an older build in its own environment) keeps its own
    message; a code this harness does not know shows its facts rather than nothing."""
    old = RpcError.from_answer({"code": -32000, "message": "input 'x' has dtype float64, expected float32", "data": {"kind": "bad_input"}}, "ort")
    assert (old.kind, str(old), old.code) == ("bad_input", "input 'x' has dtype float64, expected float32", None)
    new = RpcError.from_answer({"code": -32000, "message": "too_hot", "data": {"kind": "run_failed", "code": "too_hot", "got": 90}}, "ort")
    assert (new.kind, str(new), new.code) == ("run_failed", "too_hot: {'got': 90}", "too_hot")
    assert ErrorData("load_failed", "export_failed", path="/a").sentence("ort") == "artifact /a failed to export: None"


def test_the_harness_sends_what_the_schema_defines(tmp_path, monkeypatch):
    """Every request the engine sends in a real case (the reference's worker and the case's) is one the
    protocol schema takes: the schema describes the harness's side too, not only the workers'."""
    from harness.cases import Case
    from harness.engine import Engine, Options

    sent: list[dict] = []
    exchange = WorkerClient._exchange  # every request passes here: call() and the typed load() and run()

    def checked(self, method, params, timeout):
        sent.append({"jsonrpc": "2.0", "id": len(sent), "method": method, "params": params or {}})
        return exchange(self, method, params, timeout)

    monkeypatch.setattr(WorkerClient, "_exchange", checked)
    engine = Engine(Exporter(), tmp_path, Options(iterations=2, warmup=1), {"pow": get_fixture("pow")})
    try:
        result = engine.run_case(Case("pow", "onnx13", "ort"))
    finally:
        engine.close()
    assert result.status == "pass", result.error
    assert {"info", "load", "run", "shutdown"} <= {r["method"] for r in sent}
    for request in sent:
        errors = list(REQUEST.iter_errors(request))
        assert not errors, f"the harness sent {request}, which the protocol schema refuses: {errors[0].message}"
