"""End to end: the real CLI in a subprocess, as a user or CI runs it."""

import json

import pytest

from conftest import run_cli


def test_doctor_lists_every_runtime_without_importing_tensorflow():
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for name in ("tf", "litert", "ort"):
        assert rows[name]["available"] and rows[name]["version"]
    proc = run_cli("doctor")
    assert "litert" in proc.stdout and "tensorflow" not in proc.stderr.lower()


def test_run_writes_results_and_prints_the_matrix(tmp_path):
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow", "-r", "ort,litert", "-n", "3", "--reports", str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 cases: 12 pass" in proc.stdout
    lines = (reports / "latest" / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    assert len(results) == 12 and {r["runtime"] for r in results} == {"ort", "litert"}
    r = results[0]
    assert r["status"] == "pass" and set(r["metrics"]) == {"pow_x_y", "pow_y_x"}
    assert {"load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "samples_ms"} <= set(r["timing"])
    assert len(r["timing"]["samples_ms"]) == 3
    meta = json.loads((reports / "latest" / "run.json").read_text())
    assert meta["runtimes"]["ort"]["versions"]["onnxruntime"] and meta["environment"]["cores"]
    assert meta["summary"]["counts"] == {"pass": 12}

    # Bad input afterwards: one line, exit 2, and the earlier run is kept.
    bad = run_cli("run", "-f", "nope", "--reports", str(reports))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "harness: error: unknown fixture 'nope': expected one of argmax, conv3x3, gemm256, gemm512, gemm64, matmul, mlp, mnist_cnn, pow"
    ]
    assert len((reports / "latest" / "results.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize("args, message", [
    (["run", "-F", "onnx99"], "unknown format 'onnx99': expected one of"),
    (["run", "-r", "nope"], "unknown runtime 'nope': expected one of go-ort, go-tfgo, go-tfgo@docker, litert, node-ort"),
    (["run", "-b", "x"], "--batch x is not valid: expected positive integers"),
    (["check", "/nonexistent/model.keras"], "model not found: /nonexistent/model.keras does not exist"),
])
def test_bad_arguments_get_one_line(args, message, tmp_path):
    proc = run_cli(*args, "--reports", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def _user_keras_model(path):
    import keras

    inputs = keras.Input(shape=(16,), name="signal")
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    x = keras.layers.LayerNormalization()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.save(path)


def test_check_runs_a_users_keras_model_everywhere(tmp_path):
    model = tmp_path / "my_model.keras"
    _user_keras_model(model)
    proc = run_cli("check", str(model), "-b", "2", "-n", "2", "--reports", str(tmp_path / "reports"))
    results = [json.loads(x) for x in (tmp_path / "reports" / "latest" / "results.jsonl").read_text().splitlines()]
    formats = {r["format"] for r in results}
    assert formats >= {"savedmodel", "keras", "h5", "frozen_graph", "tflite", "tflite_int8", "onnx13", "onnx18"}
    assert {r["fixture"] for r in results} == {"check-my_model"}
    bad = [r for r in results if r["status"] not in ("pass", "xfail")]
    assert proc.returncode == (1 if bad else 0), proc.stdout
    assert not bad, [(r["id"], r["status"], r["error"]) for r in bad]


def test_check_savedmodel_without_the_signature(pow_artifacts, tmp_path):
    proc = run_cli("check", str(pow_artifacts["savedmodel"].model_path), "--signature", "nope", "--reports", str(tmp_path))
    assert proc.returncode == 2
    assert "has no signature 'nope': expected one of ['serving_default']" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _loud_model(path):
    """Three Dense layers; the middle one has weights of size ~100, so float16 weight rounding pushes
    its outputs past the float16 tolerance while the first layer stays well inside it."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = keras.Input(shape=(16,), name="signal")
    x = keras.layers.Dense(16, name="calm")(inputs)
    x = keras.layers.Dense(16, name="loud")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    for name, scale, units in (("calm", 0.1, 16), ("loud", 100.0, 16), ("head", 0.3, 4)):
        model.get_layer(name).set_weights([rng.normal(0, scale, (16, units)).astype("float32"), np.zeros(units, "float32")])
    model.save(path)


def test_check_finds_the_first_diverging_layer(tmp_path):
    model = tmp_path / "loud.keras"
    _loud_model(model)
    proc = run_cli("check", str(model), "-r", "litert", "-F", "tflite_fp16", "-b", "4", "-n", "2", "--reports", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "first divergence of check-loud-tflite_fp16-litert-cpu-b4: at layer 1 loud (Dense) (ok up to calm (Dense))" in proc.stdout
    results = [json.loads(x) for x in (tmp_path / "r" / "latest" / "results.jsonl").read_text().splitlines()]
    (failed,) = [r for r in results if r["status"] == "fail"]
    assert failed["divergence"]["layer"] == "loud (Dense)" and failed["divergence"]["probes"]["calm (Dense)"] == "pass"
