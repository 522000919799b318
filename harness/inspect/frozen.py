"""Frozen GraphDefs (.pb), read with TensorFlow's protos: no graph is built or run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from harness.inspect.common import checked, corrupt, counted, first_line, problem, tensor
from harness.inspect.savedmodel import tf_dtype, tf_shape


def read_frozen(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.common import import_tf
    from harness.export.validate import check_frozen

    expected = "a serialised TensorFlow GraphDef"
    checked(check_frozen, path, "frozen_graph", "frozen graph", "is not a complete GraphDef", expected)
    tf = import_tf()
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except Exception as e:
        raise corrupt("frozen graph", path, f"does not parse ({first_line(e)})", expected) from None
    if not graph.node:
        raise corrupt("frozen graph", path, "holds no graph nodes", expected)
    info["format"] = "frozen_graph"
    consumed = {re.sub(r":\d+$", "", i) for n in graph.node for i in n.input if not i.startswith("^")}
    inputs, outputs = [], []
    for n in graph.node:
        if n.op == "Placeholder":
            shape = tf_shape(n.attr["shape"].shape) if "shape" in n.attr else None
            inputs.append(tensor(n.name, tf_dtype(tf, n.attr["dtype"].type), shape, stored_name=f"{n.name}:0"))
        elif n.name not in consumed and n.op not in ("NoOp", "Const", "Assert", "SaveV2", "RestoreV2", "VarHandleOp"):
            # A GraphDef records output shapes only where the writer kept `_output_shapes`.
            dtype = next((tf_dtype(tf, n.attr[a].type) for a in ("T", "dtype") if a in n.attr), None)
            shapes = n.attr["_output_shapes"].list.shape if "_output_shapes" in n.attr else []
            outputs.append(tensor(n.name, dtype, tf_shape(shapes[0]) if shapes else None, stored_name=f"{n.name}:0",
                                   shape_known=None if shapes else False))
    info["signatures"].append({"key": None, "inputs": inputs, "outputs": outputs})
    ops = Counter(n.op for n in graph.node)
    for f in graph.library.function:
        ops.update(n.op for n in f.node_def)
    info["ops"] = counted(ops)
    variables = sorted({op for op in ops if op in ("VarHandleOp", "VariableV2", "Variable")})
    if variables:
        problem(info, f"the graph still holds variables ({', '.join(variables)}): not frozen, so it has no weights to run with", ["tf"])
