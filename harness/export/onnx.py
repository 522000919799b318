"""ONNX via tf2onnx's Python API (one process, no CLI), at the opset the format names."""

from __future__ import annotations

from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf, tag_set
from harness.fixtures import Fixture


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    tf = import_tf()
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    assert source is not None
    opset = dict(spec.options)["opset"]
    loaded = tf.saved_model.load(str(source.model_path), tags=tag_set(source.extra.get("tag", "serve")))
    fn = loaded.signatures[source.signature]
    # Freeze first: captured tensors (constants held by the module) would otherwise become graph inputs.
    frozen = convert_variables_to_constants_v2(fn)
    _, kwargs = fn.structured_input_signature
    input_signature = [tf.TensorSpec(kwargs[k].shape, kwargs[k].dtype, name=k) for k in sorted(kwargs)]
    model, _ = tf2onnx.convert.from_function(
        tf.function(lambda *args: frozen(*args)),
        input_signature=input_signature,
        opset=opset,
        output_path=None,
    )
    onnx.save(model, str(out / spec.layout))
    art.path = spec.layout
    art.extra["opset"] = opset
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    by_in = {s.name: s for s in source.inputs}
    art.inputs = [IOSpec(name=k, stored_name=n, dtype=by_in[k].dtype, shape=by_in[k].shape) for k, n in zip(sorted(kwargs), graph_inputs)]
    by_out = {s.name: s for s in source.outputs}
    keys = sorted(fn.structured_outputs)
    art.outputs = [IOSpec(name=k, stored_name=n, dtype=by_out[k].dtype, shape=by_out[k].shape) for k, n in zip(keys, graph_outputs)]
