"""The model zoo (fixtures/zoo_*.py): opt-in selection, signal, the float64 oracle of any Keras model, two
small zoo models through the real CLI, and the model-status page.

`make test` builds two small zoo models (MobileNet at width 0.25, a 2-layer GPT-2); HARNESS_ZOO=all
builds every one (nightly: the whole zoo runs through `harness nightly` anyway, judged for signal by the
engine)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from harness.cases import Selection, matrix
from harness.export import format_class
from harness.fixtures import all_fixtures, get_fixture
from harness.records import CaseResult
from tests.conftest import run_cli

FAMILIES = ("convnext", "densenet", "efficientnet", "efficientnetv2", "inception_resnet_v2", "inception_v3", "mobilenet", "mobilenet_v2",
            "mobilenet_v3_small", "mobilenet_v3_large", "nasnet", "resnet", "resnet_v2", "vgg", "xception")
BACKBONES = ("bert", "gpt2", "distil_bert", "vit")
ZOO = [f"zoo_{n}" for n in FAMILIES + BACKBONES]
SMALL = ("zoo_mobilenet", "zoo_gpt2")  # the two `make test` builds and runs
ALL = os.environ.get("HARNESS_ZOO") == "all"


def test_the_zoo_is_opt_in_and_selected_by_its_group():
    fixtures = all_fixtures()
    assert set(ZOO) <= set(fixtures)
    assert not {c.fixture for c in matrix(Selection())} & set(ZOO), "the zoo must stay out of the default matrix"
    assert {c.fixture for c in matrix(Selection(fixtures=["zoo"], formats=["savedmodel"]))} == set(ZOO)
    named = matrix(Selection(fixtures=["zoo_vgg", "mlp"], formats=["savedmodel"], runtimes=["tf"]))
    assert {c.fixture for c in named} == {"zoo_vgg", "mlp"}
    for name in ZOO:  # each a fixture like the others: a Keras model with a float64 oracle, inputs from its signature
        fx = fixtures[name]
        assert fx.kind == "keras" and fx.oracle is not None and fx.group == "zoo"
        x = fx.make_inputs(2)
        assert set(x) == {s.name for s in fx.inputs} and all(x[s.name].dtype == np.dtype(s.dtype) for s in fx.inputs)


def _call(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    feed = [inputs[t.name.split(":")[0]] for t in model.inputs]
    out = model(feed if isinstance(model.input, (list, tuple)) else feed[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("name", [n if n in SMALL or ALL else pytest.param(n, marks=pytest.mark.skip(reason="HARNESS_ZOO=all builds it"))
                                  for n in ZOO])
def test_zoo_model_carries_signal_and_agrees_with_itself_in_float64(name):
    """Outputs move with the input by far more than the tolerance; a classifier's top class is not the same
    for every input; the float32 model (TF's reference) agrees with its float64 rebuild within the
    fixture's float32 tolerance; the BatchNorm statistics come from data; the build is the same bytes twice."""
    from harness.export.common import import_tf

    import_tf()
    import keras

    fx = get_fixture(name)
    model = fx.build()
    tol = fx.tolerance(format_class("savedmodel"), "output_0")
    inputs = fx.make_inputs(8)
    outputs = _call(model, inputs)
    others = _call(model, fx.make_inputs(8, seed=1))
    oracle = fx.oracle(inputs) if fx.oracle else {}
    assert list(oracle) == list(fx.outputs)
    for i, out in enumerate(outputs):
        assert np.isfinite(out).all()
        moved = float(np.max(np.abs(out - others[i])))
        assert moved > 100 * (tol.atol or 0), f"{name} output {i} moves by {moved:g} only"
        per_sample = out.reshape(len(out), -1)
        assert len({tuple(np.round(r, 6)) for r in per_sample}) == len(per_sample), "two inputs gave the same output"
        if fx.outputs[i] in fx.classifier_outputs:
            assert len(set(per_sample.argmax(axis=1))) > 1, f"{name}: one class wins for every input"
        f64 = oracle[fx.outputs[i]]
        assert f64.dtype == np.float64
        assert np.all(np.abs(out - f64) <= (tol.atol or 0) + (tol.rtol or 0) * np.abs(f64)), (
            f"{name} output {i}: float32 vs float64 max abs {np.max(np.abs(out - f64)):g}, tolerance {tol}")
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        assert not np.allclose(layer.moving_variance.numpy(), 1.0) and not np.allclose(layer.moving_mean.numpy(), 0.0), layer.name
    again = fx.build()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(model.get_weights(), again.get_weights()))


