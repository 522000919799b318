"""Real architectures and the seeds' SavedModel forms: converter options as formats (tflite_select),
TF1 graphs with several tag sets and signatures, signatures other than the default, converters that
print instead of logging."""

import numpy as np
import pytest

from harness.cases import Selection, matrix
from harness.engine import Engine, Options
from harness.errors import HarnessError
from harness.export import Exporter, formats_for, signature_variant
from harness.fixtures import Fixture, TensorSpec, get_fixture


def test_opt_in_formats_are_in_the_matrix_only_where_listed_or_named():
    assert "tflite_select" in formats_for(get_fixture("lstm_seq"))
    assert "tflite_select" not in formats_for(get_fixture("mlp"))
    assert "tflite_select" in formats_for(get_fixture("mlp"), ["tflite_select"])
    cases = matrix(Selection(fixtures=["mlp"], formats=["tflite_select"], runtimes=["litert"]))
    assert [c.id for c in cases] == ["mlp-tflite_select-litert-cpu-b1", "mlp-tflite_select-litert-cpu-b4"]


def test_select_tf_ops_without_a_flex_delegate_are_unsupported_with_the_ops_named(tmp_path):
    """lstm_seq's while loop converts only with Select TF ops; no interpreter here links the Flex
    delegate, so the case is unsupported (environment), naming the Flex ops, never a runtime error.
    A fixture without TensorList ops converts to builtins under the same option and passes."""
    fixtures = {n: get_fixture(n) for n in ("lstm_seq", "mlp")}
    engine = Engine(Exporter(), tmp_path, Options(iterations=1, warmup=0), fixtures)
    try:
        lstm = engine.run_case(matrix(Selection(fixtures=["lstm_seq"], formats=["tflite_select"], runtimes=["litert"], batches=[1]))[0])
        mlp = engine.run_case(matrix(Selection(fixtures=["mlp"], formats=["tflite_select"], runtimes=["litert"], batches=[1]))[0])
    finally:
        engine.close()
    assert lstm.status == "unsupported" and (lstm.stage, lstm.culprit) == ("validate", "environment")
    assert "FlexTensorListReserve" in lstm.reason and "no Flex delegate" in lstm.reason
    assert mlp.status == "pass", mlp.error


def test_printed_converter_output_goes_to_the_artifact_log_not_the_terminal(tmp_path, capfd):
    def build():
        import tensorflow as tf

        print("failed to lookup keras version from the file,\n    this is likely a weight only file")

        class M(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def serve(self, x):
                return {"y": x * 2.0}

        m = M()
        return m, m.serve

    fx = Fixture(name="noisy", description="", kind="module", inputs=(TensorSpec("x", "float32", (None,)),), outputs=("y",),
                 build=build, generate=lambda rng, b: {"x": np.ones(b, np.float32)}, source_digest="noisy-1")
    art = Exporter(tmp_path).get(fx, "savedmodel")
    assert art.status == "ok"
    assert "failed to lookup keras version" not in capfd.readouterr().out
    assert "stdout: failed to lookup keras version from the file," in art.extra["converter_log"]


def test_tf1_graph_signatures_and_tag_sets(tmp_path):
    """The TF1 SavedModelBuilder fixture: the classify signature (serialized tf.Example strings) and the
    hidden signature of the {serve, extra} meta graph run on tf against their float64 oracles; a tag
    set or signature that is not there is one clear error naming the ones that are."""
    base = get_fixture("tf1_flat")
    exporter = Exporter()
    saved = exporter.get(base, "savedmodel")
    assert saved.status == "ok", saved.error
    classify = signature_variant(base, saved.model_path, "classify", "serve")
    hidden = signature_variant(base, saved.model_path, "hidden", "serve,extra")
    assert classify.name == "tf1_flat.classify" and hidden.name == "tf1_flat.serve+extra.hidden"
    assert classify.inputs == (TensorSpec("inputs", "bytes", (None,)),) and classify.outputs == ("scores",)
    examples = classify.make_inputs(3)["inputs"]
    assert examples.dtype.kind == "S" and len(examples) == 3
    with pytest.raises(HarnessError, match=r"has no tag 'train': expected one of \[\['serve'\], \['serve', 'extra'\]\]"):
        signature_variant(base, saved.model_path, "classify", "train")
    with pytest.raises(HarnessError, match=r"no signature 'hidden': expected one of \['classify', 'serving_default'\]"):
        signature_variant(base, saved.model_path, "hidden", "serve")
    fixtures = {f.name: f for f in (classify, hidden)}
    engine = Engine(exporter, tmp_path, Options(iterations=1, warmup=0), fixtures)
    try:
        results = [engine.run_case(c) for c in matrix(Selection(fixtures=list(fixtures), formats=["savedmodel"],
                                                                runtimes=["tf", "go-tfgo", "node-tfjs-node"], batches=[2]), fixtures)]
    finally:
        engine.close()
    # Strings (serialized tf.Example) and a tag set reach TensorFlow from Python, Go and Node alike.
    ran = [r for r in results if r.status != "skip"]
    assert {(r.fixture, r.runtime) for r in ran} >= {("tf1_flat.classify", "tf"), ("tf1_flat.serve+extra.hidden", "tf")}
    assert all(r.status == "pass" for r in ran), [(r.id, r.error) for r in ran if r.status != "pass"]
    assert {r.baseline for r in ran if r.runtime == "tf"} == {"oracle"}


def test_an_asset_travels_where_the_format_can_hold_it_and_is_unsupported_elsewhere(tmp_path):
    """vocab_lookup's vocabulary file is an asset behind a lookup table: the SavedModel carries it (tf
    agrees with the oracle, which knows the vocabulary, so the table was filled from the file), and a
    format that cannot carry files is unsupported, naming the asset, before any converter runs."""
    fixtures = {"vocab_lookup": get_fixture("vocab_lookup")}
    exporter = Exporter()
    saved = exporter.get(fixtures["vocab_lookup"], "savedmodel")
    assert (saved.model_path / "assets" / "vocab.tsv").is_file()
    engine = Engine(exporter, tmp_path, Options(iterations=1, warmup=0), fixtures)
    try:
        results = {r.format: r for r in (engine.run_case(c) for c in matrix(
            Selection(formats=["savedmodel", "tflite", "onnx13"], runtimes=["tf", "litert", "ort"], batches=[2]), fixtures))}
    finally:
        engine.close()
    assert (results["savedmodel"].status, results["savedmodel"].baseline) == ("pass", "oracle")
    for fmt in ("tflite", "onnx13"):
        r = results[fmt]
        assert (r.status, r.stage, r.culprit) == ("unsupported", "export", "converter"), r.error
        assert "cannot hold the SavedModel's assets (vocab.tsv)" in r.reason
