"""harness/export/validate.py: what converters emit is checked at export, so a converter fault is reported
once, at stage `validate`, naming the op. Real converters and real files only: the bad artifacts are
real converter output (a Keras LSTM through tf2onnx and the TFLite converter) or real artifacts that
were cut short, lost a shard, or had one thing changed with the format's own tooling."""

import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.artifact import Artifact
from harness.export import FORMATS
from harness.export.validate import ConverterFault, validate
from harness.fixtures import get_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist(exporter):
    """mnist_cnn in a format, from the shared export cache (seconds on a cold cache, cached after)."""
    fx = get_fixture("mnist_cnn")

    def get(fmt: str) -> Artifact:
        art = exporter.get(fx, fmt)
        assert art.status == "ok", art.error
        return art

    return get


def copy_of(art: Artifact, tmp_path: Path) -> Path:
    """A private copy of a cached artifact folder, to damage without touching the cache."""
    folder = tmp_path / "artifact"
    shutil.copytree(art.dir, folder)
    return folder


def record(fmt: str, path: str) -> Artifact:
    return Artifact(fixture="test", format=fmt, key="test", status="ok", path=path)


def fault(fmt: str, folder: Path, art: Artifact) -> ConverterFault:
    with pytest.raises(ConverterFault) as info:
        validate(FORMATS[fmt], folder, art)
    e = info.value
    assert "\n" not in e.summary and str(e) == e.summary, "the summary is one line, and is the exception's text"
    return e


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# Per format: the file that is cut to half its size, and the fault that must follow.
TRUNCATED = {
    "savedmodel": ("saved_model/saved_model.pb",
                   r"saved_model\.pb is not a complete SavedModel protobuf: field 2 at byte 2 ends at byte \d+, past the end of the file \(\d+ bytes\)"),
    "keras": ("model.keras", r"model\.keras is not a \.keras archive: File is not a zip file"),
    "h5": ("model.h5", r"model\.h5 is not a readable HDF5 file: .*truncated file"),
    "frozen_graph": ("model.pb", r"model\.pb is not a complete GraphDef protobuf: field 1 at byte \d+ ends at byte \d+, past the end of the file"),
    "tflite": ("model.tflite", r"LiteRT cannot load model\.tflite: The model is not a valid Flatbuffer buffer"),
    "tflite_fp16": ("model.tflite", r"LiteRT cannot load model\.tflite: The model is not a valid Flatbuffer buffer"),
    "tflite_dynamic": ("model.tflite", r"LiteRT cannot load model\.tflite: The model is not a valid Flatbuffer buffer"),
    "tflite_int8": ("model.tflite", r"LiteRT cannot load model\.tflite: The model is not a valid Flatbuffer buffer"),
    "tflite_select": ("model.tflite", r"LiteRT cannot load model\.tflite: The model is not a valid Flatbuffer buffer"),
    "onnx13": ("model.onnx", r"model\.onnx is not a readable ONNX model: Unable to parse proto from file: .*model\.onnx"),
    "onnx18": ("model.onnx", r"model\.onnx is not a readable ONNX model: Unable to parse proto from file: .*model\.onnx"),
    "tfjs_graph": ("tfjs/model.json", r"TF\.js model\.json is not valid JSON: "),
    "tfjs_layers": ("tfjs_layers/model.json", r"TF\.js model\.json is not valid JSON: "),
    "checkpoint": ("checkpoint/ckpt.index", r"ckpt\.index is not a complete checkpoint index: it does not end in the table magic \(\d+ bytes\)"),
}


def test_every_format_has_a_check_and_one_without_is_the_harnesss_fault(tmp_path):
    """The check is the format registry's (FormatSpec.check): a format added without one is refused at
    export as the harness's own fault, never taken as valid."""
    assert set(TRUNCATED) == set(FORMATS) and all(spec.check is not None for spec in FORMATS.values())
    with pytest.raises(ConverterFault, match="format onnx13 has no check in the format registry") as info:
        validate(dataclasses.replace(FORMATS["onnx13"], check=None), tmp_path, record("onnx13", "model.onnx"))
    assert info.value.culprit == "harness"


