"""The first diverging node of an ONNX or TFLite artifact (harness/node_search.py), in real runtimes on
real models: every intermediate of the one artifact read out, against a reference runtime for the format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from harness.artifact import Artifact, IOSpec
from harness.cases import Case
from harness.engine import Engine, Options
from harness.export import Exporter
from harness.fixtures import Tolerance, get_fixture
from harness.layer_search import first_divergence
from harness.node_search import first_diverging_node, keras_layer, mark_all
from harness.runners import RUNTIMES, RpcError
from harness.runners.table import REPO
from tests.conftest import run_cli

SCHEMA = json.loads((REPO / "harness" / "schemas" / "protocol.schema.json").read_text())


def _engine(tmp_path: Path, fx) -> Engine:
    return Engine(Exporter(), tmp_path / "scratch", Options(iterations=1, warmup=0), {fx.name: fx})


def _conv_layers(fx) -> list[str]:
    """The Conv2D layers as the SavedModel's export named them (Keras numbers unnamed layers per process)."""
    recorded = Exporter().get(fx, "savedmodel").extra["keras_layers"]
    return [f"{name} (Conv2D)" for name, kind in recorded.items() if kind == "Conv2D"]


def test_the_first_quantised_op_of_an_int8_model_is_found_and_named_by_its_keras_layer(tmp_path):
    """tflite_int8 against the float TFLite model in LiteRT, tensor by tensor: with a tolerance no
    quantised tensor meets, the answer is the first quantised op (the first convolution); with one just
    below that op's SNR, the answer moves on to a later node below it. The tolerance steers it."""
    fx = replace(get_fixture("mnist_cnn"), tolerances={"int8": Tolerance(min_snr_db=200.0)})
    case = Case(fx.name, "tflite_int8", "litert")
    engine = _engine(tmp_path, fx)
    try:
        assert engine.run_case(case).status == "fail"
        d = first_divergence(engine, fx, case)  # what `harness check --bisect` and the orchestrator call
        assert d["supported"] and d["found"] and d["unit"] == "node", d
        assert (d["layer_index"], d["op"], d["previous"]) == (0, "CONV_2D", "(model inputs)"), d
        assert d["keras_layer"] == _conv_layers(fx)[0]
        assert d["against"].startswith("tflite on litert")
        snr = next(iter(d["metrics"].values()))["snr_db"]
        assert 10 < snr < 200

        below = replace(fx, tolerances={"int8": Tolerance(min_snr_db=snr - 0.01)})
        engine.fixtures[fx.name] = below
        moved = first_diverging_node(engine, below, case)
        assert moved["found"] and moved["layer_index"] > 0, moved
        assert next(iter(moved["metrics"].values()))["snr_db"] < snr - 0.01
    finally:
        engine.close()


def _available(runtime: str) -> None:
    avail = RUNTIMES[runtime].availability()
    if not avail.ok:
        pytest.skip(f"{runtime} unavailable: {avail.reason}")


def test_an_onnx_runtime_whose_convolution_rounds_otherwise_is_caught_at_that_node(tmp_path):
    """OpenVINO and ONNX Runtime sum a convolution in another order: at a zero tolerance the case fails,
    and the node search names a convolution node of the marked graph, mapped to its Keras Conv2D, every
    node before it bit-identical in the two runtimes; cut out alone and fed OpenVINO's inputs to it, ONNX
    Runtime computes otherwise: the kernel, not what came in."""
    _available("openvino")
    fx = replace(get_fixture("mnist_cnn"), tolerances={"float32": Tolerance(atol=0.0, rtol=0.0)})
    case = Case(fx.name, "onnx18", "openvino")
    engine = _engine(tmp_path, fx)
    try:
        assert engine.run_case(case).status == "fail"
        d = first_divergence(engine, fx, case)
        assert d["found"] and d["unit"] == "node" and d["op"] == "Conv", d
        assert d["keras_layer"] in _conv_layers(fx)
        assert d["against"].startswith("ort on the same graph") and d["probes"]["compared"] == d["layer_index"] + 1
        # Every input of the node was bit-identical: alone, fed OpenVINO's own inputs, ONNX Runtime computes otherwise.
        assert d["isolated"]["done"] and not d["isolated"]["agrees"] and "kernel itself differs" in d["isolated"]["sentence"], d["isolated"]
    finally:
        engine.close()


def test_a_divergence_inside_a_fused_kernel_is_said_to_be_at_no_node(tmp_path):
    """onnxruntime-node and the Python onnxruntime (another release) differ in the last bits of
    mnist_cnn; with every tensor an output nothing can be fused and every node agrees: the answer says
    so rather than naming a node."""
    _available("node-ort")
    fx = replace(get_fixture("mnist_cnn"), tolerances={"float32": Tolerance(atol=0.0, rtol=0.0)})
    case = Case(fx.name, "onnx18", "node-ort")
    engine = _engine(tmp_path, fx)
    try:
        if engine.run_case(case).status == "pass":
            pytest.skip("node-ort and ort agree bit for bit here: no divergence to search")
        d = first_diverging_node(engine, fx, case)
        assert d["supported"] and not d["found"], d
        assert "fuses" in d["why"] and d["compared"] > 10
    finally:
        engine.close()


