"""Where an ONNX or TFLite artifact first diverges in a runtime, node by node (`harness check --bisect`).

harness/layer_search.py cuts a Keras model after a layer and exports each cut again; an ONNX or TFLite
artifact already has its nodes, so here every intermediate tensor of the one artifact is read out in one
run, in the runtime under test and in a reference runtime for that format, and the first node (in the
graph's topological order) whose tensor is out of the case's tolerance is the answer, named by the node
and, where the converter kept TF's op names, by the Keras layer it came from.

- ONNX: every node output is made a graph output (what Polygraphy's "mark all" does): its element type
  from onnx.shape_inference, tensors of unknown type, initializers and Constant nodes left out, a model
  over 2 GB read and written with its external data. The marked model is a derived artifact
  (artifact.json lists each intermediate as an output), so every ONNX runtime's worker runs it as it
  runs any artifact. The reference is ONNX Runtime's CPU provider (`ort`) on the same marked model: the
  same graph, node for node, so a node out of tolerance is the runtime's kernel, not the converter. A
  case of `ort` itself has nothing to be compared with node by node (the TF reference has other tensors
  in another layout: tf2onnx transposes convolutions to NCHW); layer_search's Keras cut answers for it.
  Marking outputs stops a runtime fusing across them, so a divergence that lives only in a fused
  kernel may not show at any node: the answer then says so.
- TFLite: the worker keeps every tensor (load's `intermediates`: the interpreter's
  experimental_preserve_all_tensors) and answers them in execution order. A quantised or float16 model
  is compared with the float TFLite model of the same fixture in the same runtime, operator by operator
  (both converted from one SavedModel: the same operators in the same order once the (de)quantize
  operators are set aside; else by tensor name), quantised values dequantised: the first node whose
  quantisation error exceeds the format's tolerance. A float model in another
  LiteRT variant is compared with plain `litert`; plain `litert` with TFLite's reference kernels
  (`litert@builtin-ref`, what TFLite's own inference_diff compares a delegate with).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness import comparator
from harness.artifact import Artifact, IOSpec, manifest
from harness.cases import Case
from harness.engine import Engine
from harness.errors import HarnessError
from harness.export import format_class
from harness.fixtures import Fixture
from harness.runners import RpcError, WorkerCrash, WorkerTimeout

PROTOBUF_LIMIT = 2**31 - 1  # a model over this is stored with external data and read by path


@dataclass
class Node:
    """One tensor compared: where it is in the run order, what wrote it, its name in the model."""

    order: int
    node: str  # the node's name (ONNX) or the tensor's (TFLite: the converter's, from TF's op names)
    op: str
    tensor: str
    value: np.ndarray | None = None


def node_reference(case: Case) -> tuple[str, str] | None:
    """The (format, runtime) a case's intermediates are compared with; None where none fits."""
    fmt, runtime = case.format.partition("@")[0], case.runtime
    if fmt.startswith("onnx"):
        return None if runtime == "ort" else (case.format, "ort")
    if fmt.startswith("tflite"):
        if fmt in ("tflite_int8", "tflite_dynamic", "tflite_fp16"):
            return ("tflite", runtime)  # the float model, same runtime: only the quantisation differs
        if fmt == "tflite":
            return ("tflite", "litert@builtin-ref") if runtime == "litert" else ("tflite", "litert")
    return None


