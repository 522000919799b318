"""TF.js graph model via the tensorflowjs converter's Python API (no CLI, one TensorFlow import).

The converter module imports two things it never uses for SavedModel input: TensorFlow Decision
Forests (no build exists for TF 2.21) and its own JAX converter (needs jax). Placeholders for exactly
those two modules are registered before the import; the output matches the stock converter's.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf
from harness.fixtures import Fixture


def _unavailable(*_args, **_kwargs):
    raise RuntimeError("JAX conversion is not available in harness (jax is not installed)")


def _import_converter():
    if "tensorflow_decision_forests" not in sys.modules:
        sys.modules["tensorflow_decision_forests"] = types.ModuleType("tensorflow_decision_forests")
    name = "tensorflowjs.converters.jax_conversion"
    if name not in sys.modules:
        placeholder = types.ModuleType(name)
        placeholder.convert_jax = _unavailable  # type: ignore[attr-defined]
        sys.modules[name] = placeholder
    from tensorflowjs.converters import tf_saved_model_conversion_v2

    return tf_saved_model_conversion_v2


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    import_tf()
    if spec.name == "tfjs_layers":
        return _export_layers(fixture, out, spec.layout, art)
    assert source is not None
    conv = _import_converter()
    target = (out / spec.layout).parent
    conv.convert_tf_saved_model(
        str(source.model_path), str(target), signature_def=source.signature, saved_model_tags=source.extra.get("tag", "serve")
    )
    art.path = spec.layout
    meta = json.loads((out / spec.layout).read_text())
    signature = meta.get("signature") or meta.get("userDefinedMetadata", {}).get("signature", {})
    art.extra["tfjs_signature"] = signature
    # TF.js keeps graph tensor names (`x:0`, `Identity:0`). With one output the signature keeps its key;
    # with several it drops the dict keys, and the outputs follow the signature's sorted keys.
    ins, outs = signature.get("inputs", {}), signature.get("outputs", {})
    by_base = {entry["name"].split(":")[0]: entry["name"] for entry in ins.values()}
    art.inputs = [
        IOSpec(name=s.name, stored_name=ins[s.name]["name"] if s.name in ins else by_base.get(s.name, s.name + ":0"),
               dtype=s.dtype, shape=s.shape)
        for s in source.inputs
    ]
    if len(outs) != len(source.outputs):
        raise RuntimeError(f"TF.js model.json lists outputs {list(outs)}, expected {len(source.outputs)} outputs")
    if all(s.name in outs for s in source.outputs):
        pairs = [(s, outs[s.name]["name"]) for s in source.outputs]
    else:
        names = sorted((entry["name"] for entry in outs.values()), key=_identity_order)
        pairs = list(zip(sorted(source.outputs, key=lambda s: s.name), names))
    art.outputs = [IOSpec(name=s.name, stored_name=n, dtype=s.dtype, shape=s.shape) for s, n in pairs]


def _identity_order(name: str) -> tuple[int, str]:
    """`Identity:0` < `Identity_1:0` < `Identity_2:0` < ... (`Identity_10` after `Identity_9`)."""
    base = name.split(":")[0]
    if base == "Identity":
        return (0, name)
    if base.startswith("Identity_") and base[9:].isdigit():
        return (int(base[9:]), name)
    return (1 << 30, name)


def _export_layers(fixture: Fixture, out: Path, layout: str, art: Artifact) -> None:
    """A Keras model as a TF.js layers model at `layout` in `out`, converted from its `.h5` save (the
    converter's Keras path). The model's inputs go to `predict` in order; outputs come back in order."""
    import warnings

    _import_converter()
    from tensorflowjs.converters import converter

    model = fixture.build()
    h5 = out / "model.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(str(h5))
    converter.dispatch_keras_h5_to_tfjs_layers_model_conversion(str(h5), output_dir=str((out / layout).parent))
    h5.unlink()
    art.path = layout
    art.inputs = [IOSpec(name=s.name, stored_name=str(i), dtype=s.dtype, shape=list(s.shape)) for i, s in enumerate(fixture.inputs)]
    art.outputs = [
        IOSpec(name=name, stored_name=str(i), dtype="float32", shape=[None, *[None if d is None else int(d) for d in t.shape[1:]]])
        for i, (name, t) in enumerate(zip(fixture.outputs, model.outputs))
    ]