@pytest.mark.parametrize("fmt", ["tflite_int8", "tfjs_layers", "savedmodel"])
def test_an_export_written_outside_the_registrys_layout_is_the_harnesss_fault(fmt, mnist, tmp_path):
    """The registry's FormatSpec.layout is where a format's model lives; an exporter that wrote it
    elsewhere (a real, valid model under another name) is our bug, never accepted quietly."""
    art = copy.copy(mnist(fmt))  # the cached record stays as it is for the other tests
    assert art.path == FORMATS[fmt].layout
    folder = copy_of(art, tmp_path)
    moved = Path(FORMATS[fmt].layout).parent / ("other-" + Path(FORMATS[fmt].layout).name)
    (folder / FORMATS[fmt].layout).rename(folder / moved)
    art.path = str(moved)
    e = fault(fmt, folder, art)
    assert e.summary == f"the {fmt} export recorded model path {moved}, expected {FORMATS[fmt].layout} (the format registry's layout)"
    assert e.culprit == "harness"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_good_artifact_passes_and_the_same_artifact_cut_short_does_not(fmt, mnist, tmp_path):
    art = mnist(fmt)
    validate(FORMATS[fmt], art.dir, art)
    folder = copy_of(art, tmp_path)
    file, expected = TRUNCATED[fmt]
    truncate(folder / file)
    e = fault(fmt, folder, art)
    assert re.match(expected, e.summary), e.summary
    assert e.op is None and e.culprit == "converter"
    (folder / file).write_bytes(b"")
    assert "has 0 bytes" in fault(fmt, folder, art).summary


def test_validation_never_imports_tensorflow(mnist, lstm):
    """In a fresh process: good artifacts of every family pass, the LSTM's bad ones fault, and neither
    TensorFlow nor a converter was imported on the way."""
    jobs = [[mnist(fmt).format, str(mnist(fmt).dir), mnist(fmt).path]
            for fmt in ("savedmodel", "keras", "h5", "frozen_graph", "tflite", "onnx13", "tfjs_graph")]
    jobs += [["onnx13", str(lstm), "model.onnx"], ["tflite", str(lstm), "model.tflite"]]
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harness.artifact import Artifact\n"
        "from harness.export import FORMATS\n"
        "from harness.export.validate import ConverterFault, validate\n"
        "seen = []\n"
        "for fmt, folder, path in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        validate(FORMATS[fmt], Path(folder), Artifact(fixture='t', format=fmt, key='t', status='ok', path=path))\n"
        "        seen.append('ok')\n"
        "    except ConverterFault as e:\n"
        "        seen.append(e.op)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tf2onnx', 'tensorflowjs'})\n"
        "print(json.dumps([seen, heavy]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(jobs)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == ["ok"] * 7 + ["PartitionedCall", "FlexTensorListReserve"]
    assert heavy == []


# --- Recurrent Keras 3 models: real converter output --------------------------------------------


def test_onnx_with_a_tensorflow_partitionedcall_is_the_converters_fault(lstm):
    e = fault("onnx13", lstm, record("onnx13", "model.onnx"))
    assert e.summary == "converter emitted PartitionedCall, not an ONNX op"
    assert e.op == "PartitionedCall" and e.culprit == "converter"
    # The checker's whole message is kept as the evidence.
    assert "No Op registered for PartitionedCall with domain_version of 13" in e.detail
    assert "OpType: PartitionedCall" in e.detail


def test_tflite_with_select_tf_ops_is_blamed_on_the_environment(lstm):
    e = fault("tflite", lstm, record("tflite", "model.tflite"))
    assert e.summary == ("converter emitted Select TF ops (FlexTensorListReserve, FlexTensorListStack, "
                         "FlexTensorListSetItem) that this LiteRT build cannot run (no Flex delegate)")
    assert e.op == "FlexTensorListReserve", "the op LiteRT's message names"
    assert e.culprit == "environment"
    assert "Make sure you apply/link the Flex delegate before inference" in e.detail


