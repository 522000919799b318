"""`pytest --harness-model PATH[::key=value...]` in a user's project: one test per case of the user's model,
as for the built-in fixtures; a broken model gets failing tests that carry the cause."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import SCALE_LAYER

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


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project: its own `fixtures` package (never shadowed by the harness's), two Keras models
    (one with a custom layer), inputs and wrong golden outputs."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "fixtures").mkdir()
    (folder / "fixtures" / "__init__.py").write_text("MINE = True\n")
    (folder / "layers.py").write_text(SCALE_LAYER)
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


def test_own_test_file_runs_each_case_once_junit_names_a_class_and_the_store_makes_a_report(project, tmp_path):
    """A user's tests/test_mymodel.py taking harness_model_case: each case runs once (the plugin's own file
    steps aside); without it, the plugin's tests carry a JUnit classname; --harness-store writes a run
    that `harness report` reads."""
    import json
    import xml.etree.ElementTree as ET

    mine = tmp_path / "own"
    (mine / "tests").mkdir(parents=True)
    (mine / "tests" / "test_mymodel.py").write_text(
        "def test_mymodel(harness_model_case, harness_model_run):\n    harness_model_run(harness_model_case)\n")
    args = ("--harness-model", str(project / "model.keras"), "--harness-formats", "savedmodel", "--harness-runtimes", "tf", "--harness-batch", "1")
    own = pytest_in(mine, *args, "--junitxml", str(tmp_path / "own.xml"), "--harness-store", "reports")
    assert own.returncode == 0, own.stdout[-3000:]
    cases = [(c.get("classname"), c.get("name")) for c in ET.parse(tmp_path / "own.xml").iter("testcase")]
    assert [(c.rpartition("tests.")[2], n) for c, n in cases] == [("test_mymodel", "test_mymodel[check-model-savedmodel-tf-cpu-b1]")], cases
    [run] = list((mine / "reports" / "runs").iterdir())
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in results] == [("check-model-savedmodel-tf-cpu-b1", "pass")]
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--reports", "reports", "--no-fuzz"], cwd=mine,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and (run / "index.html").is_file(), report.stderr[-2000:]
    plugin = pytest_in(project, *args, "--junitxml", str(tmp_path / "plugin.xml"), "-k", "harness_model")
    assert plugin.returncode == 0, plugin.stdout[-3000:]
    classes = {c.get("classname") for c in ET.parse(tmp_path / "plugin.xml").iter("testcase")}
    assert classes == {"harness.pytest_models"}, classes
