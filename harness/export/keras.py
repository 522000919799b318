"""Keras native formats: `.keras` (Keras 3) and legacy `.h5`."""

from __future__ import annotations

import warnings
from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf
from harness.fixtures import Fixture, output_keys


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    import_tf()
    model = fixture.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # h5 is "legacy"; that is the point of testing it
        model.save(str(out / spec.layout))  # the suffix (.keras or .h5) picks Keras's file format
    art.path = spec.layout
    # Keras calls take inputs by the model's input names and return outputs in model order; the
    # signature names are those the SavedModel export gives (`output_0`, ...), as the fixture declares.
    art.inputs = [
        IOSpec(name=s.name, stored_name=t.name, dtype=s.dtype, shape=list(s.shape))
        for s, t in zip(fixture.inputs, model.inputs)
    ]
    # A model whose outputs are a dict (`keras.Model(x, {"a": a, "b": b})`) returns them by key, the
    # signature's names too: each is stored under its key, in Keras' flattened order (model.outputs).
    keys = output_keys(model)
    art.outputs = [
        IOSpec(name=keys[i] if keys else name, stored_name=keys[i] if keys else str(i), dtype="float32", shape=[None] + list(t.shape[1:]))
        for i, (name, t) in enumerate(zip(keys or fixture.outputs, model.outputs))
    ]

