"""`harness check` on an .onnx, a .tflite and a TF.js model.json: the file itself is the artifact (no
conversion), run by every runtime that loads its format, judged against ort / litert / the first TF.js
runtime, or against --expected golden outputs."""

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from harness.fixtures import get_fixture
from harness.runners import RUNTIMES


@pytest.fixture(scope="module")
def given(exporter, tmp_path_factory):
    """The mlp fixture's ONNX, int8 TFLite and TF.js graph model, copied out of the cache as a user's files."""
    folder = tmp_path_factory.mktemp("given")
    fx = get_fixture("mlp")
    out = {}
    for fmt, name in (("onnx13", "mlp.onnx"), ("tflite_int8", "mlp_int8.tflite"), ("tfjs_graph", "web")):
        art = exporter.get(fx, fmt)
        assert art.status == "ok", art.error
        if fmt == "tfjs_graph":
            shutil.copytree(art.model_path.parent, folder / name)
            out[fmt] = folder / name / "model.json"
        else:
            shutil.copyfile(art.model_path, folder / name)
            out[fmt] = folder / name
    return out


def _results(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_onnx_runs_on_every_onnx_runtime(given, tmp_path):
    # The full matrix: make test's quick one leaves the browser runtimes only their onnx18 cases.
    proc = run_cli("check", str(given["onnx13"]), "-o", "json", cwd=tmp_path, env={"HARNESS_MATRIX": "full"})
    results = _results(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["format"] for r in results} == {"onnx13"}  # the file's own format, nothing converted
    assert {r["runtime"] for r in results} == {name for name, spec in RUNTIMES.items() if "onnx13" in spec.formats}
    assert {r["status"] for r in results} <= {"pass", "skip"}, [(r["id"], r["status"], r["error"]) for r in results]
    by_runtime = {r["runtime"]: r for r in results if r["batch"] == 1}
    assert by_runtime["ort"]["status"] == "pass" and by_runtime["ort"]["baseline"] == "self"  # ort is the reference
    others = [r for r in results if r["runtime"] != "ort" and r["status"] == "pass"]
    assert all(r["baseline"] == "reference" for r in others)
    # The cached artifact is the given file, byte for byte.
    art = results[0]["artifact"]["dir"]
    assert open(f"{art}/model.onnx", "rb").read() == given["onnx13"].read_bytes()


def test_tflite_runs_on_litert(given, tmp_path):
    proc = run_cli("check", str(given["tflite_int8"]), "-o", "json", cwd=tmp_path)
    results = _results(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["format"], r["runtime"], r["batch"], r["status"]) for r in results] == [
        ("tflite_int8", "litert", 1, "pass"), ("tflite_int8", "litert", 4, "pass")]


