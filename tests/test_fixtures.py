"""Fixture registry and determinism."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.fixtures import all_fixtures, get_fixture


def test_registry_has_the_five_reference_models():
    assert set(all_fixtures()) >= {"pow", "matmul", "mlp", "mnist_cnn", "conv3x3", "argmax"}


@pytest.mark.parametrize("name", ["pow", "matmul", "mlp", "mnist_cnn", "conv3x3", "argmax"])
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
        if fx.oracle:
            for value in fx.oracle(fx.make_inputs(2)).values():
                assert value.dtype in (np.float64, np.int64)


def test_unknown_fixture_names_the_known_ones():
    with pytest.raises(HarnessError, match="unknown fixture 'nope': expected one of argmax, conv3x3, gemm256, gemm272, gemm512, gemm64, matmul, mlp, mnist_cnn, pow"):
        get_fixture("nope")


def test_keras_weights_are_the_same_bytes_every_build():
    fx = get_fixture("mlp")
    w1 = [w.numpy().tobytes() for w in fx.build().weights]
    w2 = [w.numpy().tobytes() for w in fx.build().weights]
    assert w1 == w2 and len(w1) == 4
