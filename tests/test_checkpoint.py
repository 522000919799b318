"""Format `checkpoint`: a TF2 tf.train.Checkpoint (Keras fixtures) and a TF1 Saver checkpoint (tf1_flat)
restored by the tf worker into the fixture's code, judged against the SavedModel. The restore matters
(code alone computes something else), a checkpoint that does not fit the code is one clear load
failure naming the variables (culprit model), and a damaged cached checkpoint is exported again."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import comparator
from harness.artifact import Artifact, manifest
from harness.cases import Selection, matrix
from harness.engine import Engine, Options
from harness.export import FORMATS, Exporter, format_class, formats_for
from harness.export.validate import ConverterFault, validate
from harness.fixtures import get_fixture
from harness.records import CaseResult
from harness.runners.table import RUNTIMES


@pytest.fixture(scope="module")
def tf():
    from harness.export.common import import_tf

    return import_tf()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private export cache: these tests damage and replace checkpoints in it."""
    return tmp_path_factory.mktemp("cache")


def fresh(cache: Path, tmp_path: Path, name: str, fmt: str = "checkpoint") -> Artifact:
    """`name` exported to `fmt` in a copy of the private cache (the module's exports reused), to tamper with."""
    root = tmp_path / "cache"
    if not root.exists():
        shutil.copytree(cache, root, ignore=shutil.ignore_patterns("*.lock"))
    art = Exporter(root).get(get_fixture(name), fmt)
    assert art.status == "ok", art.error
    return art


def rerecord(art: Artifact) -> None:
    """Record the artifact's files as they are now: the cache then hands the tampered checkpoint out as intact."""
    art.files = manifest(art.folder_path)
    (art.folder_path / "artifact.json").write_text(art.to_json())


def run(art_root: Path, tmp_path: Path, names: list[str], batches=(2,)) -> dict[str, CaseResult]:
    fixtures = {n: get_fixture(n) for n in names}
    engine = Engine(Exporter(art_root), tmp_path / "scratch", Options(iterations=1, warmup=0), fixtures, deviations=[])
    try:
        cases = matrix(Selection(formats=["checkpoint"], runtimes=["tf"], batches=list(batches)), fixtures)
        return {r.fixture: r for r in (engine.run_case(c) for c in cases)}
    finally:
        engine.close()


def restore(tf, art: Artifact, inputs: dict, restore: bool = True) -> dict:
    """The tf worker's own load, in this process: build from code, fresh values, (restore), run."""
    from harness_runners.tf import load_checkpoint

    meta = json.loads((art.folder_path / "artifact.json").read_text())
    session = load_checkpoint(tf, meta, art.folder_path, art.model_path, restore=restore)
    try:
        return session.run(inputs)
    finally:
        session.close()


def write_keras_checkpoint(tf, art: Artifact, hidden: int = 10, seed: int = 7) -> None:
    """Replace mlp's checkpoint with one of an mlp of `hidden` units and other weights."""
    import keras

    from harness.fixtures import set_weights

    inputs = keras.Input(shape=(32,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(hidden, activation="relu")(inputs)))
    set_weights(model, seed)
    for f in art.model_path.glob("ckpt.*"):
        f.unlink()
    tf.train.Checkpoint(model=model).write(str(art.model_path / "ckpt"))
    rerecord(art)


def test_checkpoint_is_an_opt_in_float32_format_of_tf():
    assert "checkpoint" in RUNTIMES["tf"].formats
    for name in ("mlp", "mnist_cnn", "mobilenet_block", "tf1_flat"):
        assert "checkpoint" in formats_for(get_fixture(name)), name
    assert "checkpoint" not in formats_for(get_fixture("unet_small"))
    assert "checkpoint" in formats_for(get_fixture("unet_small"), ["checkpoint"])
    assert get_fixture("mlp").tolerance(format_class("checkpoint"), "output_0") == get_fixture("mlp").tolerance(format_class("savedmodel"), "output_0")


def test_tf2_and_tf1_checkpoints_restored_into_code_pass(cache, tmp_path):
    results = run(cache, tmp_path, ["mlp", "tf1_flat", "pow"])
    for name in ("mlp", "tf1_flat"):
        r = results[name]
        assert (r.status, r.baseline) == ("pass", "reference"), r.error
    exporter = Exporter(cache)
    keras_ck, tf1_ck = exporter.get(get_fixture("mlp"), "checkpoint"), exporter.get(get_fixture("tf1_flat"), "checkpoint")
    assert {p.name for p in keras_ck.model_path.iterdir()} == {"checkpoint.json", "ckpt.index", "ckpt.data-00000-of-00001"}
    assert {p.name for p in tf1_ck.model_path.iterdir()} == {"checkpoint.json", "ckpt.index", "ckpt.data-00000-of-00001", "ckpt.meta"}
    meta = json.loads((tf1_ck.model_path / "checkpoint.json").read_text())
    assert (meta["style"], meta["module"], meta["fixture"]) == ("tf1", "harness_fixtures.tf1_flat", "tf1_flat")
    assert meta["variables"] == {"w1": [4, 8], "b1": [8], "w2": [8, 3], "b2": [3]}
    assert json.loads((keras_ck.model_path / "checkpoint.json").read_text())["style"] == "tf2"
    # A fixture whose weights are constants has nothing to checkpoint: unsupported, with the reason.
    assert results["pow"].status == "unsupported" and "pow has no variables" in results["pow"].reason