def test_tfjs_model_json_runs_on_a_tfjs_runtime(given, tmp_path):
    proc = run_cli("check", str(given["tfjs_graph"]), "-r", "node-tfjs-cpu,node-tfjs-wasm", "-b", "2", "-o", "json", cwd=tmp_path)
    results = _results(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {(r["format"], r["runtime"]) for r in results} == {("tfjs_graph", "node-tfjs-cpu"), ("tfjs_graph", "node-tfjs-wasm")}
    assert {r["status"] for r in results} <= {"pass", "skip"}, [(r["id"], r["error"]) for r in results]


def test_golden_outputs_judge_every_runtime(given, tmp_path):
    """--expected: ort, the reference, is judged against the golden outputs too; wrong ones fail every case."""
    import onnxruntime

    inputs = get_fixture("mlp").make_inputs(3, seed=7)
    session = onnxruntime.InferenceSession(str(given["onnx13"]), providers=["CPUExecutionProvider"])
    golden = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))  # by the graph's output names
    np.savez(tmp_path / "in.npz", **inputs)
    np.savez(tmp_path / "good.npz", **golden)
    np.savez(tmp_path / "bad.npz", **{k: v + 0.5 for k, v in golden.items()})
    args = ("check", str(given["onnx13"]), "-r", "ort,node-ort", "--inputs", str(tmp_path / "in.npz"), "-o", "json")
    good = run_cli(*args, "--expected", str(tmp_path / "good.npz"), cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    assert {(r["baseline"], r["status"]) for r in _results(good) if r["status"] != "skip"} == {("golden", "pass")}
    bad = run_cli(*args, "--expected", str(tmp_path / "bad.npz"), cwd=tmp_path)
    assert bad.returncode == 1
    failed = [r for r in _results(bad) if r["status"] != "skip"]
    assert failed and all(r["status"] == "fail" and r["baseline"] == "golden" and r["stage"] == "compare" for r in failed)


@pytest.mark.parametrize("name, data, says", [
    ("bad.onnx", b"\x08\x01garbage" * 20, "corrupt ONNX model"),
    ("bad.tflite", b"not a flatbuffer" * 20, "corrupt TFLite model"),
    ("model.json", b'{"format": "graph-model"}', "corrupt TF.js model"),
])
def test_bad_file_is_one_line(tmp_path, name, data, says):
    (tmp_path / name).write_bytes(data)
    proc = run_cli("check", str(tmp_path / name), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"harness: error: {says}: {tmp_path / name}"), proc.stderr


def _onnx(path, op: str, opset: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", io[:1], io[1:]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    onnx.save(model, str(path))


def test_onnx_of_another_opset_runs_and_an_invalid_one_is_the_models_fault(tmp_path):
    _onnx(tmp_path / "relu.onnx", "Relu", 17)
    proc = run_cli("check", str(tmp_path / "relu.onnx"), "-r", "ort", "-o", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {(r["format"], r["status"]) for r in _results(proc)} == {("onnx13", "pass")}
    _onnx(tmp_path / "bad.onnx", "NoSuchOp", 17)
    proc = run_cli("check", str(tmp_path / "bad.onnx"), "-r", "ort", "-o", "json", cwd=tmp_path)
    assert proc.returncode == 1
    results = _results(proc)
    assert results and all((r["status"], r["stage"], r["culprit"]) == ("error", "validate", "model") for r in results)
    assert "the model holds NoSuchOp, not an ONNX op" in results[0]["error"]


def _relu(path, opset: int, batch="N", ir: int = 7) -> None:
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io[:1], io[1:]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, str(path))


def test_a_fixed_batch_model_runs_with_its_own_data_in_the_onnx_test_data_layout(tmp_path):
    """A file with batch 2 fixed and its test_data_set_0 (input_0.pb, output_0.pb): one case at batch 2,
    judged against the file's own outputs (before: `the selection names no case`)."""
    from onnx import numpy_helper

    _relu(tmp_path / "fixed.onnx", 9, batch=2)
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    (data / "output_0.pb").write_bytes(numpy_helper.from_array(np.maximum(x, 0), "y").SerializeToString())
    proc = run_cli("check", "fixed.onnx", "-r", "ort", "--inputs", "test_data_set_0", "--expected", "test_data_set_0", "-o", "json",
                   "--sandbox", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["format"], r["batch"], r["status"], r["baseline"]) for r in _results(proc)] == [("onnx13", 2, "pass", "golden")]
    plain = run_cli("check", "fixed.onnx", "-r", "ort", "-o", "json", "--sandbox", "none", cwd=tmp_path)
    assert [(r["batch"], r["status"]) for r in _results(plain)] == [(2, "pass")], "its one batch is its own, 2"


def test_onnx_below_opset_7_is_one_line_with_the_upgrade_and_inspect_agrees_with_check(tmp_path):
    _relu(tmp_path / "old.onnx", 6, ir=3)
    proc = run_cli("check", "old.onnx", "-r", "ort", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("harness: error: cannot check old.onnx: ONNX opset 6 is older than ONNX Runtime's oldest (7)")
    assert "onnx.version_converter" in line
    _relu(tmp_path / "nine.onnx", 9)
    seen = json.loads(run_cli("inspect", "nine.onnx", "--json", cwd=tmp_path).stdout)
    ran = _results(run_cli("check", "nine.onnx", "-r", "ort", "-o", "json", "--sandbox", "none", cwd=tmp_path))
    assert {r["format"] for r in ran} == {seen["format"]} == {"onnx13"} and not seen["problems"]


def _doubled_relu(path, opset: int, batch=2, ir: int = 3) -> None:
    """y = relu(x + x): Add changed between opsets 6 and 7 (its broadcast attribute), so a conversion does work."""
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in ("x", "y")]
    nodes = [helper.make_node("Add", ["x", "x"], ["twice"]), helper.make_node("Relu", ["twice"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:]), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, str(path))


def test_onnx_below_opset_7_is_checked_as_a_copy_upgraded_by_upgrade_opset_and_the_run_records_it(tmp_path):
    """`check old.onnx --upgrade-opset 13` converts the file with onnx.version_converter into the run's
    folder, leaves the user's file as it was, checks the copy (onnx13, on ort, passing: its output depends
    on its input, or the verdict would be inconclusive) and records the upgrade in run.json. The refusal
    without the option and inspect's problem name the option alike; a conversion the converter refuses is
    one line with its reason, exit 2, and no run."""
    import onnx

    _doubled_relu(tmp_path / "old.onnx", 6)
    before = (tmp_path / "old.onnx").read_bytes()
    refused = run_cli("check", "old.onnx", "-r", "ort", "--reports", "r", cwd=tmp_path)
    [line] = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and "harness check old.onnx --upgrade-opset 13 checks a copy converted by onnx.version_converter" in line
    seen = json.loads(run_cli("inspect", "old.onnx", "--json", cwd=tmp_path).stdout)
    assert [p["message"] for p in seen["problems"]] == [f"harness check does not take it as it is: {line.split(': ', 3)[3]}"]

    proc = run_cli("check", "old.onnx", "-r", "ort", "--upgrade-opset", "13", "-o", "json", "--sandbox", "none", "--reports", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = _results(proc)
    assert (result["format"], result["batch"], result["status"]) == ("onnx13", 2, "pass")
    assert (tmp_path / "old.onnx").read_bytes() == before, "the user's file is left as it was"
    run = (tmp_path / "r" / "latest").resolve()
    upgrade = json.loads((run / "run.json").read_text())["options"]["upgrade"]
    assert (upgrade["from_opset"], upgrade["to_opset"], upgrade["file"]) == (6, 13, "model/old-opset13.onnx")
    assert upgrade["source"] == str(tmp_path / "old.onnx") and upgrade["by"].startswith("onnx.version_converter")
    assert f"from ONNX opset 6 to 13 (onnx.version_converter): checking the copy {run / upgrade['file']}" in proc.stderr
    for model in (run / upgrade["file"], f"{result['artifact']['dir']}/model.onnx"):  # kept by the run; checked
        assert {o.domain: o.version for o in onnx.load(str(model)).opset_import}[""] == 13

    _doubled_relu(tmp_path / "dynamic.onnx", 6, batch="N")  # the converter's Add adapter needs every dimension known
    bad = run_cli("check", "dynamic.onnx", "-r", "ort", "--upgrade-opset", "13", "--reports", "r2", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "harness: error: cannot upgrade dynamic.onnx from ONNX opset 6 to 13: onnx.version_converter says: "
        "Assertion `dim.is_int` failed: N Dimension is a param instead of an int.")
    assert not (tmp_path / "r2").exists(), "no run for a model that could not be converted"


def test_an_onnx_embedding_bounds_its_ids_and_a_selection_without_cases_says_what_the_model_runs_as(tmp_path):
    """ids into a Gather of a 5-row table are drawn from 0..4; `-b 4` on a batch-2 model says what it runs as."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.user_model import user_fixture

    table = numpy_helper.from_array(np.arange(15, dtype=np.float32).reshape(5, 3), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 3])], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "emb.onnx"))
    fx = user_fixture(tmp_path / "emb.onnx")
    assert fx.int_bounds == {"ids": (0, 5)}
    assert all(fx.make_inputs(4, seed=s, variant=v)["ids"].max() < 5 for s in range(4) for v in (0, 1))
    _relu(tmp_path / "fixed.onnx", 13, batch=2)
    proc = run_cli("check", "fixed.onnx", "-b", "4", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "harness: error: the options -b 4 name no case of user onnx13 model fixed.onnx: it runs as onnx13 at batch 2, on "
        + ", ".join(name for name, spec in RUNTIMES.items() if "onnx13" in spec.formats))
