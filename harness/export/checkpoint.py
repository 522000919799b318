"""Checkpoints (format `checkpoint`, opt-in): the fixture's variables, to be restored into its code.

- Keras and tf.Module fixtures: a TF2 object-based `tf.train.Checkpoint(model=...)`, written with
  `write` (no save counter), files `ckpt.index` and `ckpt.data-*`.
- TF1 graph fixtures whose module defines `tf1_graph()` (tf1_flat): a `tf.compat.v1.train.Saver`
  checkpoint of the graph's variables, files `ckpt.index`, `ckpt.data-*` and `ckpt.meta`.

Beside them `checkpoint.json` names the code they belong to: the module under `harness_fixtures`, the
fixture, its kind, the checkpoint style and the variables written (name and shape). The tf worker
imports that module, builds the model from code, gives every variable fresh values, restores the
checkpoint into it and runs it; the case is judged against the SavedModel like any other.

A fixture without code to restore into (a user's model, a graph written without `tf1_graph`) or
without variables is `unsupported`, with the reason.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.export import FormatLimit
from harness.export.common import import_tf
from harness.fixtures import Fixture

MANIFEST = "checkpoint.json"
PREFIX = "ckpt"


def code_module(fixture: Fixture):
    """The fixture's module under harness_fixtures (what a checkpoint is restored into), or FormatLimit."""
    if fixture.kind == "user" or fixture.source is None:
        raise FormatLimit(f"{fixture.name} has no code to restore a checkpoint into: a checkpoint holds variables only, "
                          "and is restored into the model's code (a fixture module under harness_fixtures)")
    name = f"harness_fixtures.{fixture.source.stem}"
    try:
        module = importlib.import_module(name)
    except ImportError:
        module = None
    if module is None or Path(module.__file__ or "").resolve() != fixture.source.resolve():
        raise FormatLimit(f"{fixture.name} has no code to restore a checkpoint into: {fixture.source} is not the module {name}")
    return module


def _needs_variables(fixture: Fixture, variables: list) -> None:
    if not variables:
        raise FormatLimit(f"{fixture.name} has no variables (what it computes with is constant in its graph): a checkpoint holds variables "
                          "only, so there is nothing to restore")


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    tf = import_tf()
    assert source is not None
    module = code_module(fixture)
    folder = out / spec.layout
    folder.mkdir()
    prefix = str(folder / PREFIX)
    if fixture.kind in ("keras", "module"):
        declared = [fx for fx in [getattr(module, "FIXTURE", None), *getattr(module, "FIXTURES", [])] if getattr(fx, "name", None) == fixture.name]
        if not declared:
            raise FormatLimit(f"{fixture.name} has no code to restore a checkpoint into: {module.__name__} defines no fixture of that name")
        if fixture.kind == "keras":
            model = fixture.build()
            variables = [(w.path, list(w.shape)) for w in model.weights]
        else:
            model, _ = fixture.build()
            variables = [(v.name.rsplit(":", 1)[0], v.shape.as_list()) for v in model.variables]
        _needs_variables(fixture, variables)
        tf.train.Checkpoint(model=model).write(prefix)
        style = "tf2"
    elif fixture.kind == "graph" and callable(getattr(module, "tf1_graph", None)):
        v1 = tf.compat.v1
        graph = tf.Graph()
        with graph.as_default():
            signatures = module.tf1_graph()
            if fixture.signature not in signatures:
                raise FormatLimit(f"{module.__name__}.tf1_graph builds no signature {fixture.signature!r} (it builds {sorted(signatures)})")
            globals_ = v1.global_variables()
            variables = [(v.op.name, v.shape.as_list()) for v in globals_]
            _needs_variables(fixture, variables)
            saver = v1.train.Saver(var_list=globals_)
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                saver.save(sess, prefix, write_meta_graph=True, write_state=False)
        style = "tf1"
    else:
        raise FormatLimit(f"{fixture.name} has no code to restore a checkpoint into: it is a SavedModel written by "
                          f"{fixture.source.name if fixture.source else 'its builder'}, whose module defines no tf1_graph() "
                          "to rebuild the graph from")
    (folder / MANIFEST).write_text(json.dumps({
        "style": style,
        "module": module.__name__,
        "fixture": fixture.name,
        "kind": fixture.kind,
        "signature": fixture.signature,
        "prefix": PREFIX,
        "variables": {name: shape for name, shape in variables},
    }, indent=2))
    art.path = spec.layout
    art.signature = source.signature
    # The worker feeds and returns tensors by signature key, as the SavedModel's signature names them.
    art.inputs = [IOSpec(name=s.name, stored_name=s.name, dtype=s.dtype, shape=s.shape) for s in source.inputs]
    art.outputs = [IOSpec(name=s.name, stored_name=s.name, dtype=s.dtype, shape=s.shape) for s in source.outputs]
    art.extra["checkpoint_style"] = style
