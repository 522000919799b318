"""Frozen graph: the SavedModel signature with variables folded into constants, as one GraphDef `.pb`."""

from __future__ import annotations

from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf, tag_set
from harness.fixtures import Fixture


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    tf = import_tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    assert source is not None
    loaded = tf.saved_model.load(str(source.model_path), tags=tag_set(source.extra.get("tag", "serve")))
    fn = loaded.signatures[source.signature]
    frozen = convert_variables_to_constants_v2(fn)
    (out / spec.layout).write_bytes(frozen.graph.as_graph_def().SerializeToString())
    art.path = spec.layout

    # Inputs: the signature's keyword arguments, in the order of the frozen function's placeholders.
    _, kwargs = fn.structured_input_signature
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    by_sig = {s.name: s for s in source.inputs}
    art.inputs = []
    for key, tensor in zip(sorted(kwargs), placeholders):
        s = by_sig[key]
        art.inputs.append(IOSpec(name=key, stored_name=tensor.name, dtype=s.dtype, shape=s.shape))
    # Outputs: frozen.outputs follows tf.nest.flatten of the signature's dict, i.e. sorted keys.
    keys = sorted(fn.structured_outputs)
    by_out = {s.name: s for s in source.outputs}
    art.outputs = [
        IOSpec(name=k, stored_name=t.name, dtype=by_out[k].dtype, shape=by_out[k].shape)
        for k, t in zip(keys, frozen.outputs)
    ]
