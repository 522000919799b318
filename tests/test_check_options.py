"""`harness check` with the user's inputs, golden outputs, tolerances and seed."""

import json

import numpy as np
import pytest

from conftest import run_cli
from harness.cases import Selection, matrix
from harness.engine import Engine, Options
from harness.errors import HarnessError
from harness.export import Exporter
from harness.fixtures import load_tensors, parse_tolerances, user_fixture, with_user_options

W = np.array([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]], np.float32)
B = np.array([0.1, -0.2], np.float32)


@pytest.fixture(scope="module")
def affine(tmp_path_factory):
    """A Keras model whose outputs are known in closed form: y = x @ W + b."""
    from harness.export.common import import_tf

    import_tf()
    import keras

    path = tmp_path_factory.mktemp("affine") / "affine.keras"
    x = keras.Input((3,), name="x")
    layer = keras.layers.Dense(2, name="dense")
    model = keras.Model(x, layer(x))
    layer.set_weights([W, B])
    model.save(path)
    return path


def _inputs(tmp_path, batch=3):
    x = np.random.default_rng(5).standard_normal((batch, 3)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    return x


def test_golden_outputs_are_the_baseline_of_every_case_and_a_wrong_one_fails(affine, tmp_path):
    x = _inputs(tmp_path)
    golden = x.astype(np.float64) @ W + B
    np.savez(tmp_path / "good.npz", output_0=golden)
    np.savez(tmp_path / "bad.npz", output_0=golden + 1e-3)
    fx = user_fixture(affine)
    good = with_user_options(fx, tmp_path / "inputs.npz", tmp_path / "good.npz")
    bad = with_user_options(fx, tmp_path / "inputs.npz", tmp_path / "bad.npz")
    assert good.batches == (3,) and np.array_equal(good.make_inputs(3)["x"], x)
    assert not np.array_equal(good.make_inputs(3, seed=1)["x"], x), "other input sets are still drawn (the signal check needs them)"
    results = {}
    for name, f in (("good", good), ("bad", bad)):
        engine = Engine(Exporter(), tmp_path / name, Options(iterations=1, warmup=0), {f.name: f})
        try:
            results[name] = [engine.run_case(c) for c in matrix(Selection(formats=["savedmodel", "onnx13"], runtimes=["tf", "ort"]), {f.name: f})]
        finally:
            engine.close()
    assert [(r["format"], r["status"], r["baseline"]) for r in results["good"]] == [("savedmodel", "pass", "golden"), ("onnx13", "pass", "golden")]
    assert [(r["status"], r["stage"]) for r in results["bad"]] == [("fail", "compare"), ("fail", "compare")]
    assert "output_0" in results["bad"][0]["error"]


def test_tolerances_per_output_and_overall(affine):
    fx = user_fixture(affine)
    out = with_user_options(fx, atol=("1e-3", "output_0=0.5"), rtol=("0",))
    assert out.tolerance("onnx13", "output_0").atol == 0.5 and out.tolerance("onnx13", "output_0").rtol == 0
    assert out.tolerance("tflite_int8", "output_0").min_snr_db == 15.0, "quantised formats keep their SNR rule"
    assert parse_tolerances(("2e-4",), "--atol", ("a",)) == (2e-4, {})
    with pytest.raises(HarnessError, match="unknown output 'nope': expected one of output_0"):
        with_user_options(fx, atol=("nope=1",))
    with pytest.raises(HarnessError, match="--rtol x is not valid: expected a number or OUTPUT=NUMBER"):
        with_user_options(fx, rtol=("x",))


def test_onnx_test_data_folders_and_bad_files(affine, tmp_path):
    from onnx import numpy_helper

    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (folder / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    assert np.array_equal(load_tensors(folder, ("x",), "input")["x"], x)
    fx = user_fixture(affine)
    with pytest.raises(HarnessError, match=r"holds inputs \['y'\], the model's are \['x'\]"):
        np.savez(tmp_path / "wrong.npz", y=x)
        with_user_options(fx, tmp_path / "wrong.npz")
    with pytest.raises(HarnessError, match=r"input 'x' in .* has shape \[2, 4\], the model takes \[None, 3\]"):
        np.save(tmp_path / "wide.npy", np.zeros((2, 4), np.float32))
        with_user_options(fx, tmp_path / "wide.npy")
    with pytest.raises(HarnessError, match="--expected needs --inputs"):
        with_user_options(fx, expected=tmp_path / "wide.npy")
    assert not np.array_equal(with_user_options(fx, seed=7).make_inputs(2)["x"], fx.make_inputs(2)["x"])


def test_check_cli_takes_inputs_and_golden_outputs(affine, tmp_path):
    x = _inputs(tmp_path, batch=2)
    np.savez(tmp_path / "golden.npz", output_0=x.astype(np.float64) @ W + B)
    proc = run_cli("check", str(affine), "-F", "savedmodel,tflite", "-r", "tf,litert", "--inputs", str(tmp_path / "inputs.npz"),
                   "--expected", str(tmp_path / "golden.npz"), "--atol", "1e-5", "--sandbox", "none", "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in (tmp_path / "reports" / "latest" / "results.jsonl").read_text().splitlines()]
    assert {(r["format"], r["batch"], r["status"], r["baseline"]) for r in results} == {("savedmodel", 2, "pass", "golden"), ("tflite", 2, "pass", "golden")}
    bad = run_cli("check", str(affine), "--inputs", str(tmp_path / "inputs.npz"), "-b", "4", "--reports", str(tmp_path / "reports"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "harness: error: --batch does not apply with --inputs: the batch is your inputs' first dimension"]