def test_a_users_keras_model_is_judged_against_itself_in_float64(tmp_path):
    """A user's Keras model, `harness check`: the model rebuilt in float64 (same weights) is the oracle. In
    (x + 4096) - 4096, float32 arithmetic rounds x to 1/2048: ONNX Runtime computes it op by op and is off
    by ~1e-4 from the exact answer, while TF's SavedModel folds the two constants (grappler) and returns x.
    The float64 oracle tells which is which: the TF reference is judged against it (and passes), and
    the ONNX case's distance from it is recorded beside its failure against TF."""
    script = tmp_path / "make.py"
    script.write_text(
        "import keras\n"
        "x = keras.Input(shape=(3,), name='x')\n"
        "y = keras.layers.Rescaling(1.0, offset=-4096.0)(keras.layers.Rescaling(1.0, offset=4096.0)(x))\n"
        f"keras.Model(x, y).save({str(tmp_path / 'cancel.keras')!r})\n")
    import subprocess
    import sys

    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    proc = run_cli("check", str(tmp_path / "cancel.keras"), "-F", "savedmodel,onnx13", "-r", "tf,ort", "-b", "1", "--sandbox", "none",
                   "--no-bisect", "--reports", str(tmp_path / "reports"), "-o", "json")
    results = {r["runtime"]: r for r in map(json.loads, proc.stdout.splitlines()) if r.get("runtime")}
    tf, ort = results["tf"], results["ort"]
    assert tf["baseline"] == "oracle" and tf["status"] == "pass", tf
    assert ort["baseline"] == "reference" and ort["status"] == "fail" and ort["stage"] == "compare", ort
    off = ort["oracle_metrics"]["output_0"]["max_abs"]
    assert 1e-5 < off < 1e-3, ort["oracle_metrics"]


def test_two_small_zoo_models_through_formats_and_runtimes_and_the_status_page(tmp_path):
    """zoo_mobilenet and zoo_gpt2 exported to SavedModel and ONNX and run in tf and ort (few formats: an export
    of a zoo model costs 10-70 s here; `make nightly` runs the zoo everywhere):
    every case passes (or is a known deviation), judged against TF, which is judged against the model in
    float64; the report has the model-status page, as a section and as status.md."""
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", ",".join(SMALL), "-F", "savedmodel,onnx13", "-r", "tf,ort", "-b", "1", "--reports",
                   str(reports), "-o", "json")
    results = [r for r in map(json.loads, proc.stdout.splitlines()) if r.get("fixture")]
    assert {r["fixture"] for r in results} == set(SMALL) and len(results) == 4, proc.stderr[-2000:]
    for r in results:
        assert r["status"] in ("pass", "xfail"), (r["id"], r["status"], r.get("error"))
        if (r["format"], r["runtime"]) == ("savedmodel", "tf"):
            assert r["baseline"] == "oracle"
        elif r["status"] == "pass":
            assert r["baseline"] == "reference" and r["oracle_metrics"], r["id"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = run_cli("report", "latest", "--reports", str(reports), "--no-fuzz")
    assert report.returncode == 0, report.stderr[-2000:]
    folder = (reports / "latest").resolve()
    status = (folder / "status.md").read_text()
    for name in SMALL:
        for fmt in ("savedmodel", "onnx13"):
            assert f"| {name} | {fmt} |" in status
    assert "| tf | 2 | 2 |" in status or "xf" in status
    assert 'id="status-grid"' in (folder / "index.html").read_text()


def _result(fixture: str, fmt: str, runtime: str, status: str, batch: int = 1, **kw) -> CaseResult:
    r = CaseResult(f"{fixture}-{fmt}-{runtime}-cpu-b{batch}", fixture, fmt, runtime, "cpu", batch)
    r.status = status
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_status_table_names_each_deviation_once_with_its_whole_message():
    from harness.report.status import markdown, status_table

    long_message = "converter emitted Erfc: " + "x" * 5000 + " END"
    results = [
        _result("a", "savedmodel", "tf", "pass"),
        _result("a", "onnx13", "ort", "pass", batch=1),
        _result("a", "onnx13", "ort", "fail", batch=4, stage="compare", culprit="runtime", error="output_0: 3% beyond atol"),
        _result("a", "tfjs_graph", "node-tfjs-cpu", "xfail", stage="run", culprit="runtime", error="_fusedhardswish not implemented",
                reason="TF.js has no fused hard-swish"),
        _result("b", "savedmodel", "tf", "pass"),
        _result("b", "onnx13", "ort", "error", stage="export", culprit="converter", error=long_message),
        _result("b", "onnx18", "ort", "error", stage="export", culprit="converter", error=long_message),
        _result("b", "tfjs_graph", "node-tfjs-cpu", "skip", reason="runtime unavailable"),
    ]
    table = status_table(results)
    assert table.models == ["a", "b"]
    assert table.cells[("a", "onnx13", "ort")][0] == "fail"  # the worst of its batches
    assert table.passing() == {"tf": (2, 2), "ort": (0, 2), "node-tfjs-cpu": (0, 1)}
    assert {k: dict(v) for k, v in table.by_culprit().items()} == {"runtime": {"fail": 1, "xfail": 1}, "converter": {"error": 2}, "–": {"skip": 1}}
    assert len(table.causes) == 4  # the converter error of two formats is one cause
    text = markdown(table)
    assert text.count("converter emitted Erfc") == 1 and "END" in text
    assert "_fusedhardswish not implemented" in text and "reason: TF.js has no fused hard-swish" in text
    assert "| b | onnx18 |" in text and "`b onnx13 ort`, `b onnx18 ort`" in text


def test_a_group_name_is_taken_and_a_bad_name_beside_it_is_one_line(tmp_path):
    proc = run_cli("export", "-f", "zoo,nope", "-F", "savedmodel")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "unknown fixture 'nope'" in last and "zoo_vgg" in last, last


def test_float64_clone_of_sequential_nested_and_integer_input_models():
    """The float64 rebuild for any Keras model: a Sequential model, a functional one holding another as a
    layer and taking integer ids; float64 outputs, the same weights exactly, agreeing with float32 to its
    rounding. A subclassed model Keras cannot rebuild is said so (Float64Unavailable), never guessed."""
    from harness.export.common import import_tf

    import_tf()
    import keras

    from harness.oracle64 import Float64Unavailable, float64_clone

    rng = np.random.default_rng(0)
    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="gelu"), keras.layers.BatchNormalization(),
                            keras.layers.Dense(3)])
    inner = keras.Sequential([keras.Input((4, 5)), keras.layers.LayerNormalization(), keras.layers.Dense(2)])
    ids = keras.Input((4,), dtype="int32", name="ids")
    nested = keras.Model(ids, inner(keras.layers.Embedding(10, 5)(ids)))
    for model, x in ((seq, rng.standard_normal((2, 6)).astype(np.float32)), (nested, rng.integers(0, 10, (2, 4)).astype(np.int32))):
        clone = float64_clone(model)
        assert all(w.dtype == "float64" for w in clone.weights)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(model.get_weights(), clone.get_weights()))
        y32 = np.asarray(model(x, training=False))
        y64 = np.asarray(clone(x.astype(np.float64) if x.dtype.kind == "f" else x, training=False))
        assert y64.dtype == np.float64 and np.allclose(y32, y64, atol=1e-5, rtol=1e-5)

    class Opaque(keras.Model):
        def __init__(self, units):  # a constructor argument get_config does not record
            super().__init__()
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return self.dense(x)

    opaque = Opaque(2)
    opaque(np.zeros((1, 3), np.float32))
    with pytest.raises(Float64Unavailable):
        float64_clone(opaque)