def test_restoring_matters(tf, cache, tmp_path):
    """Built from code with fresh values and not restored, the models compute something else: far
    outside the float32 tolerance, so a restore that did nothing would fail the case."""
    exporter = Exporter(cache)
    for name, output in (("mlp", "output_0"), ("tf1_flat", "logits")):
        fx = get_fixture(name)
        art = exporter.get(fx, "checkpoint")
        inputs = fx.make_inputs(4)
        saved = tf.saved_model.load(str(exporter.get(fx, "savedmodel").model_path), tags=["serve"])
        reference = {k: v.numpy() for k, v in saved.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        tolerances = {k: fx.tolerance(format_class("checkpoint"), k) for k in reference}
        restored = restore(tf, art, inputs)
        assert comparator.judge(reference, restored, tolerances).passed
        unrestored = restore(tf, art, inputs, restore=False)
        judged = comparator.judge(reference, unrestored, tolerances)
        assert not judged.passed, name
        assert np.abs(unrestored[output] - reference[output]).max() > 0.05, name


def test_a_checkpoint_of_other_weights_fails_the_verdict(tf, cache, tmp_path):
    art = fresh(cache, tmp_path, "mlp")
    write_keras_checkpoint(tf, art, hidden=10, seed=7)
    r = run(tmp_path / "cache", tmp_path, ["mlp"])["mlp"]
    assert (r.status, r.stage, r.culprit) == ("fail", "compare", "runtime"), r.error


def test_a_checkpoint_that_does_not_fit_the_code_is_the_models_fault(tf, cache, tmp_path):
    art = fresh(cache, tmp_path, "mlp")
    write_keras_checkpoint(tf, art, hidden=11)
    r = run(tmp_path / "cache", tmp_path, ["mlp"])["mlp"]
    assert (r.status, r.stage, r.culprit) == ("error", "load", "model"), r.error
    assert "checkpoint does not match the model's code (harness_fixtures.mlp" in r.error
    assert "variable dense/kernel (model/_operations/1/_kernel) has shape [32, 11] in the checkpoint, [32, 10] in the code; " \
           "variable dense/bias (model/_operations/1/bias) has shape [11] in the checkpoint, [10] in the code; " \
           "variable dense_1/kernel (model/_operations/2/_kernel) has shape [11, 1] in the checkpoint, [10, 1] in the code" in r.error
    assert "repaired" not in r.artifact, "the files are as recorded: nothing to repair"


def test_missing_and_unexpected_variables_are_named(tf, cache, tmp_path):
    from harness_runners.protocol import ProtocolError

    art = fresh(cache, tmp_path, "mlp")
    inputs = get_fixture("mlp").make_inputs(1)
    import keras

    # The last Dense without its bias: the code's bias has no value in the checkpoint.
    x = keras.Input(shape=(32,), name="features")
    no_bias = keras.Model(x, keras.layers.Dense(1, use_bias=False)(keras.layers.Dense(10, activation="relu")(x)))
    for f in art.model_path.glob("ckpt.*"):
        f.unlink()
    tf.train.Checkpoint(model=no_bias).write(str(art.model_path / "ckpt"))
    with pytest.raises(ProtocolError, match=r"checkpoint does not match the model's code \(harness_fixtures\.mlp, checkpoint \S+\): "
                                            r"variable \S+/bias \(model/_operations/2/bias\) \[1\] is in the code, not in the checkpoint$") as e:
        restore(tf, art, inputs)
    assert e.value.kind == "load_failed"

    # One more layer in the checkpoint than in the code: its variables are not in the code.
    art = fresh(cache, tmp_path / "more", "mlp")
    x = keras.Input(shape=(32,), name="features")
    h = keras.layers.Dense(10, activation="relu")(x)
    longer = keras.Model(x, keras.layers.Dense(1)(keras.layers.Dense(1)(h)))
    for f in art.model_path.glob("ckpt.*"):
        f.unlink()
    tf.train.Checkpoint(model=longer).write(str(art.model_path / "ckpt"))
    with pytest.raises(ProtocolError, match=r"checkpoint does not match the model's code") as e:
        restore(tf, art, inputs)
    # The checkpoint's names are the layers' names when it was written (the worker's own may differ).
    assert re.search(r": variable \w+/kernel \(model/_operations/3/_kernel\) \[1, 1\] is in the checkpoint, not in the code; "
                     r"variable \w+/bias \(model/_operations/3/bias\) \[1\] is in the checkpoint, not in the code$", str(e.value)), str(e.value)


def test_a_tf1_checkpoint_that_does_not_fit_the_graph_names_every_variable(tf, cache, tmp_path):
    from harness_runners.protocol import ProtocolError

    art = fresh(cache, tmp_path, "tf1_flat")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        for name, shape in (("w1", [4, 9]), ("b1", [8]), ("w2", [8, 3]), ("w3", [3, 3])):  # b2 missing, w3 unexpected
            v1.get_variable(name, shape=shape)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, str(art.model_path / "ckpt"), write_state=False)
    rerecord(art)
    with pytest.raises(ProtocolError) as e:
        restore(tf, art, get_fixture("tf1_flat").make_inputs(1))
    assert e.value.kind == "load_failed"
    assert str(e.value).startswith("checkpoint does not match the model's code (harness_fixtures.tf1_flat, checkpoint ")
    assert str(e.value).endswith("variable b2 [3] is in the code, not in the checkpoint; variable w3 [3, 3] is in the checkpoint, not in the code; "
                                 "variable w1 has shape [4, 9] in the checkpoint, [4, 8] in the code")
    r = run(tmp_path / "cache", tmp_path, ["tf1_flat"])["tf1_flat"]
    assert (r.status, r.stage, r.culprit) == ("error", "load", "model")


