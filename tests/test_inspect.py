"""`harness inspect`: what `inspect()` reads from real artifacts of the export cache and from real
converter output (a Keras 3 LSTM through tf2onnx and the TFLite converter), the problems it flags
without running anything, one-line HarnessErrors for bad paths, and `render` within 100 columns."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conftest import SCALE_LAYER
from harness.errors import HarnessError
from harness.inspect.render import render
from harness.inspect.runs import inspect
from harness.runners.table import RUNTIMES

REPO = Path(__file__).resolve().parents[1]
# Every runtime that takes a format, in the runtime table's order (Node and browser workers alike).
TFJS = [name for name, spec in RUNTIMES.items() if "tfjs_graph" in spec.formats]
ORT = [name for name, spec in RUNTIMES.items() if "onnx13" in spec.formats]


@pytest.fixture(scope="module")
def art(exporter):
    """`art(fixture, format)`: an artifact from the shared export cache (exported on first use)."""
    from harness.fixtures import get_fixture

    def get(fixture: str, fmt: str):
        a = exporter.get(get_fixture(fixture), fmt)
        assert a.status == "ok", a.error
        return a

    return get


def only(info: dict) -> dict:
    assert len(info["signatures"]) == 1, info["signatures"]
    return info["signatures"][0]


def names(sig: dict) -> tuple[list, list]:
    return ([(t["name"], t["dtype"], t["shape"]) for t in sig["inputs"]],
            [(t["name"], t["dtype"], t["shape"]) for t in sig["outputs"]])


def runtimes(entries: list[dict]) -> list[str]:
    return [r["runtime"] for r in entries]


def text_of(info: dict, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    render(info, console)
    return console.export_text()


# --- each kind ------------------------------------------------------------------------------------


def test_savedmodel_every_tag_set_and_signature_without_loading_it(art):
    from harness.export import FORMATS
    from harness.export.common import read_signature

    sm = art("pow", "savedmodel")
    info = inspect(sm.model_path)
    assert info["kind"] == "savedmodel" and info["format"] == "savedmodel"
    assert info["tag_sets"] == [["serve"]]
    sig = only(info)
    assert sig["key"] == "serving_default" and sig["tags"] == ["serve"]
    assert names(sig) == ([("x", "float32", [None]), ("y", "float32", [None])],
                       [("pow_x_y", "float32", [None]), ("pow_y_x", "float32", [None])])
    # The same reading as read_signature, which `harness check` uses.
    ins, outs = read_signature(sm.model_path)
    assert [(t["name"], t["stored_name"], t["dtype"], t["shape"]) for t in sig["inputs"] + sig["outputs"]] == \
        [(s.name, s.stored_name, s.dtype, s.shape) for s in ins + outs]
    assert info["ops"]["Pow"] == 2, "graph_def nodes and the function library are counted"
    assert info["functions"] >= 1
    assert "tf" in runtimes(info["runs_on"]["runtimes"]) and "go-tfgo" in runtimes(info["runs_on"]["runtimes"])
    exports = [e["format"] for e in info["runs_on"]["check_exports"]]
    assert exports == [f for f, spec in FORMATS.items() if not spec.keras_only and not spec.opt_in], "keras-only formats are for Keras files"
    assert info["problems"] == []
    # --signature/--tag narrow it; a tag it lacks is the same one-line error `harness check` gives.
    assert inspect(sm.model_path, signature="serving_default", tag="serve")["signatures"] == info["signatures"]
    with pytest.raises(HarnessError, match=r"has no tag 'gpu': expected one of \[\['serve'\]\]") as e:
        inspect(sm.model_path, tag="gpu")
    assert str(sm.model_path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HarnessError, match=r"no signature 'nope': expected one of \['serving_default'\]"):
        inspect(sm.model_path, signature="nope")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_files_are_read_from_their_config_without_keras(art, fmt):
    from harness.export import FORMATS

    info = inspect(art("mlp", fmt).model_path)
    assert info["kind"] == fmt and info["format"] == fmt
    assert info["model_class"] == "Functional" and info["model_name"] == "mlp"
    assert info["layers"] == {"Dense": 2, "InputLayer": 1}
    assert names(only(info)) == ([("features", "float32", [None, 32])], [("output_0", "float32", [None, 1])])
    assert runtimes(info["runs_on"]["runtimes"]) == ["tf"]
    assert [e["format"] for e in info["runs_on"]["check_exports"]] == [f for f, spec in FORMATS.items() if not spec.opt_in], \
        "a Keras file goes to every format (opt-in ones only when named)"
    # The known deviation that holds for every Keras 3 model: its layers model does not load in TF.js 4.22
    # (listed for the Node and the browser workers).
    assert {p["message"].split(" (")[0] for p in info["problems"]} == {"known deviation of tfjs_layers on node-tfjs-*",
                                                                        "known deviation of tfjs_layers on browser-tfjs-*"}
    assert all("tfjs_layers" in p["affects"] for p in info["problems"])


@pytest.mark.parametrize("fmt, scheme, io_words", [
    ("tflite", None, "float in/out"),
    ("tflite_fp16", "float16", "float in/out"),
    ("tflite_dynamic", "dynamic-range", "float in/out"),
    ("tflite_int8", "int8", "int8 in/out"),
])
def test_tflite_signatures_ops_and_quantisation_told_from_the_flatbuffer(art, fmt, scheme, io_words):
    a = art("mnist_cnn", fmt)
    info = inspect(a.model_path)
    assert info["kind"] == "tflite" and info["format"] == fmt, "the harness format is told from the tensors alone"
    assert info["quantization"]["scheme"] == scheme and info["quantization"]["io"] == io_words
    assert info["litert_loads"] is True and info["problems"] == []
    sig = only(info)
    assert sig["key"] == "serving_default"
    [image], [out] = sig["inputs"], sig["outputs"]
    assert (image["name"], image["shape"], out["shape"]) == ("image", [None, 28, 28, 1], [None, 10])
    assert info["ops"]["CONV_2D"] == 2 and info["ops"]["FULLY_CONNECTED"] == 2
    if fmt == "tflite_int8":  # scale and zero point as the exporter recorded them
        assert image["dtype"] == out["dtype"] == "int8"
        assert (image["scale"], image["zero_point"]) == pytest.approx((a.inputs[0].scale, a.inputs[0].zero_point))
        assert (out["scale"], out["zero_point"]) == pytest.approx((a.outputs[0].scale, a.outputs[0].zero_point))
    else:
        assert image["dtype"] == "float32" and "scale" not in image
    assert runtimes(info["runs_on"]["runtimes"]) == (["litert", "openvino"] if fmt in RUNTIMES["openvino"].formats else ["litert"])


def test_onnx13_opsets_producer_symbolic_dims_and_op_counts(art):
    info = inspect(art("mnist_cnn", "onnx13").model_path)
    assert info["kind"] == "onnx" and info["format"] == "onnx13"
    assert info["opsets"]["ai.onnx"] == 13
    assert info["producer"].startswith("tf2onnx")
    assert info["checker"] == {"ok": True, "message": None}
    assert info["ops"]["Conv"] == 2
    [image] = only(info)["inputs"]
    assert image["name"] == "image" and image["dtype"] == "float32"
    assert isinstance(image["shape"][0], str) and image["shape"][1:] == [28, 28, 1], "tf2onnx's symbolic batch (unk__N) is kept"
    assert info["problems"] == [], "a symbolic batch dimension is not a problem"
    assert runtimes(info["runs_on"]["runtimes"]) == ORT


def test_tfjs_graph_model_json(art):
    a = art("mnist_cnn", "tfjs_graph")
    info = inspect(a.model_path)
    assert info["kind"] == "tfjs" and info["format"] == "tfjs_graph" and info["tfjs_format"] == "graph-model"
    shards = sorted(a.model_path.parent.glob("*.bin"))
    assert info["weights"]["shards"] == len(shards) and info["weights"]["bytes"] == sum(p.stat().st_size for p in shards)
    assert info["ops"]["_FusedConv2D"] == 2
    assert names(only(info)) == ([("image", "float32", [None, 28, 28, 1])], [("output_0", "float32", [None, 10])])
    assert runtimes(info["runs_on"]["runtimes"]) == TFJS
    assert info["problems"] == []
    assert inspect(a.model_path.parent)["format"] == "tfjs_graph", "the folder holding model.json is taken too"


def test_tfjs_layers_model_json_and_the_keras3_input_layer(art):
    info = inspect(art("mlp", "tfjs_layers").model_path)
    assert info["format"] == "tfjs_layers" and info["layers"] == {"Dense": 2, "InputLayer": 1}
    assert names(only(info)) == ([("features", "float32", [None, 32])], [("output_0", "float32", [None, 1])])
    assert info["weights"]["shards"] == 1
    assert info["problems"] and all("known deviation" in p["message"] for p in info["problems"])
    assert set(TFJS) <= set(runtimes(info["runs_on"]["runtimes"]))


def test_frozen_graph(art):
    info = inspect(art("mnist_cnn", "frozen_graph").model_path)
    assert info["kind"] == "frozen_graph" and info["format"] == "frozen_graph"
    assert info["ops"]["Conv2D"] == 2 and info["ops"]["Placeholder"] == 1
    sig = only(info)
    assert [(t["name"], t["dtype"], t["shape"]) for t in sig["inputs"]] == [("image", "float32", [None, 28, 28, 1])]
    assert [t["name"] for t in sig["outputs"]] == ["Identity"] and sig["outputs"][0]["shape_known"] is False
    assert info["problems"] == [], "an output shape a GraphDef does not record is not a dynamic dimension"
    assert runtimes(info["runs_on"]["runtimes"]) == ["tf"]


# --- problems found without running the model ---------------------------------------------------


def test_argmax_int64_output_is_a_tfjs_problem(art):
    tfjs = inspect(art("argmax", "tfjs_graph").model_path)
    [p] = tfjs["problems"]
    assert p["message"] == "output label is int64 (TF.js has no int64: the Node workers report it unsupported)"
    assert p["affects"] == TFJS
    source = inspect(art("argmax", "savedmodel").model_path)
    [p] = source["problems"]
    assert "output label is int64: its tfjs_graph export will not run" in p["message"]
    assert "tfjs_graph" in p["affects"]


def test_lstm_through_tf2onnx_leaves_a_partitionedcall(lstm):
    info = inspect(lstm / "model.onnx")
    assert info["format"] == "onnx13" and info["ops"].get("PartitionedCall", 0) >= 1
    assert info["checker"]["ok"] is False and "PartitionedCall" in info["checker"]["message"]
    [p] = info["problems"]
    assert p["message"] == "the graph has PartitionedCall, not an ONNX op", "the export validation's own words"
    assert "ort" in p["affects"]


def test_lstm_tflite_with_select_tf_ops_needs_the_flex_delegate(lstm):
    info = inspect(lstm / "model.tflite")
    assert info["litert_loads"] is False
    assert any(op.startswith("Flex") for op in info["ops"])
    [p] = info["problems"]
    assert p["message"].startswith("Select TF ops FlexTensorList")
    assert p["message"].endswith("needs the Flex delegate: no LiteRT here runs it") and p["affects"] == ["litert"]


def test_lstm_keras_output_shape_is_inferred_from_the_config(lstm):
    info = inspect(lstm / "lstm.keras")
    assert info["layers"] == {"Dense": 1, "InputLayer": 1, "LSTM": 1}
    assert names(only(info)) == ([("x", "float32", [None, 5, 3])], [("output_0", "float32", [None, 2])])


def test_onnx_problems_outside_standard_onnx_dynamic_dims_and_other_opsets(tmp_path):
    """Built with onnx.helper: a contrib op inside an If branch, a sequence dimension, opset 17."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "seq", 3])
    then_branch = helper.make_graph([helper.make_node("FusedGemm", ["x", "x"], ["t"], domain="com.microsoft")], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["z"], then_branch=then_branch, else_branch=else_branch),
         helper.make_node("Cast", ["z"], ["y"], to=TensorProto.INT64)],
        "g", [x], [y], initializer=[helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="helper")
    onnx.save(model, str(tmp_path / "m.onnx"))

    info = inspect(tmp_path / "m.onnx")
    assert info["format"] == "onnx13" and info["opsets"]["ai.onnx"] == 17, "checked as onnx13, as harness check runs it"
    assert "opset 17: run as it is by every ONNX runtime; harness check files its cases under onnx13" in " ".join(text_of(info).split())
    assert info["ops"] == {"Cast": 1, "Identity": 1, "If": 1, "com.microsoft::FusedGemm": 1}, "If branches are walked"
    assert names(only(info)) == ([("x", "float32", ["batch", "seq", 3])], [("y", "int64", ["batch", "seq", 3])])
    messages = [p["message"] for p in info["problems"]]
    assert "the graph has com.microsoft::FusedGemm, an ONNX Runtime contrib op, not standard ONNX" in messages
    assert not any("harness check does not take it" in m for m in messages)
    [dynamic] = [m for m in messages if m.startswith("dynamic dimensions other than the batch")]
    assert "input x [batch, seq, 3] (dim 1)" in dynamic and "output y [batch, seq, 3] (dim 1)" in dynamic
    assert runtimes(info["runs_on"]["runtimes"]) == ORT


