"""A project file (harness.toml, or [tool.harness] in pyproject.toml) listing a project's own models with
their inputs, goldens, tolerances, custom objects, runtimes and formats, read by `harness check` (no PATH)
and the pytest plugin alike."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from harness import project
from harness.errors import HarnessError
from harness.export import format_class


def _relu(path, batch="N") -> None:
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io[:1], io[1:]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture
def folder(tmp_path):
    _relu(tmp_path / "relu.onnx")
    x = np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "golden.npz", y=np.maximum(x, 0))
    np.savez(tmp_path / "wrong.npz", y=np.maximum(x, 0) + 1)
    return tmp_path


HARNESS_TOML = """
[[model]]
path = "relu.onnx"
inputs = "in.npz"
expected = "golden.npz"
atol = {y = 1e-4}
runtimes = ["ort"]

[[model]]
path = "relu.onnx"
runtimes = ["ort", "node-ort"]
batch = [3]
"""


def test_the_file_is_read_with_paths_from_its_folder_and_bad_entries_are_one_line(folder):
    (folder / "harness.toml").write_text(HARNESS_TOML)
    assert project.find(folder) == folder / "harness.toml"
    first, second = project.read(folder / "harness.toml")
    assert (first.path, first.inputs, first.atol, first.runtimes) == (folder / "relu.onnx", folder / "in.npz", ("y=0.0001",), ["ort"])
    assert (second.runtimes, second.batches) == (["ort", "node-ort"], [3])
    fx = first.fixture()
    assert fx.golden is not None and fx.tolerance(format_class("onnx13"), "y").atol == 1e-4
    (folder / "harness.toml").write_text('[[model]]\npath = "relu.onnx"\nruntime = ["ort"]\n')
    with pytest.raises(HarnessError, match=r"harness.toml, model 1: unknown key\(s\) runtime: expected some of path, inputs"):
        project.read(folder / "harness.toml")
    (folder / "harness.toml").write_text('[[model]]\npath = "relu.onnx"\natol = "big"\n')
    with pytest.raises(HarnessError, match=r"model 1: atol = 'big' is not valid: expected a number"):
        project.read(folder / "harness.toml")
    (folder / "harness.toml").unlink()
    (folder / "pyproject.toml").write_text('[project]\nname = "mine"\n\n[[tool.harness.model]]\npath = "relu.onnx"\n')
    assert project.find(folder) == folder / "pyproject.toml" and [m.path.name for m in project.read(folder / "pyproject.toml")] == ["relu.onnx"]
    (folder / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    assert project.find(folder) is None


def test_check_without_a_path_runs_every_model_of_the_project_file(folder):
    (folder / "harness.toml").write_text(HARNESS_TOML)
    proc = run_cli("check", "-o", "json", "--sandbox", "none", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = sorted((r["fixture"], r["runtime"], r["batch"], r["baseline"], r["status"]) for r in map(json.loads, proc.stdout.splitlines()))
    skip_or_pass = {r[4] for r in seen}
    assert skip_or_pass <= {"pass", "skip"}
    assert [(f, rt, b, base) for f, rt, b, base, _ in seen if rt == "ort"] == [
        ("check-relu", "ort", 2, "golden"), ("check-relu-2", "ort", 3, "self")]
    assert {(f, rt) for f, rt, *_ in seen} == {("check-relu", "ort"), ("check-relu-2", "ort"), ("check-relu-2", "node-ort")}
    (folder / "harness.toml").unlink()
    none = run_cli("check", cwd=folder)
    assert none.returncode == 2 and "no model given and no project file here" in none.stderr


def test_pytest_tests_the_models_of_pyproject_tool_harness(folder):
    (folder / "pyproject.toml").write_text('[project]\nname = "mine"\n\n[[tool.harness.model]]\npath = "relu.onnx"\n'
                                           'inputs = "in.npz"\nexpected = "wrong.npz"\nruntimes = ["ort"]\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--harness-sandbox", "none"],
                          cwd=folder, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED harness/pytest_models.py::test_harness_model[check-relu-onnx13-ort-cpu-b2]" in proc.stdout
    assert "fail at compare" in proc.stdout
