"""SavedModel folders (saved_model.pb or .pbtxt), read with TensorFlow's protos: no graph is built or run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.errors import HarnessError
from harness.inspect.common import checked, corrupt, counted, first_line, problem, tensor


def tf_dtype(tf, enum: int) -> str:
    """The dtype the way read_signature names it (NumPy's name), TensorFlow's name where NumPy has none."""
    try:
        dt = tf.dtypes.as_dtype(enum)
    except Exception:
        return f"dtype {enum}"
    try:
        name = dt.as_numpy_dtype.__name__
    except Exception:
        return dt.name
    return "string" if name in ("object", "bytes_") else name


def tf_shape(shape_proto) -> list | None:
    if shape_proto.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape_proto.dim]


def read_savedmodel(pb: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.common import import_tf
    from harness.export.validate import check_savedmodel

    folder = pb.parent
    checked(check_savedmodel, folder, "savedmodel", "SavedModel", "is not a complete SavedModel", "a SavedModel folder with a whole saved_model.pb")
    info["path"] = str(folder)
    tf = import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        if pb.suffix == ".pbtxt":
            from google.protobuf import text_format

            text_format.Parse(pb.read_text(), sm)
        else:
            sm.ParseFromString(pb.read_bytes())
    except Exception as e:
        raise corrupt("SavedModel", folder, f"has a {pb.name} that does not parse ({first_line(e)})", "a SavedModel protobuf") from None
    if not sm.meta_graphs:
        raise corrupt("SavedModel", folder, f"has no meta graph in {pb.name}", "a SavedModel with at least one tag set")
    info["format"] = "savedmodel"
    tag_sets = [sorted(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    info["tag_sets"] = tag_sets
    metas = [mg for mg in sm.meta_graphs if tag is None or tag in mg.meta_info_def.tags]
    if not metas:  # the words of read_signature, which `harness check` raises
        raise HarnessError(f"SavedModel {folder} has no tag {tag!r}: expected one of {tag_sets}")
    info["tensorflow_version"] = metas[0].meta_info_def.tensorflow_version or None
    ops: Counter = Counter()
    functions = 0
    for mg in metas:
        tags = sorted(mg.meta_info_def.tags)
        for key in sorted(mg.signature_def):
            if key.startswith("__") or (signature is not None and key != signature):
                continue
            sig = mg.signature_def[key]

            def spec(k, t):
                return tensor(k, tf_dtype(tf, t.dtype), tf_shape(t.tensor_shape), stored_name=t.name or None)

            info["signatures"].append({"key": key, "tags": tags, "method": sig.method_name or None,
                                       "inputs": [spec(k, v) for k, v in sorted(sig.inputs.items())],
                                       "outputs": [spec(k, v) for k, v in sorted(sig.outputs.items())]})
        ops.update(n.op for n in mg.graph_def.node)
        for f in mg.graph_def.library.function:
            ops.update(n.op for n in f.node_def)
        functions += len(mg.graph_def.library.function)
    if signature is not None and not info["signatures"]:
        known = sorted({k for mg in metas for k in mg.signature_def if not k.startswith("__")})
        raise HarnessError(f"SavedModel {folder} has no signature {signature!r}: expected one of {known}")
    info["ops"] = counted(ops)
    info["functions"] = functions
    # What `harness check` reads by default (serving_default in the serve tag set) must be there.
    if tag is None and not any("serve" in t for t in tag_sets):
        problem(info, f"no 'serve' tag set (tag sets: {tag_sets}): harness check needs --tag", ["harness check"])
    if signature is None and not any(s["key"] == "serving_default" for s in info["signatures"]):
        keys = sorted({s["key"] for s in info["signatures"]})
        problem(info, f"no 'serving_default' signature (signatures: {', '.join(keys) or 'none'}): harness check needs --signature", ["harness check"])