def test_a_corrupt_checkpoint_is_a_clear_load_failure_and_validation_catches_a_cut_index(tf, cache, tmp_path):
    from harness_runners.protocol import ProtocolError

    for name in ("mlp", "tf1_flat"):
        art = fresh(cache, tmp_path / name, name)
        data = art.model_path / "ckpt.data-00000-of-00001"
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
        with pytest.raises(ProtocolError, match=r"checkpoint \S+ckpt cannot be read: DataLossError: ") as e:
            restore(tf, art, get_fixture(name).make_inputs(1))
        assert e.value.kind == "load_failed", name
        validate(FORMATS["checkpoint"], art.folder_path, art)  # values are TensorFlow's to check (checksums)
        index = art.model_path / "ckpt.index"
        index.write_bytes(index.read_bytes()[:-20])
        with pytest.raises(ConverterFault, match=r"ckpt\.index is not a complete checkpoint index"):
            validate(FORMATS["checkpoint"], art.folder_path, art)


def test_a_damaged_cached_checkpoint_is_exported_again(cache, tmp_path):
    """Bytes changed in the data file, size and mtime kept: the fast check misses it, TensorFlow's
    checksum fails the load, the engine hashes the artifact, finds the damage, exports it again and
    runs the case once more: pass, with the repair recorded."""
    art = fresh(cache, tmp_path, "mlp")
    data = art.model_path / "ckpt.data-00000-of-00001"
    st = data.stat()
    raw = bytearray(data.read_bytes())
    raw[8] ^= 0xFF
    data.write_bytes(bytes(raw))
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run(tmp_path / "cache", tmp_path, ["mlp"])["mlp"]
    assert r.status == "pass", r.error
    assert any(p.startswith("checkpoint: checkpoint/ckpt.data-00000-of-00001 has changed since export") for p in r.artifact["repaired"])
    # A file cut short is caught by the fast check before any worker sees it.
    data.write_bytes(data.read_bytes()[:10])
    exporter = Exporter(tmp_path / "cache")
    again = exporter.get(get_fixture("mlp"), "checkpoint")
    assert again.status == "ok" and exporter.repairs and "has 10 bytes" in exporter.repairs[0]["problem"]


def test_under_the_bwrap_sandbox_a_checkpoint_is_unsupported_with_the_reason(cache, tmp_path):
    """The sandbox shows the worker runners/ only, not the fixture code a checkpoint is restored into."""
    from harness.sandbox import bwrap_availability

    a = bwrap_availability()
    if not a.ok:
        pytest.skip(f"bwrap unavailable: {a.reason} (fix: {a.fix})")
    fixtures = {"mlp": get_fixture("mlp")}
    engine = Engine(Exporter(cache), tmp_path / "scratch", Options(iterations=1, warmup=0, sandbox="bwrap"), fixtures, deviations=[])
    try:
        [r] = [engine.run_case(c) for c in matrix(Selection(formats=["checkpoint"], runtimes=["tf"], batches=[1]), fixtures)]
    finally:
        engine.close()
    assert (r.status, r.stage) == ("unsupported", "load"), r.error
    assert "restored into the harness's fixture code, which this worker cannot import (No module named 'harness_fixtures'" in r.error
