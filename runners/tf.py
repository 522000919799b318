"""Runtime `tf`: Python TensorFlow on SavedModel signatures, Keras `.keras`/`.h5` and frozen graphs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness_runners.contain import check_artifact, check_savedmodel_assets
from harness_runners.protocol import ProtocolError, Runtime, Session, _one_line, main


class _Signature(Session):
    def __init__(self, tf, fn, keep=None):
        self.tf, self.fn = tf, fn
        self.keep = keep  # the object the signature belongs to: it must stay alive

    def run(self, feeds):
        result = self.fn(**{k: self.tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in result.items()}


class _Keras(Session):
    def __init__(self, tf, model, input_names: list[str]):
        self.tf, self.model, self.input_names = tf, model, input_names

    def run(self, feeds):
        args = [self.tf.constant(feeds[n]) for n in self.input_names]
        out = self.model(args[0] if len(args) == 1 else args, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return {str(i): np.asarray(o) for i, o in enumerate(outs)}


class _Frozen(Session):
    def __init__(self, tf, fn, input_names: list[str], output_names: list[str]):
        self.tf, self.fn, self.input_names, self.output_names = tf, fn, input_names, output_names

    def run(self, feeds):
        result = self.fn(*[self.tf.constant(feeds[n]) for n in self.input_names])
        return {n: r.numpy() for n, r in zip(self.output_names, result)}


class TF(Runtime):
    name = "tf"
    formats = ("savedmodel", "keras", "h5", "frozen_graph")

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf

    def address(self, fmt):
        # Python TF calls a SavedModel signature by its keys; the graph names are for C-level bindings.
        return "name" if fmt == "savedmodel" else "stored_name"

    def versions(self):
        import keras

        return {"tensorflow": self.tf.__version__, "keras": keras.__version__, "numpy": np.__version__}

    def load(self, artifact, model_path: Path, fmt, device, threads):
        tf = self.tf
        root = check_artifact(artifact, model_path)
        if fmt == "savedmodel":
            check_savedmodel_assets(root, model_path)
        if threads:
            try:  # only settable before TF runs anything; a reused worker keeps its first setting
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                pass
        if fmt == "savedmodel":
            try:
                tag = artifact.get("extra", {}).get("tag", "serve")
                loaded = tf.saved_model.load(str(model_path), tags=[t for t in tag.split(",") if t])  # a tag set: "serve,extra"
            except Exception as e:
                raise ProtocolError("load_failed", f"SavedModel {model_path} (tag {tag!r}): {type(e).__name__}: {_one_line(e)}") from None
            sig = artifact["signature"]
            if sig not in loaded.signatures:
                raise ProtocolError("load_failed", f"SavedModel {model_path} has no signature {sig!r}: expected one of {sorted(loaded.signatures)}")
            return _Signature(tf, loaded.signatures[sig], keep=loaded)
        if fmt in ("keras", "h5"):
            import keras

            model = keras.models.load_model(str(model_path), compile=False)
            return _Keras(tf, model, [s["stored_name"] for s in artifact["inputs"]])
        if fmt == "frozen_graph":
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(model_path.read_bytes())
            inputs = [s["stored_name"] for s in artifact["inputs"]]
            outputs = [s["stored_name"] for s in artifact["outputs"]]

            def _import():
                tf.compat.v1.import_graph_def(graph_def, name="")

            wrapped = tf.compat.v1.wrap_function(_import, [])
            graph = wrapped.graph
            try:
                pruned = wrapped.prune(
                    feeds=[graph.get_tensor_by_name(n) for n in inputs],
                    fetches=[graph.get_tensor_by_name(n) for n in outputs],
                )
            except KeyError as e:
                raise ProtocolError("load_failed", f"frozen graph {model_path}: {e}") from None
            return _Frozen(tf, pruned, inputs, outputs)
        raise ProtocolError("unsupported", f"format {fmt!r}")


if __name__ == "__main__":
    main(TF)
