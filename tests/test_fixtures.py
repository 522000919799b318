"""Fixture registry and determinism."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.fixtures import all_fixtures, get_fixture

ARCHITECTURES = ["unet_small", "mobilenet_block", "lstm_seq", "gru_seq", "transformer_block", "text_embed", "resize_norm"]


def test_registry_has_the_reference_models():
    assert set(all_fixtures()) >= {"pow", "matmul", "mlp", "mnist_cnn", "conv3x3", "argmax", *ARCHITECTURES}


@pytest.mark.parametrize("name", ["pow", "matmul", "mlp", "mnist_cnn", "conv3x3", "argmax", *ARCHITECTURES])
def test_inputs_are_deterministic_and_match_the_signature(name):
    fx = get_fixture(name)
    a, b = fx.make_inputs(4), fx.make_inputs(4)
    assert a.keys() == {s.name for s in fx.inputs}
    for spec in fx.inputs:
        assert a[spec.name].tobytes() == b[spec.name].tobytes()
        assert a[spec.name].dtype == np.dtype(spec.dtype)
        assert all(d is None or d == v for d, v in zip(spec.shape, a[spec.name].shape))
    assert fx.make_inputs(4, seed=1)[fx.inputs[0].name].tobytes() != a[fx.inputs[0].name].tobytes()


def test_oracles_are_exact_types():
    for fx in all_fixtures().values():
        if fx.oracle and not fx.group:  # the zoo's float64 models: tests/test_zoo.py
            for value in fx.oracle(fx.make_inputs(2)).values():
                assert value.dtype in (np.float64, np.int64)


def test_unknown_fixture_names_the_known_ones():
    built_in = ("argmax, conv3x3, gemm256, gemm272, gemm512, gemm64, gru_seq, lstm_seq, matmul, mlp, mnist_cnn, mobilenet_block, pow, "
                "resize_norm, text_embed, tf1_flat, tf1_pruned, transformer_block, unet_small, vocab_lookup")
    # The saved fuzz findings (fixtures/regressions, fuzz-<id>) are fixtures too, listed in the same order.
    # The zoo (fixtures/zoo_*.py, opt-in) is listed too.
    known = ", ".join(sorted([*built_in.split(", "), *(n for n in all_fixtures() if n.startswith(("fuzz-", "zoo_")))]))
    with pytest.raises(HarnessError) as info:
        get_fixture("nope")
    assert str(info.value) == f"unknown fixture 'nope': expected one of {known}"


def test_keras_weights_are_the_same_bytes_every_build():
    fx = get_fixture("mlp")
    w1 = [w.numpy().tobytes() for w in fx.build().weights]
    w2 = [w.numpy().tobytes() for w in fx.build().weights]
    assert w1 == w2 and len(w1) == 4


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_matches_its_float64_oracle_and_carries_signal(name):
    """The Keras model (float32, seeded weights) agrees with the NumPy float64 oracle, and its output
    carries signal: it changes with the input by far more than the float32 tolerance, and a
    classifier's argmax is not one class for every input."""
    from harness.export.common import import_tf

    import_tf()
    fx = get_fixture(name)
    inputs = fx.make_inputs(8)
    model = fx.build()
    got = np.asarray(model(inputs if len(inputs) > 1 else next(iter(inputs.values())), training=False))
    want = fx.oracle(inputs)["output_0"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    spread = want.std(axis=0).mean()
    assert spread > 100 * 1e-5, f"{name}: outputs barely depend on the input (std over the batch {spread:.2e})"
    other = fx.oracle(fx.make_inputs(8, seed=1))["output_0"]
    assert np.abs(other - want).max() > 1e-2
    if fx.classifier_outputs:
        many = fx.oracle(fx.make_inputs(32))["output_0"]
        classes = many.reshape(-1, many.shape[-1]).argmax(axis=-1)
        assert np.bincount(classes, minlength=many.shape[-1]).min() >= 0.1 * len(classes) / many.shape[-1], \
            f"{name}: a class (almost) never wins ({np.bincount(classes, minlength=many.shape[-1])})"


def test_seeded_weights_must_cover_the_model_exactly():
    """A fixture whose seeded values miss a weight, or name one the model lacks, fails to build (it would
    otherwise keep Keras' own random initial value and change between builds)."""
    from harness.export.common import import_tf
    from harness_fixtures import _nn
    from harness_fixtures.recurrent import params

    import_tf()
    import keras

    inputs = keras.Input(shape=(12, 8))
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(keras.layers.LSTM(16, name="lstm_1")(inputs)))
    p = params("lstm")
    with pytest.raises(KeyError, match="seeded values without a weight"):
        _nn.assign(model, p)
    with pytest.raises(KeyError, match="no seeded value for weight lstm_1/lstm_cell/bias"):
        _nn.assign(model, {k: v for k, v in p.items() if k != "lstm_1/lstm_cell/bias"})