# --- bad paths: one line, naming the path and what was expected ----------------------------------


def _truncated_onnx(art, tmp_path: Path) -> Path:
    data = art("mnist_cnn", "onnx13").model_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:3000])
    return path


@pytest.mark.parametrize("case, words", [
    ("missing", "model not found"),
    ("truncated onnx", "corrupt ONNX model"),
    ("garbage onnx", "corrupt ONNX model"),
    ("garbage tflite", "corrupt TFLite model"),
    ("not json", "corrupt TF.js model"),
    ("unknown kind", "unknown kind of model file"),
    ("empty folder", "holds no saved_model.pb and no model.json"),
])
def test_bad_paths_raise_one_line(art, tmp_path, case, words):
    path = {
        "missing": lambda: tmp_path / "nowhere" / "model.onnx",
        "truncated onnx": lambda: _truncated_onnx(art, tmp_path),
        "garbage onnx": lambda: _write(tmp_path / "g.onnx", b"not an onnx model\n"),
        "garbage tflite": lambda: _write(tmp_path / "g.tflite", b"\x00" * 64),
        "not json": lambda: _write(tmp_path / "model.json", b'{"modelTopology": '),
        "unknown kind": lambda: _write(tmp_path / "model.bin", b"x"),
        "empty folder": lambda: tmp_path,
    }[case]()
    with pytest.raises(HarnessError) as e:
        inspect(path)
    message = str(e.value)
    assert words in message and str(path) in message and "expected" in message
    assert "\n" not in message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_tag_and_signature_only_where_the_kind_has_them(art):
    with pytest.raises(HarnessError, match="--tag applies to a SavedModel folder"):
        inspect(art("mnist_cnn", "onnx13").model_path, tag="serve")
    with pytest.raises(HarnessError, match=r"no signature 'nope': expected one of \['serving_default'\]"):
        inspect(art("mnist_cnn", "tflite").model_path, signature="nope")


