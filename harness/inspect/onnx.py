"""ONNX ModelProtos (onnx, with its checker): tensors, opsets, and what stops a runtime."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from harness.inspect.common import corrupt, counted, first_line, problem, runtimes_taking, tensor


def _onnx_dtype(type_proto) -> str:
    import numpy as np
    import onnx
    from onnx import helper

    which = type_proto.WhichOneof("value")
    if which != "tensor_type":
        return which or "unknown"
    elem = type_proto.tensor_type.elem_type
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        return "string" if dt.kind == "O" else dt.name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() else f"type {elem}"


def _onnx_shape(type_proto) -> list | None:
    if type_proto.WhichOneof("value") != "tensor_type" or not type_proto.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in type_proto.tensor_type.shape.dim]


def _onnx_nodes(nodes) -> Iterator:
    """Every node, those in If/Loop/Scan bodies included."""
    import onnx

    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _onnx_nodes(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _onnx_nodes(g.node)


def onnx_format(opset: int | None) -> str | None:
    """The harness format an ONNX file of this default-domain opset is checked as: onnx18 from opset 18
    on, onnx13 from 7 (ONNX Runtime's oldest) to 17 — both are every ONNX runtime's, and a file is run
    as it is; None below 7 (ONNX Runtime does not take it: `check --upgrade-opset` checks a converted
    copy, filed under the new opset's format) or without an opset."""
    if not opset or opset < 7:
        return None
    return "onnx18" if opset >= 18 else "onnx13"


def read_onnx(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    import onnx
    import onnx.checker

    from harness.export.validate import node_issues, onnx_summary, opset_map

    expected = "an ONNX ModelProto"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise corrupt("ONNX model", path, f"does not parse ({first_line(e)})", expected) from None
    if not model.opset_import and not model.graph.node and not model.graph.input:
        raise corrupt("ONNX model", path, "holds no graph and no opset import", expected)
    opsets = opset_map(model.opset_import)
    info["opsets"] = {(d or "ai.onnx"): v for d, v in sorted(opsets.items())}
    version = opsets.get("")
    info["format"] = onnx_format(version)
    if info["format"] is None:
        info["format"] = f"onnx opset {version}" if version else "onnx (no default-domain opset)"
        info["runs_as_note"] = (f"ONNX opset {version} is older than ONNX Runtime's oldest (7): harness check {path.name} --upgrade-opset 13 "
                                f"checks a copy converted by onnx.version_converter, or upgrade the file with "
                                f"python -c \"import onnx, onnx.version_converter as v; onnx.save(v.convert_version(onnx.load('{path.name}'), 13), "
                                f"'{path.stem}-opset13.onnx')\" and check that one") if version else \
            "the ONNX model imports no default-domain (ai.onnx) opset: expected an opset_import of domain '' (7 or newer)"
    elif version not in (13, 18):
        info["runs_as_note"] = f"opset {version}: run as it is by every ONNX runtime; harness check files its cases under {info['format']}"
    # tf2onnx writes its git hash after the version, "None" when it has none ("1.17.0 None").
    producer_version = " ".join(w for w in (model.producer_version or "").split() if w != "None")
    info["producer"] = " ".join(p for p in (model.producer_name, producer_version) if p) or None
    info["ir_version"] = model.ir_version
    initialisers = {t.name for t in model.graph.initializer}
    info["signatures"].append({
        "key": None,
        "inputs": [tensor(v.name, _onnx_dtype(v.type), _onnx_shape(v.type)) for v in model.graph.input if v.name not in initialisers],
        "outputs": [tensor(v.name, _onnx_dtype(v.type), _onnx_shape(v.type)) for v in model.graph.output],
    })
    ops: Counter = Counter()
    for f in [model.graph, *model.functions]:
        for node in _onnx_nodes(f.node):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            ops[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
    info["ops"] = counted(ops)
    if model.functions:
        info["functions"] = [f"{f.domain}::{f.name}" if f.domain else f.name for f in model.functions]
    try:
        onnx.checker.check_model(str(path), full_check=False)
        info["checker"] = {"ok": True, "message": None}
    except Exception as e:
        message = str(e) if isinstance(e, onnx.checker.ValidationError) else first_line(e)
        info["checker"] = {"ok": False, "message": " ".join(message.split())[:500]}
    # The same node walk the ONNX exporter's validation does: standard domains, schema at the opset.
    local = {(f.domain, f.name) for f in model.functions}
    issues = node_issues(model.graph.node, opsets, local, "main graph")
    for f in model.functions:
        issues += node_issues(f.node, {**opsets, **opset_map(f.opset_import)}, local, f"function {f.domain}::{f.name}")
    onnx_runtimes = runtimes_taking(("onnx13", "onnx18"))
    if issues:
        problem(info, onnx_summary(issues).replace("converter emitted ", "the graph has ", 1), onnx_runtimes)
    elif not info["checker"]["ok"]:
        problem(info, f"onnx.checker rejects it: {info['checker']['message'][:200]}", onnx_runtimes)
    if info["format"] not in ("onnx13", "onnx18"):
        problem(info, f"harness check does not take it as it is: {info['runs_as_note']}", onnx_runtimes)
