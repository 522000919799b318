"""Runtime `tf`: Python TensorFlow on SavedModel signatures, Keras `.keras`/`.h5`, frozen graphs and
checkpoints restored into the fixture's code (format `checkpoint`)."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import numpy as np

from harness_runners.contain import check_artifact, check_inside, check_savedmodel_assets
from harness_runners.protocol import ProtocolError, Runtime, Session, main, one_line, read_json


def _host(value) -> np.ndarray:
    """An output as the protocol writes it: TensorFlow's string tensors come back as object arrays of
    bytes, which .npy holds only with pickle; they go out as fixed-width bytes (|S<n>), any rank."""
    value = np.asarray(value)
    return value.astype(bytes) if value.dtype == object else value


class _Signature(Session):
    def __init__(self, tf, fn, keep=None):
        self.tf, self.fn = tf, fn
        self.keep = keep  # the object the signature belongs to: it must stay alive

    def run(self, feeds):
        result = self.fn(**{k: self.tf.constant(v) for k, v in feeds.items()})
        return {k: _host(v.numpy()) for k, v in result.items()}


class _Keras(Session):
    def __init__(self, tf, model, input_names: list[str]):
        self.tf, self.model, self.input_names = tf, model, input_names

    def run(self, feeds):
        args = [self.tf.constant(feeds[n]) for n in self.input_names]
        out = self.model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(out, dict):  # outputs keyed by name: artifact.json stores each under its key
            return {str(k): _host(v) for k, v in out.items()}
        outs = out if isinstance(out, (list, tuple)) else [out]
        return {str(i): np.asarray(o) for i, o in enumerate(outs)}


class _Frozen(Session):
    def __init__(self, tf, fn, input_names: list[str], output_names: list[str]):
        self.tf, self.fn, self.input_names, self.output_names = tf, fn, input_names, output_names

    def run(self, feeds):
        result = self.fn(*[self.tf.constant(feeds[n]) for n in self.input_names])
        return {n: r.numpy() for n, r in zip(self.output_names, result)}


class _Code(Session):
    """A model built from the fixture's code (Keras or tf.Module), variables restored from a checkpoint."""

    def __init__(self, tf, call, input_names: list[str], output_names: list[str] | None, keep=None):
        self.tf, self.call, self.input_names, self.output_names, self.keep = tf, call, input_names, output_names, keep

    def run(self, feeds):
        out = self.call([self.tf.constant(feeds[n]) for n in self.input_names])
        if isinstance(out, dict):
            return {k: _host(v) for k, v in out.items()}
        outs = out if isinstance(out, (list, tuple)) else [out]
        assert self.output_names is not None
        return {n: _host(o) for n, o in zip(self.output_names, outs)}


class _Graph1(Session):
    """A TF1 graph built from the fixture's code in its own tf.Graph, variables restored by a Saver."""

    def __init__(self, session, inputs: dict, outputs: dict):
        self.session, self.inputs, self.outputs = session, inputs, outputs

    def run(self, feeds):
        out = self.session.run(self.outputs, feed_dict={self.inputs[k]: v for k, v in feeds.items()})
        return {k: _host(v) for k, v in out.items()}

    def close(self):
        self.session.close()


# --- checkpoints ---------------------------------------------------------------------------------------

# The phrase the engine reads as the model's fault (harness/engine.py): checkpoint and code disagree.
MISMATCH = "checkpoint does not match the model's code"
FRESH_SEED = 4242  # the values every variable gets from code before the restore


def fresh_values(variables, read, write) -> None:
    """Give every floating-point variable new values of its own scale, drawn from FRESH_SEED: only the
    restore can bring back the fixture's weights (non-negative ones, such as variances, stay so)."""
    rng = np.random.default_rng(FRESH_SEED)
    for v in variables:
        value = np.asarray(read(v))
        if value.dtype.kind != "f" or value.size == 0:
            continue
        fresh = rng.standard_normal(value.shape) * (float(value.std()) + 0.05) + float(value.mean())
        write(v, (np.abs(fresh) if (value >= 0).all() else fresh).astype(value.dtype))