def first_diverging_node(engine: Engine, fixture: Fixture, case: Case) -> dict:
    """The first node whose tensor is out of the case's tolerance, against node_reference(case); a dict
    shaped as layer_search's (supported, layer_index, layer, previous, status, error, metrics, probes),
    with the node's op, its tensor, the Keras layer it maps to and what it was compared with."""
    against = node_reference(case)
    if against is None:
        return {"supported": False, "why": f"no node-by-node reference for {case.format} on {case.runtime}"}
    ref_case = Case(case.fixture, against[0], against[1], case.device, case.batch, case.threads)
    avail = engine.availability(against[1])
    if not avail.ok:
        return {"supported": False, "why": f"the node reference {against[1]} is unavailable: {avail.reason}"}
    inputs = engine.reference_inputs(fixture, case.batch)
    if inputs is None:
        return {"supported": False, "why": "the reference has no inputs (it failed)"}
    try:
        if case.format.startswith("onnx"):
            art = engine.artifact(fixture, case.format)
            marked, nodes, skipped = mark_all(art, engine.scratch / "nodes" / f"{fixture.name}-{case.format}-{art.key}")
            got = _run_marked(engine, case, marked, inputs)
            want = _run_marked(engine, ref_case, marked, inputs)
            pairs = [(n, got.get(f"node{n.order:05d}"), want.get(f"node{n.order:05d}")) for n in nodes]
            how = f"{against[1]} on the same graph with every node output marked ({len(nodes)} tensors" + (
                f"; {skipped} of unknown type left out)" if skipped else ")")
            declared = {s.name for s in art.outputs}
            tol = _tolerance(engine, fixture, case)
            marked_agree = comparator.judge({k: v for k, v in want.items() if k in declared}, {k: v for k, v in got.items() if k in declared},
                                            {k: tol for k in declared}).passed
            # What the runtime under test computed, by tensor name: the graph inputs and every marked tensor.
            computed = {**{s.stored_name: inputs[s.name] for s in art.inputs},
                        **{n.tensor: got[f"node{n.order:05d}"] for n in nodes if f"node{n.order:05d}" in got}}
        else:
            mine = _run_keeping(engine, case, engine.artifact(fixture, case.format), inputs)
            theirs = _run_keeping(engine, ref_case, engine.artifact(fixture, against[0]), inputs)
            pairs, by = pair_tflite(mine, theirs)
            if not pairs:
                return {"supported": False, "why": f"no tensor of {case.format} pairs with one of {against[0]} (other operators, other names)"}
            how = f"{against[0]} on {against[1]}, {by} ({len(pairs)} of {len(mine)} tensors paired)"
            marked_agree, computed = None, None
    except _Failed as e:
        return {"supported": False, "why": str(e)}
    # The Keras layer names as the SavedModel's export gave them (recorded there): the ONNX and TFLite
    # artifacts are converted from it, so their op names carry these, whatever a build here would number.
    names = engine.artifact(fixture, fixture.reference[0]).extra.get("keras_layers") if fixture.kind == "keras" else None
    found = _judge(pairs, _tolerance(engine, fixture, case), how, _class(engine, case), marked_agree, names)
    if found.get("found") and computed is not None:
        try:
            found["isolated"] = isolate(engine, ref_case, art, found["tensor"], computed, _tolerance(engine, fixture, case))
        except Exception as e:  # evidence beside the answer: its failure must not cost the answer
            found["isolated"] = {"done": False, "why": f"{type(e).__name__}: {e}"}
    if found.get("found") and fixture.kind == "keras" and names is None:
        found["keras_layer_why"] = ("no Keras layer names: the SavedModel was exported before they were recorded "
                                    f"(harness export -f {fixture.name} -F {fixture.reference[0]} --force records them)")
    return found


class _Failed(Exception):
    """A run of the search failed: its words are the `why` of an unsupported answer."""


def _precision(engine: Engine, case: Case) -> str | None:
    info = engine.pool.info.get(case.runtime) or {}  # the precision the worker computes in, as the engine reads it
    return info.get("precision") or (info.get("settings") or {}).get("precision")


def _tolerance(engine: Engine, fixture: Fixture, case: Case):
    """The case's own tolerance (the format class of its first output), for every intermediate."""
    return fixture.tolerance(_class(engine, case), fixture.outputs[0])


def _class(engine: Engine, case: Case) -> str:
    return format_class(case.format, _precision(engine, case))


