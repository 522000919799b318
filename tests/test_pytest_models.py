"""`pytest --harness-model PATH[::key=value...]` in a user's project: one test per case of the user's model,
as for the built-in fixtures; a broken model gets failing tests that carry the cause."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

MAKE = """
import sys
sys.path.insert(0, ".")
import keras
import numpy as np
import layers
inp = keras.Input((6,), name="x")
h = keras.layers.Dense(5, activation="tanh")(inp)
keras.Model(inp, keras.layers.Dense(3)(h)).save("model.keras")
keras.Model(inp, layers.Scale(1.5)(h)).save("custom.keras")
rng = np.random.default_rng(0)
np.savez("in.npz", x=rng.standard_normal((2, 6)).astype(np.float32))
np.savez("wrong.npz", output_0=np.full((2, 3), 7.0, np.float32))
"""

LAYER = """
import keras


@keras.saving.register_keras_serializable(package="mine")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kw):
        super().__init__(**kw)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project: its own `fixtures` package (never shadowed by the harness's), two Keras models
    (one with a custom layer), inputs and wrong golden outputs."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "fixtures").mkdir()
    (folder / "fixtures" / "__init__.py").write_text("MINE = True\n")
    (folder / "layers.py").write_text(LAYER)
    (folder / "test_mine.py").write_text("import fixtures\n\n\ndef test_my_fixtures_package():\n    assert fixtures.MINE\n")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(MAKE)], cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder


def pytest_in(folder, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--harness-runtimes", "tf,ort", *args],
                          cwd=folder, capture_output=True, text=True, timeout=900, env=env)


def _outcomes(out: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in re.finditer(r"^(PASSED|FAILED|SKIPPED|XFAIL)\s+\S*::(test_\w+\[[^\]]+\]|test_\w+)", out, re.M)}


def test_a_model_gives_one_passing_test_per_case(project):
    proc = pytest_in(project, "--harness-model", "model.keras")
    assert proc.returncode == 0, proc.stdout[-3000:]
    outcomes = _outcomes(proc.stdout)
    assert outcomes.pop("test_my_fixtures_package") == "PASSED"  # the project's own tests still run
    expected = {f"test_harness_model[check-model-{fmt}-{rt}-cpu-b{b}]" for fmt, rt in
                [("savedmodel", "tf"), ("keras", "tf"), ("h5", "tf"), ("frozen_graph", "tf"), ("onnx13", "ort"), ("onnx18", "ort")] for b in (1, 4)}
    assert set(outcomes) == expected, sorted(outcomes)
    assert set(outcomes.values()) == {"PASSED"}


def test_broken_models_fail_with_the_cause(project):
    proc = pytest_in(project, "--harness-model", "custom.keras", "--harness-model", "model.keras::inputs=in.npz::expected=wrong.npz",
                     "--harness-formats", "savedmodel,keras")
    assert proc.returncode == 1, proc.stdout[-3000:]
    outcomes = _outcomes(proc.stdout)
    assert outcomes["test_harness_model[custom.keras-load]"] == "FAILED"
    assert "custom.keras: cannot load Keras model" in proc.stdout and "unknown class 'Scale'" in proc.stdout
    wrong = {k: v for k, v in outcomes.items() if "check-model-" in k}
    assert set(wrong) == {"test_harness_model[check-model-savedmodel-tf-cpu-b2]", "test_harness_model[check-model-keras-tf-cpu-b2]"}
    assert set(wrong.values()) == {"FAILED"}
    assert "check-model-keras-tf-cpu-b2: fail at compare (runtime): output_0:" in proc.stdout


def test_model_options_custom_objects_and_tolerance(project):
    proc = pytest_in(project, "--harness-model", "custom.keras::custom-objects=layers.py::atol=1e-4", "--harness-formats", "keras,h5")
    assert proc.returncode == 0, proc.stdout[-3000:]
    outcomes = {k: v for k, v in _outcomes(proc.stdout).items() if k.startswith("test_harness_model")}
    assert len(outcomes) == 4 and set(outcomes.values()) == {"PASSED"}, outcomes
    bad = pytest_in(project, "--harness-model", "model.keras::tolerance=1")
    assert bad.returncode != 0
    assert "--harness-model model.keras::tolerance=1: 'tolerance=1' is not KEY=VALUE with KEY one of inputs, expected" in bad.stdout + bad.stderr