# --- JSON, rendering, imports --------------------------------------------------------------------

ALL = [("pow", "savedmodel"), ("mlp", "keras"), ("mlp", "h5"), ("mnist_cnn", "tflite"), ("mnist_cnn", "tflite_int8"),
       ("mnist_cnn", "onnx13"), ("mnist_cnn", "tfjs_graph"), ("mlp", "tfjs_layers"), ("mnist_cnn", "frozen_graph"),
       ("argmax", "tfjs_graph")]


@pytest.mark.parametrize("fixture, fmt", ALL)
def test_json_and_render_within_100_columns(art, fixture, fmt):
    info = inspect(art(fixture, fmt).model_path)
    assert json.loads(json.dumps(info)) == info, "what --json prints is the dict itself"
    for width in (100, 160):  # the CLI's console is 120 wide off a terminal: render stays within 100
        text = text_of(info, width)
        assert max(len(line) for line in text.splitlines()) <= 100, text
    assert info["format"] in text and "runs on" in text
    for t in info["signatures"][0]["inputs"]:
        assert t["name"] in text
    if info["problems"]:
        assert "problems (" in text and text.rstrip().splitlines()[-1].endswith(")"), "problems come last"
    else:
        assert text.rstrip().endswith("no problems found")


def test_render_of_problems_quantisation_and_unavailable_runtimes(art, lstm):
    text = text_of(inspect(lstm / "model.tflite"))
    assert "needs the Flex" in text and "LiteRT cannot load it" in text
    text = text_of(inspect(art("mnist_cnn", "tflite_int8").model_path))
    assert "full integer int8, int8 in/out" in text and "scale / zero point" in text
    info = inspect(art("mnist_cnn", "tfjs_graph").model_path)
    info["runs_on"]["runtimes"][0].update(available=False, reason="node is not on PATH")  # as on a machine without Node
    text = text_of(info)
    assert "✗ node-tfjs-cpu" in text and "✗ node-tfjs-cpu: node is not on PATH" in text