def test_a_change_of_the_zoos_shared_module_makes_new_zoo_artifacts(tmp_path):
    """fixtures/_zoo.py seeds and calibrates every zoo model: a change there keys new artifacts (the zoo's
    keys come from Fixture.digest, the module and the fixtures code it imports, as every fixture's do)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pkg = tmp_path / "pkg" / "harness_fixtures"
    pkg.mkdir(parents=True)
    for f in (repo / "fixtures").iterdir():
        if f.suffix in (".py", ".toml"):
            shutil.copy(f, pkg / f.name)
    probe = ("from harness.export import Exporter; from harness.fixtures import get_fixture; import sys; "
             "ex = Exporter(root=__import__('pathlib').Path(sys.argv[1])); "
             "print(*(ex.key(get_fixture(n), 'onnx18') for n in ('zoo_mobilenet', 'zoo_gpt2', 'mlp')))")
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}

    def keys() -> list[str]:
        proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "cache")], env=env, capture_output=True, text=True, cwd=repo)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    before = keys()
    zoo = pkg / "_zoo.py"
    zoo.write_text(zoo.read_text().replace("VARIANCE_FLOOR = 0.01", "VARIANCE_FLOOR = 0.02"))
    after = keys()
    assert after[0] != before[0] and after[1] != before[1], "a change of fixtures/_zoo.py must key new zoo artifacts"
    assert after[2] == before[2], "a fixture that does not import _zoo keeps its key"
    # Any fixtures module a zoo module comes to import is in the key too (the zoo's own digest covered two files).
    apps = pkg / "zoo_apps.py"
    apps.write_text(apps.read_text().replace("from harness_fixtures import _zoo", "from harness_fixtures import _nn, _zoo  # noqa: F401"))
    with_helper = keys()
    (pkg / "_nn.py").write_text((pkg / "_nn.py").read_text() + "\nPIXEL_SCALE_NOTE = 'changed'\n")
    helper_changed = keys()
    assert helper_changed[0] != with_helper[0] and helper_changed[1] == with_helper[1], (with_helper, helper_changed)