def _judge(pairs: list, tol, how: str, cls: str, marked_agree: bool | None, layer_names: dict[str, str] | None) -> dict:
    """The first pair, in run order, out of `tol` (the comparator's judgement, as for a case's outputs)."""
    compared, previous, first = 0, "(model inputs)", None
    for node, got, want in pairs:
        if got is None or want is None or np.shape(got) != np.shape(want):
            continue
        compared += 1
        j = comparator.judge({node.tensor: want}, {node.tensor: got}, {node.tensor: tol})
        if not j.passed:
            first = (node, j)
            break
        previous = f"{node.node} ({node.op})"
    layers = set(layer_names or ())
    if first is None:
        why = f"every one of {compared} intermediate tensors is within the {cls} tolerance"
        if marked_agree:
            why += (", and so are the marked model's outputs: the divergence is in what the runtime fuses across nodes "
                    "(marking every tensor an output stops the fusion)")
        elif marked_agree is None:
            why += ": the divergence is in no tensor the two models have in common"
        return {"supported": True, "found": False, "unit": "node", "against": how, "compared": compared, "why": why}
    node, j = first
    layer = keras_layer(node.node, layers) or keras_layer(node.tensor, layers)
    if layer is not None and layer_names:
        layer = ", ".join(f"{one} ({layer_names[one]})" for one in layer.split(", "))
    return {
        "supported": True, "found": True, "unit": "node", "layer_index": node.order, "layer": f"{node.node} ({node.op})",
        "node": node.node, "op": node.op, "tensor": node.tensor, "keras_layer": layer, "previous": previous,
        "status": "fail", "error": "; ".join(r.removeprefix(f"{node.tensor}: ") for r in j.reasons), "metrics": {k: m.to_dict() for k, m in j.metrics.items()},
        "probes": {"compared": compared, "of": len(pairs)}, "against": how, "tolerance": cls,
    }


# --- ONNX ---------------------------------------------------------------------------------------------

def mark_all(art: Artifact, folder: Path) -> tuple[Artifact, list[Node], int]:
    """The artifact's ONNX model with every node output a graph output, as a derived artifact in
    `folder` (made once per artifact key); the nodes in graph order and how many outputs were left out
    for want of a type."""
    import onnx

    src = art.model_path
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    big = src.stat().st_size > PROTOBUF_LIMIT or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    if big:  # shape inference of a model over 2 GB works by path only
        inferred_path = folder.parent / f"{folder.name}.inferred.onnx"
        folder.parent.mkdir(parents=True, exist_ok=True)
        onnx.shape_inference.infer_shapes_path(str(src), str(inferred_path))
        inferred = onnx.load(str(inferred_path), load_external_data=False)
        inferred_path.unlink()
    else:
        inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    declared = {o.name for o in graph.output}
    nodes: list[Node] = []
    skipped = 0
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue  # no computation to judge
        for out in node.output:
            if not out or out in constants:
                continue
            t = types.get(out)
            if t is None or not t.HasField("tensor_type") or t.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
                skipped += 1  # a runtime cannot be asked for an output of unknown type
                continue
            if out not in declared:
                # The element type only: an inferred shape a runtime disagrees with would fail the load.
                graph.output.append(onnx.helper.make_tensor_value_info(out, t.tensor_type.elem_type, None))
            nodes.append(Node(len(nodes), node.name or f"{node.op_type}_{index}", node.op_type, out))
    if (folder / "artifact.json").exists():
        return Artifact.load(folder), nodes, skipped
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in art.dir.iterdir() if art.dir else []:  # external data files beside the model: linked, not copied
        if f.is_file() and f.name not in ("artifact.json", src.name):
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    onnx.save(model, str(tmp / src.name))
    specs = [IOSpec(f"node{n.order:05d}", n.tensor, onnx.helper.tensor_dtype_to_np_dtype(types[n.tensor].tensor_type.elem_type).name, [])
             for n in nodes]
    derived = replace(art, key=f"{art.key}-nodes", path=src.name, outputs=[*art.outputs, *specs], files=manifest(tmp), dir=None,
                      extra={"derived": f"every node output of {art.key} marked (harness/node_search.py)"})
    (tmp / "artifact.json").write_text(derived.to_json())
    try:
        tmp.rename(folder)
    except OSError:  # made meanwhile by another search
        shutil.rmtree(tmp, ignore_errors=True)
    return Artifact.load(folder), nodes, skipped