def test_no_tensorflow_import_for_files_that_do_not_need_it(art):
    paths = [str(art(f, fmt).model_path) for f, fmt in ALL if fmt not in ("savedmodel", "frozen_graph")]
    code = (
        "import json, sys\n"
        "from harness.inspect.runs import inspect\n"
        "formats = [inspect(p)['format'] for p in sys.argv[1:]]\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tf2onnx', 'tensorflowjs'})\n"
        "print(json.dumps([formats, heavy]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *paths], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    formats, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert formats == [fmt for _, fmt in ALL if fmt not in ("savedmodel", "frozen_graph")]
    assert heavy == []


def test_the_cli_command_prints_json_and_fails_in_one_line(tmp_path):
    import json as _json

    from conftest import run_cli
    from harness.export import Exporter
    from harness.fixtures import get_fixture

    art = Exporter().get(get_fixture("mnist_cnn"), "onnx13")
    proc = run_cli("inspect", str(art.model_path), "--json")
    assert proc.returncode == 0, proc.stderr
    info = _json.loads(proc.stdout)
    assert info["kind"] == "onnx" and info["format"] == "onnx13"
    bad = run_cli("inspect", str(tmp_path / "nope.onnx"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr


def test_an_onnx_file_below_opset_7_says_how_to_upgrade_it_and_a_producer_has_no_none(tmp_path):
    """What ONNX Runtime does not take (opset 6) is said once, with the onnx.version_converter line that
    upgrades the file; tf2onnx's producer_version "1.17.0 None" reads "by tf2onnx 1.17.0"."""
    import onnx
    from onnx import TensorProto, helper

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("x", "y")]
    for opset in (6, 9):
        model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io_[:1], io_[1:]),
                                  opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx", producer_version="1.17.0 None")
        model.ir_version = 3 if opset == 6 else 7
        onnx.save(model, str(tmp_path / f"op{opset}.onnx"))
    old = inspect(tmp_path / "op6.onnx")
    assert old["format"] == "onnx opset 6" and old["runs_on"]["runtimes"] == []
    [problem] = [p["message"] for p in old["problems"]]
    assert problem.startswith("harness check does not take it as it is: ONNX opset 6 is older than ONNX Runtime's oldest (7)")
    assert "harness check op6.onnx --upgrade-opset 13" in problem
    assert "onnx.version_converter" in problem and "convert_version(onnx.load('op6.onnx'), 13)" in problem
    nine = inspect(tmp_path / "op9.onnx")
    assert nine["format"] == "onnx13" and nine["producer"] == "tf2onnx 1.17.0" and not nine["problems"]
    assert "by tf2onnx 1.17.0 ·" in text_of(nine) and "None" not in text_of(nine)





def test_a_keras_file_with_a_custom_layer_needs_its_code_and_inspect_takes_custom_objects(tmp_path):
    (tmp_path / "layers.py").write_text(SCALE_LAYER)
    (tmp_path / "other.py").write_text("X = 1\n")
    make = ("import sys; sys.path.insert(0, '.'); import keras, layers; x = keras.Input((3,), name='x'); "
            "keras.Model(x, layers.Scale(1.5)(keras.layers.Dense(2)(x))).save('custom.keras')")
    subprocess.run([sys.executable, "-c", make], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    info = inspect(tmp_path / "custom.keras")
    assert info["custom_objects"] == [{"class": "Scale", "registered_name": "mine>Scale", "module": "layers"}]
    [needs] = [p["message"] for p in info["problems"] if "custom layer" in p["message"]]
    assert needs.startswith("custom layer(s) 'Scale' (mine>Scale): the model loads only with their code") and "--custom-objects" in needs

    def cli(*extra):
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "inspect", "custom.keras", "--json", *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    given = cli("--custom-objects", "layers.py")
    assert given["custom_objects"][0]["defined"] is True and not [p for p in given["problems"] if "custom layer" in p["message"]]
    wrong = cli("--custom-objects", "other.py")
    assert any("the given --custom-objects/--import define no 'Scale'" in p["message"] for p in wrong["problems"])
