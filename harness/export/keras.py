"""Keras native formats: `.keras` (Keras 3) and legacy `.h5`."""

from __future__ import annotations

import warnings
from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export.common import import_tf
from harness.fixtures import Fixture


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
    art.outputs = [
        IOSpec(name=name, stored_name=str(i), dtype="float32", shape=[None] + list(t.shape[1:]))
        for i, (name, t) in enumerate(zip(fixture.outputs, model.outputs))
    ]