# --- ONNX nodes the checker lets through or reports badly -----------------------------------------


def _with_node(art: Artifact, tmp_path: Path, kind: str) -> Path:
    """A copy of a good ONNX model with one more node, made with onnx.helper: inside an If's branch, from
    ONNX Runtime's contrib domain, or an op newer than the model's opset."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(art.model_path))
    x = model.graph.input[0].name
    if kind == "subgraph":
        then_branch = helper.make_graph([helper.make_node("PartitionedCall", [x], ["t"], name="hidden_call")], "then",
                                        [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
        else_branch = helper.make_graph([helper.make_node("Identity", [x], ["e"])], "else",
                                        [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
        model.graph.initializer.append(helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
        model.graph.node.append(helper.make_node("If", ["cond"], ["branch_out"], then_branch=then_branch, else_branch=else_branch))
    elif kind == "contrib":
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        model.graph.node.append(helper.make_node("FusedGemm", [x, x], ["fused"], domain="com.microsoft"))
    elif kind == "too_new":
        model.graph.node.append(helper.make_node("Gelu", [x], ["gelu"]))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind, summary, op", [
    ("subgraph", "converter emitted PartitionedCall, not an ONNX op", "PartitionedCall"),
    ("contrib", "converter emitted com.microsoft::FusedGemm, an ONNX Runtime contrib op, not standard ONNX", "FusedGemm"),
    ("too_new", "converter emitted Gelu (ONNX opset 20+), newer than the model's opset 13", "Gelu"),
])
def test_onnx_nodes_are_checked_in_subgraphs_and_by_domain_and_opset(kind, summary, op, mnist, tmp_path):
    import onnx

    path = _with_node(mnist("onnx13"), tmp_path, kind)
    if kind == "contrib":
        onnx.checker.check_model(str(path), full_check=False)  # the checker alone lets it through
    e = fault("onnx13", tmp_path, record("onnx13", "model.onnx"))
    assert e.summary == summary and e.op == op and e.culprit == "converter"
    if kind == "subgraph":
        assert "node hidden_call" in e.detail and "attribute then_branch" in e.detail


# --- TF.js weight manifests ---------------------------------------------------------------------


def _manifest(folder: Path, art: Artifact) -> tuple[Path, dict]:
    model_json = folder / art.path
    return model_json, json.loads(model_json.read_text())


@pytest.mark.parametrize("fmt", ["tfjs_graph", "tfjs_layers"])
def test_tfjs_missing_and_short_shards_are_faults(fmt, mnist, tmp_path):
    art = mnist(fmt)
    folder = copy_of(art, tmp_path)
    model_json, meta = _manifest(folder, art)
    shards = meta["weightsManifest"][0]["paths"]
    assert len(shards) == 2, "mnist_cnn's weights take two 4 MB shards"
    last = model_json.parent / shards[-1]
    data = last.read_bytes()

    last.write_bytes(data[:-16])
    e = fault(fmt, folder, art)
    held = sum((model_json.parent / s).stat().st_size for s in shards)
    count = len(meta["weightsManifest"][0]["weights"])
    assert e.summary == f"TF.js weights group 0 holds {held} bytes in 2 shard(s), its {count} weights need {held + 16} bytes"
    assert e.op is None and e.culprit == "converter"

    last.unlink()
    e = fault(fmt, folder, art)
    assert e.summary == f"TF.js weight shard {shards[-1]} listed in model.json is missing"


@pytest.mark.parametrize("shard, summary", [
    ("../{name}", "TF.js weight shard path ../{name} leaves the model folder"),
    ("{abs}", "TF.js weight shard path {abs} is absolute, not relative to model.json"),
])
def test_tfjs_shard_paths_that_leave_the_model_folder_are_refused(shard, summary, mnist, tmp_path):
    art = mnist("tfjs_graph")
    folder = copy_of(art, tmp_path)
    model_json, meta = _manifest(folder, art)
    name = meta["weightsManifest"][0]["paths"][0]
    outside = model_json.parent.parent / name
    shutil.copy(model_json.parent / name, outside)  # the file exists there: only the path is wrong
    values = {"name": name, "abs": str(outside)}
    meta["weightsManifest"][0]["paths"][0] = shard.format(**values)
    model_json.write_text(json.dumps(meta))
    e = fault("tfjs_graph", folder, art)
    assert e.summary == summary.format(**values) and e.op is None


def test_tfjs_shard_reached_through_a_link_out_of_the_folder_is_refused(mnist, tmp_path):
    art = mnist("tfjs_graph")
    folder = copy_of(art, tmp_path)
    model_json, meta = _manifest(folder, art)
    name = meta["weightsManifest"][0]["paths"][0]
    outside = tmp_path / "elsewhere.bin"
    (model_json.parent / name).rename(outside)
    (model_json.parent / name).symlink_to(outside)
    e = fault("tfjs_graph", folder, art)
    assert e.summary == f"TF.js weight shard path {name} leaves the model folder (through a link)"


@pytest.fixture(scope="module")
def tfjs_converter(mnist):
    """The TF.js converter's Python API, as the exporter imports it (a TensorFlow import, once)."""
    from harness.export.common import import_tf
    from harness.export.tfjs import _import_converter

    import_tf()
    return _import_converter()


