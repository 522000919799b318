"""Where a Keras model first diverges in a runtime (`harness check`).

For a failing case, the model is cut after a layer (a Keras sub-model from the inputs to that layer's
output), the cut model is exported to the same format and run in the same runtime at the same batch,
and judged against its own TF reference with the same tolerance class. Divergence is assumed to persist
once it appears (an error does not heal downstream), so a binary search over the layers finds the first
diverging one in log2(layers) probes. Quantised formats are calibrated per cut model, so for them the
answer is an approximation of where quantisation error first exceeds the tolerance.

An ONNX or TFLite case is searched node by node first (harness/node_search.py: every intermediate of the
one artifact, against a reference runtime for that format); this bisection answers where that has no
answer (a case of `ort` itself, a node search that finds every node within tolerance) for a Keras model.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from harness.cases import Case
from harness.engine import Engine
from harness.fixtures import Fixture
from harness.node_search import first_diverging_node
from harness.records import CaseResult


def _layers(model) -> list:
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _cut(fixture: Fixture, index: int, name: str) -> Fixture:
    def build():
        import keras

        model = fixture.build()
        return keras.Model(model.inputs, _layers(model)[index].output)

    digest = hashlib.sha256(f"{fixture.digest()}:{index}".encode()).hexdigest()
    return replace(fixture, name=f"{fixture.name}~{index:02d}-{name}", build=build, outputs=("output_0",), oracle=None,
                   classifier_outputs=(), source=None, source_digest=digest, flops=None, output_tolerances={})


def first_divergence(engine: Engine, fixture: Fixture, case: Case) -> dict:
    """Where the case first diverges: for ONNX and TFLite the first node out of tolerance (node_search),
    else, or where that finds none, the first Keras layer (a bisection of cut models)."""
    if case.format.partition("@")[0].startswith(("onnx", "tflite")):
        nodes = first_diverging_node(engine, fixture, case)
        if nodes.get("found") or fixture.kind != "keras":
            return nodes
        layers = first_diverging_layer(engine, fixture, case)
        layers["node_search"] = nodes["why"]
        return layers
    return first_diverging_layer(engine, fixture, case)


def first_diverging_layer(engine: Engine, fixture: Fixture, case: Case) -> dict:
    """The first layer whose output fails the case's judgement, with its metrics and the layer before it."""
    if fixture.kind != "keras":
        return {"supported": False, "why": "layer bisection needs a Keras model (a SavedModel has no layer structure)"}
    from harness.export.common import import_tf

    import_tf()
    layers = _layers(fixture.build())
    names = [f"{layer.name} ({type(layer).__name__})" for layer in layers]

    probes: dict[int, CaseResult] = {}

    def probe(i: int) -> CaseResult:
        if i not in probes:
            cut = _cut(fixture, i, layers[i].name)
            engine.fixtures[cut.name] = cut
            probes[i] = engine.run_case(Case(cut.name, case.format, case.runtime, case.device, case.batch, case.threads))
        return probes[i]

    lo, hi = 0, len(layers) - 1  # the full model fails: the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if probe(mid).status == "pass":
            lo = mid + 1
        else:
            hi = mid
    found = probe(lo)
    return {
        "supported": True,
        "found": True,
        "unit": "layer",
        "layer_index": lo,
        "layer": names[lo],
        "previous": names[lo - 1] if lo > 0 else "(model inputs)",
        "status": found.status,
        "error": found.error,
        "metrics": {name: m.to_dict() for name, m in found.metrics.items()},
        "probes": {names[i]: r.status for i, r in sorted(probes.items())},
    }