def test_mark_all_marks_computed_tensors_only(tmp_path):
    """Initializers and Constant nodes are no computation; an output of unknown type cannot be asked
    for; what is left becomes a graph output with its element type, listed in the derived artifact."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["x", "w"], ["a"], name="scope/dense_3/add"),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", TensorProto.FLOAT, [1], [2.0])),
             helper.make_node("Mul", ["a", "c"], ["m"], name="mul"),
             helper.make_node("Mystery", ["m"], ["q"], name="custom", domain="com.example"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, str(src / "model.onnx"))
    art = Artifact("t", "onnx18", "k", "ok", path="model.onnx", inputs=[IOSpec("x", "x", "float32", [None, 3])],
                   outputs=[IOSpec("y", "y", "float32", [None, 3])], dir=src)
    marked, found, skipped = mark_all(art, tmp_path / "marked")
    assert [(n.node, n.op, n.tensor) for n in found] == [("scope/dense_3/add", "Add", "a"), ("mul", "Mul", "m"), ("relu", "Relu", "y")]
    assert skipped == 1  # the custom op's output: no type to ask for
    saved = onnx.load(str(marked.model_path))
    assert [o.name for o in saved.graph.output] == ["y", "a", "m"]
    assert [(s.name, s.stored_name, s.dtype) for s in marked.outputs] == [("y", "y", "float32"), ("node00000", "a", "float32"),
                                                                          ("node00001", "m", "float32"), ("node00002", "y", "float32")]
    assert keras_layer(found[0].node, {"dense_3"}) == "dense_3"
    assert keras_layer(found[0].node, {"dense_3", "dense"}) == "dense"  # TF's scopes of a Keras 3 export all carry a suffix
    assert keras_layer("mul", {"dense"}) is None
    assert keras_layer("m/re_lu_1_2/Relu", {"re_lu", "re_lu_1"}) == "re_lu_1"  # TF's uniquifying suffix taken off
    assert keras_layer("a/conv2d_1/Relu;a/conv2d_1/BiasAdd", {"conv2d"}) == "conv2d"
    assert keras_layer("m/block_bn_1/batchnorm/add_1;m/block_1/convolution", {"block", "block_bn"}) == "block_bn, block"  # fused by TFLite


def test_litert_answers_its_intermediates_and_other_workers_refuse_to_keep_them(tmp_path):
    """load's `intermediates` (protocol schema): LiteRT keeps every tensor and run answers them, in the
    order the operators ran, quantisation facts with them; a worker that cannot keep them refuses
    (unsupported); a value that is not a boolean is a bad request."""
    from harness.runners import WorkerPool
    from harness.runners.table import WorkerContext

    fx = get_fixture("mnist_cnn")
    ex = Exporter()
    pool = WorkerPool(WorkerContext(ex.root, tmp_path))
    try:
        art = ex.get(fx, "tflite_int8")
        x = np.clip(np.round(fx.make_inputs(1)["image"] / art.inputs[0].scale + art.inputs[0].zero_point), -128, 127).astype(np.int8)
        np.save(tmp_path / "x.npy", x)
        worker = pool.get("litert")
        load = {"artifact": str(art.dir), "format": "tflite_int8", "intermediates": True}
        jsonschema.validate({"jsonrpc": "2.0", "id": 1, "method": "load", "params": load}, {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/request"})
        handle = worker.call("load", load)["handle"]
        reply = worker.call("run", {"handle": handle, "inputs": {"image": str(tmp_path / "x.npy")}, "output_dir": str(tmp_path / "out"),
                                    "iterations": 0})
        jsonschema.validate(reply, {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/run_result"})
        kept = reply["intermediates"]
        assert kept[0]["op"] == "CONV_2D" and kept[0]["scale"] and kept[0]["dtype"] == "int8"
        last = np.load(kept[-1]["path"])
        np.testing.assert_array_equal(last, np.load(reply["outputs"]["output_0"]))  # the last op writes the output
        plain = worker.call("load", {"artifact": str(art.dir), "format": "tflite_int8"})["handle"]
        assert "intermediates" not in worker.call("run", {"handle": plain, "inputs": {"image": str(tmp_path / "x.npy")},
                                                          "output_dir": str(tmp_path / "out2"), "iterations": 0})
        with pytest.raises(RpcError) as bad:
            worker.call("load", {**load, "intermediates": "yes"})
        assert (bad.value.kind, bad.value.code) == ("bad_request", "wrong_param_type")

        onnx_art = ex.get(fx, "onnx13")
        with pytest.raises(RpcError) as refused:
            pool.get("ort").call("load", {"artifact": str(onnx_art.dir), "format": "onnx13", "intermediates": True})
        assert refused.value.kind == "unsupported" and "intermediate" in str(refused.value)
    finally:
        pool.close()


def test_check_names_the_first_diverging_node_of_an_onnx_model(tmp_path):
    """`harness check model.onnx`: the reference is ONNX Runtime; a runtime out of a zero tolerance gets
    the cause line naming the node, and the result's divergence says the same."""
    _available("openvino")
    art = Exporter().get(get_fixture("mnist_cnn"), "onnx18")
    model = tmp_path / "mnist.onnx"
    model.write_bytes(art.model_path.read_bytes())
    proc = run_cli("check", str(model), "-r", "ort", "-r", "openvino", "--atol", "0", "--rtol", "0", "-b", "1", "-n", "1", "--warmup", "0",
                   "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 1, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "first divergence of" in ln)
    assert "at node" in line and "(Conv)" in line and "against ort on the same graph" in line, line
    results = [json.loads(ln) for ln in next((tmp_path / "reports" / "runs").iterdir()).joinpath("results.jsonl").read_text().splitlines()]
    failed = next(r for r in results if r["runtime"] == "openvino")
    assert failed["divergence"]["unit"] == "node" and failed["divergence"]["op"] == "Conv"

    # The page shows it in the case's details, as the Keras layer search's answer is shown.
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(next((tmp_path / "reports" / "runs").iterdir()).joinpath("index.html").as_uri())
        page.locator(f'#matrix span.case[data-case="{failed["id"]}"]').click()
        text = page.locator("p.divergence").inner_text()
        browser.close()
    assert text.startswith("first diverging node: ") and "(Conv)" in text and "against ort on the same graph" in text, text
