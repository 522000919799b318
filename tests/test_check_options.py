"""`harness check` with the user's inputs, golden outputs, tolerances and seed."""

import json

import numpy as np
import pytest

from conftest import run_cli
from harness.cases import Selection, matrix
from harness.engine import Engine, Options
from harness.errors import HarnessError
from harness.export import Exporter, format_class
from harness.user_model import load_tensors, parse_tolerances, user_fixture, with_user_options

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
    assert [(r.format, r.status, r.baseline) for r in results["good"]] == [("savedmodel", "pass", "golden"), ("onnx13", "pass", "golden")]
    assert [(r.status, r.stage) for r in results["bad"]] == [("fail", "compare"), ("fail", "compare")]
    assert "output_0" in results["bad"][0].error


def test_tolerances_per_output_and_overall(affine):
    fx = user_fixture(affine)
    out = with_user_options(fx, atol=("1e-3", "output_0=0.5"), rtol=("0",))
    assert out.tolerance(format_class("onnx13"), "output_0").atol == 0.5 and out.tolerance(format_class("onnx13"), "output_0").rtol == 0
    assert out.tolerance(format_class("tflite_int8"), "output_0").min_snr_db == 15.0, "quantised formats keep their SNR rule"
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


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """A Keras model whose output layer is `logits`, the name its user knows (the signature says output_0),
    with inputs and golden outputs (x @ W + b) saved by that name."""
    from harness.export.common import import_tf

    import_tf()
    import keras

    folder = tmp_path_factory.mktemp("named")
    x = keras.Input((3,), name="x")
    layer = keras.layers.Dense(2, name="logits")
    model = keras.Model(x, layer(x))
    layer.set_weights([W, B])
    model.save(folder / "model.keras")
    inputs = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    np.savez(folder / "in.npz", x=inputs)
    np.savez(folder / "golden.npz", logits=inputs.astype(np.float64) @ W + B)
    return folder


def test_goldens_and_tolerances_by_the_models_own_output_names(named):
    fx = user_fixture(named / "model.keras")
    assert fx.outputs == ("output_0",) and fx.output_aliases == {"logits": "output_0"}
    out = with_user_options(fx, named / "in.npz", named / "golden.npz", atol=("logits=1e-3",), rtol=("output_0=0",))
    assert set(out.golden) == {"output_0"}, "the golden output is filed under the signature's name"
    assert out.tolerance(format_class("onnx13"), "output_0").atol == 1e-3 and out.tolerance(format_class("onnx13"), "output_0").rtol == 0
    with pytest.raises(HarnessError, match=r"--atol nope=1: unknown output 'nope': expected one of output_0 \(logits\)"):
        with_user_options(fx, atol=("nope=1",))


def test_the_readmes_check_and_pytest_examples_run(named):
    """The docs' own examples, taken from them: `--atol logits=1e-3` on check (docs/own-model.md), and the
    pytest line `model.keras::inputs=in.npz::expected=golden.npz::atol=logits=1e-4` (docs/pytest.md)."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    assert "--atol logits=1e-3" in (REPO / "docs" / "own-model.md").read_text()
    [spec] = re.findall(r'--harness-model "(model\.keras::inputs=in\.npz::expected=golden\.npz::atol=logits=[^" ]+)"',
                        (REPO / "docs" / "pytest.md").read_text())
    check = run_cli("check", "model.keras", "--inputs", "in.npz", "--expected", "golden.npz", "--atol", "logits=1e-3",
                    "-F", "savedmodel,onnx13", "-r", "tf,ort", "--sandbox", "none", cwd=named)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--harness-model", spec,
                           "--harness-formats", "savedmodel", "--harness-runtimes", "tf", "--harness-sandbox", "none"],
                          cwd=named, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    """Token ids into an Embedding of 6 rows: an id of 6 or more is out of the table."""
    from harness.export.common import import_tf

    import_tf()
    import keras

    folder = tmp_path_factory.mktemp("tokens")
    ids = keras.Input((5,), dtype="int32", name="ids")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(6, 3, name="emb")(ids))
    keras.utils.set_random_seed(1)
    keras.Model(ids, keras.layers.Dense(2)(pooled)).save(folder / "tokens.keras")
    np.savez(folder / "ids.npz", ids=np.array([[0, 1, 2, 3, 1], [2, 2, 0, 1, 3]], np.int32))
    return folder


def test_probe_inputs_stay_inside_what_an_integer_input_accepts(token_model, tmp_path):
    """Generated ids stay in the embedding's vocabulary; with the user's inputs, in their range; and every
    case runs (before: `error at reference, runtime: ... indices ... is not in [0, 6)`)."""
    fx = user_fixture(token_model / "tokens.keras")
    assert fx.int_bounds == {"ids": (0, 6)}
    assert all(fx.make_inputs(4, seed=s)["ids"].max() < 6 for s in range(5))
    mine = with_user_options(fx, token_model / "ids.npz")
    assert all(mine.make_inputs(2, seed=s)["ids"].max() <= 3 for s in range(1, 5)), "inside the user's own range"
    for f in (fx, mine):
        engine = Engine(Exporter(), tmp_path / f"s{len(f.batches)}", Options(iterations=1, warmup=0), {f.name: f})
        try:
            results = [engine.run_case(c) for c in matrix(Selection(formats=["savedmodel", "onnx13"], runtimes=["tf", "ort"], batches=None), {f.name: f})]
        finally:
            engine.close()
        assert {r.status for r in results} == {"pass"}, [(r.id, r.error) for r in results]


def test_a_probe_the_model_rejects_is_no_verdict_against_a_runtime(token_model, tmp_path):
    """Probe inputs the model refuses (ids beyond its table, drawn on purpose here) leave the case judged on
    the user's inputs, with the refusal noted as evidence — never an error blamed on the runtime."""
    from dataclasses import replace

    fx = with_user_options(user_fixture(token_model / "tokens.keras"), token_model / "ids.npz")
    wild = replace(fx, generate=lambda rng, batch: {"ids": np.full((batch, 5), 99, np.int32)}, generate_alt=None)
    engine = Engine(Exporter(), tmp_path, Options(iterations=1, warmup=0), {wild.name: wild})
    try:
        results = [engine.run_case(c) for c in matrix(Selection(formats=["savedmodel", "onnx13"], runtimes=["tf", "ort"]), {wild.name: wild})]
    finally:
        engine.close()
    assert {r.status for r in results} == {"pass"}, [(r.id, r.error) for r in results]
    assert all("99" in r.evidence["probe_rejected"] for r in results)
