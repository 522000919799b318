"""String tensors of any rank through the runtimes that run a SavedModel: a signature that takes a
[batch, 2, 3] string tensor (weights as text, "12.5 kg") and a [batch] one (a label), run by tf,
go-tfgo and node-tfjs-node against a float64 oracle. Strings travel as NumPy fixed-width bytes (`|S<n>`).
(go/runtimes/tfgo/tfgo_test.go runs rank-0 strings and string outputs too.)"""

import numpy as np

from harness.cases import Selection, matrix
from harness.engine import Engine, Options
from harness.export import Exporter
from harness.fixtures import Fixture, TensorSpec


def build():
    import tensorflow as tf

    class Parse(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2, 3], tf.string, name="numbers"), tf.TensorSpec([None], tf.string, name="label")])
        def serve(self, numbers, label):
            values = tf.strings.to_number(tf.strings.regex_replace(numbers, r"\s*kg$", ""), tf.float32)
            return {"values": values * 2.0 + 1.0, "lengths": tf.strings.length(numbers) + tf.strings.length(label)[:, None, None]}

    m = Parse()
    return m, m.serve


def generate(rng: np.random.Generator, batch: int):
    values = rng.uniform(-100, 100, (batch, 2, 3)).round(3)
    return {"numbers": np.array([[[f"{v:g} kg".encode() for v in row] for row in grid] for grid in values], dtype=bytes),
            "label": np.array([b"x" * int(n) for n in rng.integers(0, 5, batch)], dtype=bytes)}


def oracle(inputs):
    text = np.char.decode(inputs["numbers"], "ascii")
    values = np.vectorize(lambda t: float(t.removesuffix("kg").strip()))(text)
    lengths = np.char.str_len(inputs["numbers"]) + np.char.str_len(inputs["label"])[:, None, None]
    return {"values": values * 2.0 + 1.0, "lengths": lengths.astype(np.int32)}


FIXTURE = Fixture(name="string_grid", description="[N, 3] and scalar string inputs parsed to numbers", kind="module",
                  inputs=(TensorSpec("numbers", "bytes", (None, 2, 3)), TensorSpec("label", "bytes", (None,))),
                  outputs=("values", "lengths"), build=build, generate=generate, oracle=oracle, source_digest="string_grid-2")


def test_n_dimensional_and_scalar_string_inputs_reach_every_savedmodel_runtime(tmp_path):
    fixtures = {"string_grid": FIXTURE}
    inputs = FIXTURE.make_inputs(4)
    assert inputs["numbers"].dtype.kind == "S" and inputs["numbers"].shape == (4, 2, 3)
    engine = Engine(Exporter(tmp_path / "cache"), tmp_path / "scratch", Options(iterations=1, warmup=0), fixtures, deviations=[])
    try:
        results = {r.runtime: r for r in (engine.run_case(c) for c in matrix(
            Selection(formats=["savedmodel"], runtimes=["tf", "go-tfgo", "node-tfjs-node"], batches=[4]), fixtures))}
    finally:
        engine.close()
    assert (results["tf"].status, results["tf"].baseline) == ("pass", "oracle"), results["tf"].error
    ran = {name: r for name, r in results.items() if r.status != "skip"}
    assert all(r.status == "pass" for r in ran.values()), {n: (r.status, r.error) for n, r in ran.items()}