def isolate(engine: Engine, ref_case: Case, art: Artifact, tensor: str, computed: dict[str, np.ndarray], tol) -> dict:
    """The diverging node alone (onnx.utils.Extractor: the node, its initializers and constants), fed the
    tested runtime's own values of its inputs, in the reference runtime. Agreeing with the tested runtime's
    output, the node is sound and the error came in with its inputs (small until here); disagreeing, the
    node's kernel itself computes otherwise."""
    import onnx

    if art.model_path.stat().st_size > PROTOBUF_LIMIT:
        return {"done": False, "why": "a model over 2 GB is not cut here"}
    model = onnx.load(str(art.model_path))
    node = next((n for n in model.graph.node if tensor in n.output), None)
    if node is None:
        return {"done": False, "why": f"no node writes {tensor}"}
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    feeds = [i for i in dict.fromkeys(node.input) if i and i not in constants]
    missing = [i for i in feeds if i not in computed]
    if missing or tensor not in computed:
        return {"done": False, "why": f"the tested runtime's value of {missing or [tensor]} is not known (a tensor of unknown type)"}
    cut = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(feeds, [tensor])
    folder = engine.scratch / "nodes" / re.sub(r"[^\w.-]", "_", f"iso-{art.key}-{tensor}")[:200]
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(cut, str(folder / "model.onnx"))
    specs = [IOSpec(f"in{i}", name, computed[name].dtype.name, list(computed[name].shape)) for i, name in enumerate(feeds)]
    alone = replace(art, key=f"{art.key}-iso-{hashlib.sha1(tensor.encode()).hexdigest()[:12]}", path="model.onnx", inputs=specs,
                    outputs=[IOSpec("out", tensor, computed[tensor].dtype.name, [])], files=manifest(folder), dir=None, extra={})
    (folder / "artifact.json").write_text(alone.to_json())
    alone = Artifact.load(folder)
    reply = _run(engine, ref_case, alone, {s.name: computed[s.stored_name] for s in specs}, keep=False)
    theirs = np.load(reply["outputs"]["out"], allow_pickle=False)
    j = comparator.judge({tensor: theirs}, {tensor: computed[tensor]}, {tensor: tol})
    worst = j.metrics[tensor].max_abs
    if j.passed:
        sentence = (f"{ref_case.runtime} computes this node from the tested runtime's own inputs to it within tolerance: the node is "
                    "sound, the error came in with its inputs (within tolerance until here)")
    else:
        sentence = (f"{ref_case.runtime} computes this node from the tested runtime's own inputs to it otherwise (max abs {worst:.3g}): "
                    "the node's kernel itself differs")
    return {"done": True, "agrees": j.passed, "max_abs": worst, "sentence": sentence}


def _call(engine: Engine, case: Case, method: str, params: dict, timeout: float) -> dict:
    worker = engine.pool.get(case.runtime)
    try:
        return worker.call(method, params, timeout=timeout)
    except (WorkerCrash, WorkerTimeout) as e:
        engine.pool.discard(case.runtime)
        raise _Failed(f"{case.runtime} {method} of the search failed: {e}") from e
    except RpcError as e:
        raise _Failed(f"{case.runtime} {method} of the search failed: {e.kind}: {e}") from e


def _feeds(engine: Engine, case: Case, art: Artifact, inputs: dict[str, np.ndarray]) -> dict[str, str]:
    folder = engine.scratch / "nodes" / "inputs" / f"{case.fixture}-{art.key}-b{case.batch}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, spec in enumerate(art.inputs):
        value = inputs[spec.name]
        if spec.scale is not None:
            value = comparator.quantize(value, spec.scale, spec.zero_point or 0, spec.dtype)
        path = folder / f"{i}.npy"
        np.save(path, value, allow_pickle=False)
        paths[spec.name] = str(path)
    return paths


