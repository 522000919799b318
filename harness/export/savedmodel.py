"""SavedModel: tf.saved_model.save for tf.Module fixtures, Keras 3 `model.export` for Keras ones, a copy
of the folder for the user's SavedModel and for fixtures that write one (kind "graph": TF1 graphs)."""

from __future__ import annotations

from pathlib import Path

from harness.artifact import Artifact
from harness.export.common import import_tf, read_signature
from harness.fixtures import Fixture


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    tf = import_tf()
    target = out / spec.layout
    if fixture.kind == "keras":
        model = fixture.build()
        model.export(str(target), format="tf_saved_model", verbose=False)
        # The layer names as this build gave them (Keras numbers unnamed layers per process): the op names of
        # every format converted from this SavedModel carry them; harness/node_search.py maps nodes back by them.
        art.extra["keras_layers"] = {layer.name: type(layer).__name__ for layer in model._flatten_layers(include_self=False)}
    elif fixture.kind == "module":
        module, fn = fixture.build()
        tf.saved_model.save(module, str(target), signatures={"serving_default": fn})
    elif fixture.kind in ("user", "graph"):
        # A SavedModel folder: the user's own, or one a fixture writes itself (a TF1 graph saved with
        # SavedModelBuilder, a pruned function).
        import shutil

        shutil.copytree(fixture.build(), target)
    else:
        raise ValueError(f"fixture kind {fixture.kind!r}")
    art.path = spec.layout
    art.signature = fixture.signature
    art.extra["tag"] = fixture.tag
    art.inputs, art.outputs = read_signature(target, art.signature, fixture.tag)