@pytest.mark.parametrize("qdtype", ["uint8", "uint16", "float16"])
def test_tfjs_quantised_weights_are_sized_by_their_stored_dtype(qdtype, tfjs_converter, mnist, tmp_path):
    out = tmp_path / "tfjs"
    tfjs_converter.convert_tf_saved_model(str(mnist("savedmodel").model_path), str(out), signature_def="serving_default",
                                          saved_model_tags="serve", quantization_dtype_map={qdtype: "*"})
    art = record("tfjs_graph", "tfjs/model.json")
    weights = json.loads((out / "model.json").read_text())["weightsManifest"][0]["weights"]
    assert any(w.get("quantization", {}).get("dtype") == qdtype for w in weights)
    validate(FORMATS["tfjs_graph"], tmp_path, art)  # sized as float32 it would not add up
    shard = out / "group1-shard1of1.bin"
    truncate(shard, keep=0.99)
    assert fault("tfjs_graph", tmp_path, art).summary.startswith("TF.js weights group 0 holds ")


def test_tfjs_string_weights_skip_the_size_check_but_not_the_shard_check(tfjs_converter, tmp_path):
    """String weights are stored as length-prefixed bytes whose total the manifest does not give, so
    their group's size is not checked; its shards must still be there."""
    from harness.export.common import import_tf

    tf = import_tf()

    class Words(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([3], tf.float32, name="x")])
        def f(self, x):
            s = tf.where(x > 0, tf.constant(["alpha", "beta", "gamma"]), tf.constant(["z", "y", "x"]))
            return {"h": tf.cast(tf.strings.to_hash_bucket_fast(s, 100), tf.int32)}

    m = Words()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.f})
    tfjs_converter.convert_tf_saved_model(str(tmp_path / "sm"), str(tmp_path / "tfjs"), signature_def="serving_default",
                                          saved_model_tags="serve")
    meta = json.loads((tmp_path / "tfjs" / "model.json").read_text())
    assert "string" in {w["dtype"] for w in meta["weightsManifest"][0]["weights"]}
    art = record("tfjs_graph", "tfjs/model.json")
    validate(FORMATS["tfjs_graph"], tmp_path, art)
    (tmp_path / "tfjs" / meta["weightsManifest"][0]["paths"][0]).unlink()
    assert fault("tfjs_graph", tmp_path, art).summary.endswith("listed in model.json is missing")