def _run(engine: Engine, case: Case, art: Artifact, inputs: dict[str, np.ndarray], keep: bool) -> dict:
    params = {"artifact": str(art.dir), "format": art.format, "signature": art.signature, "device": case.device, "threads": case.threads}
    if keep:
        params["intermediates"] = True
    handle = _call(engine, case, "load", params, engine.options.load_timeout_s)["handle"]
    try:
        out = engine.scratch / "nodes" / "out" / re.sub(r"[^\w.@-]", "_", f"{case.id}-{art.key}")
        return _call(engine, case, "run", {"handle": handle, "inputs": _feeds(engine, case, art, inputs), "output_dir": str(out),
                                           "warmup": 0, "iterations": 0}, engine.options.run_timeout_s)
    finally:
        try:
            _call(engine, case, "unload", {"handle": handle}, engine.options.run_timeout_s)
        except _Failed:
            pass


def _run_marked(engine: Engine, case: Case, marked: Artifact, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    reply = _run(engine, case, marked, inputs, keep=False)
    return {name: np.load(path, allow_pickle=False) for name, path in reply["outputs"].items()}


# --- TFLite -------------------------------------------------------------------------------------------

def _run_keeping(engine: Engine, case: Case, art: Artifact, inputs: dict[str, np.ndarray]) -> list[Node]:
    if art.status != "ok":
        raise _Failed(f"{art.format} did not export: {art.error}")
    reply = _run(engine, case, art, inputs, keep=True)
    nodes = []
    for i, t in enumerate(reply.get("intermediates") or []):
        value = np.load(t["path"], allow_pickle=False)
        if t.get("scale"):
            value = comparator.dequantize(value, t["scale"], t.get("zero_point") or 0)
        nodes.append(Node(i, t["name"], t["op"], t["name"], value))
    if not nodes:
        raise HarnessError(f"{case.runtime} answered no intermediate tensors")
    return nodes


CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")  # a quantised model's own operators: weights and activations changing type


def pair_tflite(mine: list[Node], theirs: list[Node]) -> tuple[list[tuple[Node, np.ndarray | None, np.ndarray | None]], str]:
    """Each tensor of a model with the other model's tensor for the same computation. Models converted
    from one SavedModel run the same operators in the same order once the quantised model's own
    (de)quantize operators are set aside: then operator by operator. Else by tensor name, where both
    have one (the converter numbers a name again when a quantised model adds operators: `MatMul1`
    becomes the dequantised weights and `MatMul2` the product)."""
    a = [n for n in mine if n.op not in CONVERSIONS]
    b = [n for n in theirs if n.op not in CONVERSIONS]
    if [n.op for n in a] == [n.op for n in b]:
        return [(x, x.value, y.value) for x, y in zip(a, b)], "operator by operator in execution order, (de)quantize operators aside"
    by_name = {n.tensor: n for n in theirs}
    return [(x, x.value, by_name[x.tensor].value) for x in mine if x.tensor in by_name], "tensor by tensor where the names are the same"


# --- names back to Keras layers --------------------------------------------------------------------------

_SUFFIX = re.compile(r"^(.*)_\d+$")


def keras_layer(name: str, layers: set[str]) -> str | None:
    """The Keras layer a converter's node or tensor name comes from: TF names ops by the name scopes of
    the trace (`MobileNetV3Small_1/expanded_conv_depthwise_bn_1/batchnorm/mul_1`), each scope a layer's
    name made unique with a `_N` suffix; the last scope that names a layer (the suffix taken off first:
    `re_lu_1_2` is layer `re_lu_1`), else None. TFLite joins the names of the ops it fused with `;`:
    each layer among them, once, comma-separated."""
    found: list[str] = []
    for part in name.split(";"):
        for scope in reversed(part.split("/")[:-1]):
            m = _SUFFIX.match(scope)
            layer = m.group(1) if m and m.group(1) in layers else scope if scope in layers else None
            if layer is not None:
                if layer not in found:
                    found.append(layer)
                break
    return ", ".join(found) or None
