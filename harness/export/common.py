"""Helpers shared by the exporters: quiet TensorFlow import and reading a SavedModel's signature."""

from __future__ import annotations

import os
from pathlib import Path

from harness.artifact import IOSpec
from harness.errors import HarnessError


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def tag_set(tag: str) -> list[str]:
    """A meta graph's tag set as the harness writes it: comma-separated (`serve`, `serve,extra`)."""
    return [t.strip() for t in tag.split(",") if t.strip()]


def read_signature(saved_model_dir: Path, signature: str = "serving_default", tag: str = "serve") -> tuple[list[IOSpec], list[IOSpec]]:
    """Inputs and outputs of one signature, read from saved_model.pb without loading the model.
    `name` is the signature key, `stored_name` the graph tensor (`serving_default_x:0`,
    `PartitionedCall:0`) that graph-level bindings such as tfgo feed and fetch."""
    tf = import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(saved_model_dir) / "saved_model.pb"
    if not pb.exists():
        raise HarnessError(f"not a SavedModel: {pb} does not exist")
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception as e:
        raise HarnessError(f"corrupt SavedModel: {pb} does not parse ({e})") from None
    tags_seen = [list(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    # The meta graph whose tag set is exactly the one asked for, as TensorFlow's loaders pick it.
    meta = next((mg for mg in sm.meta_graphs if set(mg.meta_info_def.tags) == set(tag_set(tag))), None)
    if meta is None:
        raise HarnessError(f"SavedModel {saved_model_dir} has no tag {tag!r}: expected one of {tags_seen}")
    if signature not in meta.signature_def:
        raise HarnessError(
            f"SavedModel {saved_model_dir} has no signature {signature!r}: expected one of {sorted(k for k in meta.signature_def if not k.startswith('__'))}"
        )
    sig = meta.signature_def[signature]

    def spec(key, info) -> IOSpec:
        dims = None if info.tensor_shape.unknown_rank else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
        return IOSpec(
            name=key,
            stored_name=info.name,
            # tf.string is "bytes" (NumPy's object dtype would need pickle to travel as .npy).
            dtype="bytes" if info.dtype == tf.string.as_datatype_enum else tf.dtypes.as_dtype(info.dtype).as_numpy_dtype.__name__,
            shape=dims,  # type: ignore[arg-type]
        )

    return [spec(k, v) for k, v in sorted(sig.inputs.items())], [spec(k, v) for k, v in sorted(sig.outputs.items())]
