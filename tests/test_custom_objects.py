"""`harness check --custom-objects FILE.py` / `--import MODULE`: a Keras model with a custom layer, made
in the test's folder, loads in the harness (export) and in the sandboxed tf worker (.keras/.h5 cases)."""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import run_cli

LAYER = '''
import keras


{decorator}class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kw):
        super().__init__(**kw)
        self.factor = factor

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="random_normal")

    def call(self, x):
        return x * self.w * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}
{extra}'''

MAKE = """
import sys
sys.path.insert(0, ".")
import keras
import {module}
inp = keras.Input((6,), name="x")
out = {module}.Scale(1.5)(keras.layers.Dense(5)(inp))
keras.Model(inp, out).save("model.keras")
"""


def _project(folder, module: str, registered: bool):
    """A user's folder: the layer's module and model.keras saved with it."""
    folder.mkdir(exist_ok=True)
    decorator = '@keras.saving.register_keras_serializable(package="mine")\n' if registered else ""
    extra = "" if registered else '\n\nCUSTOM_OBJECTS = {"Scale": Scale}\n'
    (folder / f"{module}.py").write_text(LAYER.format(decorator=decorator, extra=extra))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(MAKE.format(module=module))], cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder / "model.keras"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    return _project(tmp_path_factory.mktemp("registered"), "layers", registered=True)


def _statuses(proc) -> dict[str, str]:
    return {r["id"]: r["status"] for r in map(json.loads, proc.stdout.splitlines())}


def test_without_the_option_names_the_class_and_the_fix(registered):
    proc = run_cli("check", str(registered), "-r", "tf", cwd=registered.parent)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown class 'Scale'" in lines[0] and "--custom-objects FILE.py" in lines[0], lines[0]


def test_custom_objects_file_every_tf_case_passes(registered, tmp_path):
    """Run from another folder, so nothing but the option can make the layer importable; the tf worker
    (sandboxed: bwrap) loads the .keras and .h5 artifacts with the file the artifact carries."""
    proc = run_cli("check", str(registered), "-r", "tf", "--custom-objects", str(registered.parent / "layers.py"), "-o", "json",
                   "--no-bisect", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = _statuses(proc)
    assert {k.split("-")[2] for k in statuses} >= {"keras", "h5", "savedmodel"}, statuses
    assert set(statuses.values()) == {"pass"}, statuses


def test_import_module_with_custom_objects_dict(tmp_path):
    """An unregistered class, named by the module's CUSTOM_OBJECTS, imported from the working folder."""
    model = _project(tmp_path / "plain", "mylayers", registered=False)
    proc = run_cli("check", str(model), "-r", "tf", "-F", "keras,h5", "-o", "json", "--no-bisect", cwd=model.parent)
    assert proc.returncode == 2 and "unknown class 'Scale'" in proc.stderr, proc.stderr
    proc = run_cli("check", str(model), "-r", "tf", "-F", "keras,h5", "--import", "mylayers", "-o", "json", "--no-bisect", cwd=model.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = _statuses(proc)
    assert len(statuses) == 4 and set(statuses.values()) == {"pass"}, statuses


def test_bad_custom_objects_file_is_one_line(registered, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('no layers here')\n")
    proc = run_cli("check", str(registered), "-r", "tf", "--custom-objects", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"harness: error: --custom-objects {bad} raised RuntimeError: no layers here", proc.stderr