def _manifest(folder: Path) -> dict:
    meta = read_json(folder / "checkpoint.json", f"checkpoint {folder}: checkpoint.json")
    missing = [k for k in ("style", "module", "prefix") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ProtocolError("load_failed", f"checkpoint {folder}: checkpoint.json has no {', '.join(missing)} (expected a checkpoint manifest)")
    module = meta["module"]
    # Code is imported only from the harness's fixtures package: an artifact names data, never any module.
    if not re.fullmatch(r"harness_fixtures\.[A-Za-z_][A-Za-z0-9_]*", str(module)):
        raise ProtocolError("load_failed", f"checkpoint {folder}: module {module!r} is not a fixture module (expected harness_fixtures.<name>)")
    return meta


def _fixture_of(module, name: str):
    for fx in [getattr(module, "FIXTURE", None), *getattr(module, "FIXTURES", [])]:
        if getattr(fx, "name", None) == name:
            return fx
    raise ProtocolError("load_failed", f"{MISMATCH}: {module.__name__} defines no fixture {name!r}")


_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_ATTRIBUTE = "/.ATTRIBUTES/VARIABLE_VALUE"
_written = 0


def _tf2_variables(tf, prefix: str) -> dict[str, tuple[list, str, str]]:
    """A TF2 checkpoint's variables: checkpoint key -> (shape, dtype, the variable's name when written)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    names: dict[str, str] = {}
    if _GRAPH_KEY in shapes:
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(_GRAPH_KEY))
        names = {a.checkpoint_key: a.full_name for node in graph.nodes for a in node.attributes}
    return {k: (list(shapes[k]), dtypes[k].name, names.get(k) or k.removesuffix(_ATTRIBUTE)) for k in shapes if k != _GRAPH_KEY}


def _tf2_mismatch(tf, root, prefix: str) -> list[str]:
    """Every disagreement between the checkpoint and the code, by checkpoint key: the code's own
    variables are written to TensorFlow's in-memory file system (ram://) and listed the same way."""
    global _written
    _written += 1
    scratch = f"ram://harness-checkpoint-{os.getpid()}-{_written}"
    try:
        code = _tf2_variables(tf, tf.train.Checkpoint(model=root).write(f"{scratch}/ckpt"))
    finally:
        if tf.io.gfile.exists(scratch):
            tf.io.gfile.rmtree(scratch)
    stored = _tf2_variables(tf, prefix)

    def where(key: str, name: str) -> str:
        return f"{name} ({key.removesuffix(_ATTRIBUTE)})"

    problems = [f"variable {where(k, code[k][2])} {code[k][0]} is in the code, not in the checkpoint" for k in sorted(set(code) - set(stored))]
    problems += [f"variable {where(k, stored[k][2])} {stored[k][0]} is in the checkpoint, not in the code" for k in sorted(set(stored) - set(code))]
    for k in sorted(set(code) & set(stored)):
        if stored[k][0] != code[k][0]:
            problems.append(f"variable {where(k, code[k][2])} has shape {stored[k][0]} in the checkpoint, {code[k][0]} in the code")
        elif stored[k][1] != code[k][1]:
            problems.append(f"variable {where(k, code[k][2])} is {stored[k][1]} in the checkpoint, {code[k][1]} in the code")
    return problems


def _restore_tf2(tf, root, prefix: str, module: str) -> None:
    """`tf.train.Checkpoint(model=root).read(prefix)`, after checking that the checkpoint holds exactly
    the code's variables (by key, shape and dtype); then every variable of the code must have been
    matched and every value of the checkpoint used. A disagreement is one load_failed naming them all."""
    where = f"({module}, checkpoint {prefix})"
    try:
        problems = _tf2_mismatch(tf, root, prefix)
    except tf.errors.OpError as e:
        raise ProtocolError("load_failed", f"checkpoint {prefix} cannot be read: {type(e).__name__}: {one_line(e)}") from None
    if problems:
        raise ProtocolError("load_failed", f"{MISMATCH} {where}: " + "; ".join(problems))
    try:
        status = tf.train.Checkpoint(model=root).read(prefix)
        status.assert_existing_objects_matched()
        status.assert_consumed()
    except tf.errors.OpError as e:
        raise ProtocolError("load_failed", f"checkpoint {prefix} cannot be read: {type(e).__name__}: {one_line(e)}") from None
    except (ValueError, AssertionError) as e:  # what the comparison above cannot see (objects that are not variables)
        raise ProtocolError("load_failed", f"{MISMATCH} {where}: {type(e).__name__}: {one_line(e)}") from None


def load_checkpoint(tf, artifact: dict, root: Path, folder: Path, restore: bool = True) -> Session:
    """The model built from the fixture's code (checkpoint.json names the module and the fixture), every
    variable given fresh values, then the checkpoint restored into it. `restore=False` leaves the fresh
    values: what the case would compute if the restore did nothing (tests/test_checkpoint.py)."""
    meta = _manifest(folder)
    prefix = str(check_inside(root, folder, str(meta["prefix"]), "checkpoint prefix"))
    try:
        module = importlib.import_module(meta["module"])
    except ImportError as e:
        if getattr(e, "name", None) in ("harness", "harness_fixtures"):
            # The harness's own code is not there to import (the bwrap sandbox shows the worker runners/ only).
            raise ProtocolError("unsupported", f"format checkpoint is restored into the harness's fixture code, which this worker "
                                               f"cannot import ({one_line(e)}; the bwrap sandbox shows it runners/ only)") from None
        raise ProtocolError("load_failed", f"{MISMATCH}: module {meta['module']} cannot be imported ({one_line(e)})") from None
    inputs = [s["name"] for s in artifact["inputs"]]
    if meta["style"] == "tf1":
        return _load_tf1(tf, module, artifact, prefix, restore)
    fx = _fixture_of(module, meta.get("fixture", ""))
    if fx.kind == "keras":
        model = fx.build()
        fresh_values(model.weights, lambda v: v.numpy(), lambda v, x: v.assign(x))
        if restore:
            _restore_tf2(tf, model, prefix, module.__name__)
        # Keras takes its inputs in the fixture's order and returns outputs in the fixture's order.
        order = [s.name for s in fx.inputs]
        return _Code(tf, lambda args: model(args[0] if len(args) == 1 else args, training=False), order, list(fx.outputs), keep=model)
    if fx.kind == "module":
        obj, fn = fx.build()
        fresh_values(obj.variables, lambda v: v.numpy(), lambda v, x: v.assign(x))
        if restore:
            _restore_tf2(tf, obj, prefix, module.__name__)
        return _Code(tf, lambda args: fn(**dict(zip(inputs, args))), inputs, None, keep=obj)
    raise ProtocolError("load_failed", f"{MISMATCH}: fixture {fx.name} is of kind {fx.kind!r}, a TF2 checkpoint restores into Keras or tf.Module code")


def _load_tf1(tf, module, artifact: dict, prefix: str, restore: bool) -> Session:
    """The fixture's tf1_graph() in a fresh tf.Graph, a Session, fresh values, then Saver.restore; the
    checkpoint's variables are compared with the graph's first, by name and shape."""
    v1 = tf.compat.v1
    build = getattr(module, "tf1_graph", None)
    if not callable(build):
        raise ProtocolError("load_failed", f"{MISMATCH}: {module.__name__} defines no tf1_graph() to rebuild the graph from")
    graph = tf.Graph()
    with graph.as_default():
        signatures = build()
        sig = artifact["signature"]
        if sig not in signatures:
            raise ProtocolError("load_failed", f"{MISMATCH}: {module.__name__}.tf1_graph builds no signature {sig!r} (it builds {sorted(signatures)})")
        feeds, fetches = signatures[sig]
        variables = v1.global_variables()
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
        fresh_values(variables, lambda v: session.run(v), lambda v, x: v.load(x, session))
        if restore:
            try:
                stored = dict(tf.train.list_variables(prefix))
            except (tf.errors.OpError, ValueError) as e:
                session.close()
                raise ProtocolError("load_failed", f"checkpoint {prefix} cannot be read: {type(e).__name__}: {one_line(e)}") from None
            code = {v.op.name: v.shape.as_list() for v in variables}
            problems = [f"variable {n} {code[n]} is in the code, not in the checkpoint" for n in sorted(set(code) - set(stored))]
            problems += [f"variable {n} {stored[n]} is in the checkpoint, not in the code" for n in sorted(set(stored) - set(code))]
            problems += [f"variable {n} has shape {stored[n]} in the checkpoint, {code[n]} in the code"
                         for n in sorted(set(code) & set(stored)) if list(stored[n]) != code[n]]
            if problems:
                session.close()
                raise ProtocolError("load_failed", f"{MISMATCH} ({module.__name__}, checkpoint {prefix}): " + "; ".join(problems))
            try:
                v1.train.Saver(var_list=variables).restore(session, prefix)
            except tf.errors.OpError as e:
                session.close()
                raise ProtocolError("load_failed", f"checkpoint {prefix} cannot be read: {type(e).__name__}: {one_line(e)}") from None
    return _Graph1(session, feeds, fetches)


class TF(Runtime):
    name = "tf"
    formats = ("savedmodel", "keras", "h5", "frozen_graph", "checkpoint")

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf

    def address(self, fmt):
        # Python TF calls a SavedModel signature by its keys; the graph names are for C-level bindings.
        # A checkpoint's model is built from code and called the same way.
        return "name" if fmt in ("savedmodel", "checkpoint") else "stored_name"

    def settings(self):
        # Whether TF really uses oneDNN, as TF decides it: TF_ENABLE_ONEDNN_OPTS when set (`tf@onednn-off`
        # 0, `tf@onednn` 1), else on only where the CPU has AVX512_VNNI, AVX512_BF16 or AMX — so on an
        # AVX2 machine the default is off, and the environment alone would say the opposite.
        try:
            from tensorflow.python.util import _pywrap_util_port

            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
        # `tf@avx2` caps oneDNN's instruction set with ONEDNN_MAX_CPU_ISA (read by oneDNN when it starts).
        return {"onednn": onednn, "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")}

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
                raise ProtocolError("load_failed", f"SavedModel {model_path} (tag {tag!r}): {type(e).__name__}: {one_line(e)}") from None
            sig = artifact["signature"]
            if sig not in loaded.signatures:
                raise ProtocolError("load_failed", code="unknown_signature", field="signature", path=str(model_path),
                                    expected=sorted(loaded.signatures), got=sig)
            return _Signature(tf, loaded.signatures[sig], keep=loaded)
        if fmt == "checkpoint":
            return load_checkpoint(tf, artifact, root, model_path)
        if fmt in ("keras", "h5"):
            import keras

            from harness_runners.custom import CustomObjectsError, from_artifact

            try:  # the custom layers' code travels in the artifact folder (harness check --custom-objects/--import)
                custom = from_artifact(artifact, root)
            except CustomObjectsError as e:
                raise ProtocolError("load_failed", str(e)) from None
            model = keras.models.load_model(str(model_path), compile=False, custom_objects=custom)
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
