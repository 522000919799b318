"""`harness inspect MODEL`: what a model file is, what it takes and gives, and where it can run —
read from the file, never by running it.

`inspect(path, signature=None, tag=None)` returns a JSON-ready dict; `render(info, console)` prints it.
Kinds, told from the path: a SavedModel folder (saved_model.pb), `.keras`, `.h5`, `.tflite`, `.onnx`,
a TF.js `model.json` (graph or layers model, or the folder holding it) and a frozen graph `.pb`.

Every kind is read with the format's own parser: SavedModel and GraphDef protobufs (TensorFlow's
protos: TensorFlow is imported for those two kinds only, and no graph is built or run), the `.keras`
zip's config.json, the `.h5` file's model_config (h5py), the TFLite flatbuffer (ai_edge_litert's
schema, and LiteRT's interpreter for whether it loads), the ONNX ModelProto (onnx, with its checker)
and model.json. The checks that gate exports (`harness.export.validate`) are called as they are,
so `inspect` and an export agree on what is wrong with a file.

`info` holds, for every kind: `path`, `kind`, `format` (the harness's format name, or "onnx opset N"
where no harness format matches), `size_bytes`, `signatures` (each `{key, inputs, outputs}`; a tensor
is `{name, dtype, shape}` with None or a symbol for a dynamic dimension and None for an unknown rank,
plus `stored_name`, `scale`, `zero_point` where the format has them), `ops` or `layers` (counts, most
frequent first), `runs_on` and `problems`, and per kind: `tag_sets`, `functions`, `tensorflow_version`
(SavedModel); `model_class`, `keras_version` (Keras, h5, TF.js layers); `quantization`, `subgraphs`,
`litert_loads` (TFLite); `opsets`, `producer`, `ir_version`, `checker` (ONNX); `tfjs_format`,
`weights`, `generated_by`, `converted_by`, `keras3_input_layer` (TF.js). A tensor whose shape the file
does not record (a GraphDef's outputs, a Keras output this reader cannot infer) has `shape_known: False`.

`runs_on`: `{format, runtimes: [{runtime, language, available, version, reason, fix}], check_exports}`:
the runtimes of the runtime table that take the file's format, with their availability here, and for a
SavedModel, `.keras` or `.h5` (what `harness check` takes) the formats `harness check` exports it to,
each with its runtimes. `problems`: `[{message, affects}]`, things that stop some path, found without
running the model (`affects` names formats and runtimes; empty when it is about the file itself).
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

KINDS = ("savedmodel", "keras", "h5", "tflite", "onnx", "tfjs", "frozen_graph")
EXPECTED = "a SavedModel folder, a .keras, .h5, .tflite or .onnx file, a TF.js model.json or a frozen graph .pb"

# TensorFlow DataType names (as TF.js model.json and GraphDefs spell them) to NumPy-style names.
TF_DTYPES = {
    "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
    "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64",
    "DT_BOOL": "bool", "DT_STRING": "string", "DT_COMPLEX64": "complex64", "DT_COMPLEX128": "complex128",
    "DT_RESOURCE": "resource", "DT_VARIANT": "variant",
}

TFJS_RUNTIMES_NOTE = "TF.js has no int64: the Node workers report it unsupported"
FLEX_NOTE = "needs the Flex delegate: no LiteRT here runs it"


# --- entry points --------------------------------------------------------------------------------


def inspect(path: Path, signature: str | None = None, tag: str | None = None, custom_names: set[str] | None = None) -> dict:
    """Everything `harness inspect` shows about the model at `path`, as a JSON-ready dict (see the
    module's docstring). `signature` and `tag` narrow a SavedModel to one signature and tag set
    (`signature` also picks a TFLite signature) and are what `harness check` would be given. Raises
    HarnessError (one line naming the path and what was expected) for a missing path, a kind it does
    not know and a file that does not parse. `custom_names`: the names the given --custom-objects/--import
    define (None: none given), checked against a Keras model's custom layers."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected {EXPECTED})")
    kind, main = _kind(path)
    if tag is not None and kind != "savedmodel":
        raise HarnessError(f"--tag applies to a SavedModel folder: {path} is a {_KIND_WORDS[kind]} (expected a SavedModel folder)")
    if signature is not None and kind not in ("savedmodel", "tflite"):
        raise HarnessError(f"--signature applies to a SavedModel folder or a .tflite file: {path} is a {_KIND_WORDS[kind]} "
                           "(expected a SavedModel folder or a .tflite file)")
    info: dict[str, Any] = {"path": str(path), "kind": kind, "format": None, "size_bytes": _size(main if kind != "savedmodel" else main.parent),
                            "signatures": [], "problems": []}
    _READERS[kind](main, info, signature, tag)
    if kind in ("keras", "h5"):
        _needs_code(info, custom_names)
    _check_tensors(info)
    info["runs_on"] = _runs_on(info, signature, tag)
    _known_deviations(info)
    info["problems"] = info.pop("problems")  # last, as render shows them
    return info


def render(info: dict, console) -> None:
    """A readable summary of `inspect`'s dict on a rich Console, never wider than 100 columns."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    width = min(console.width or 100, 100)

    def line(text: str | Text) -> None:
        console.print(text, width=width, overflow="fold")

    line(Text(info["path"], style="bold"))
    head = [f"kind [bold]{escape(info['kind'])}[/]", f"format [bold]{escape(str(info.get('format') or '-'))}[/]", _bytes(info.get("size_bytes"))]
    line(" · ".join(head))
    facts = _facts(info)
    if facts:
        line(" · ".join(facts))

    for sig in info.get("signatures", []):
        line(_signature_title(sig))
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        quantised = any(t.get("scale") is not None for t in sig["inputs"] + sig["outputs"])
        for col in ("", "name", "dtype", "shape"):
            table.add_column(col, overflow="fold", max_width=40 if col == "name" else None)
        if quantised:
            table.add_column("scale / zero point", overflow="fold")
        for role, tensors in (("in", sig["inputs"]), ("out", sig["outputs"])):
            for t in tensors:
                row = [role, escape(t["name"]), escape(str(t["dtype"])), escape(_shape(t["shape"]) if t.get("shape_known", True) else "not recorded")]
                if quantised:
                    row.append("-" if t.get("scale") is None else f"{_num(t['scale'])} / {t.get('zero_point')}")
                table.add_row(*row)
        console.print(table, width=width)

    for key, what in (("ops", "ops"), ("layers", "layers")):
        counts = info.get(key)
        if counts:
            top = list(counts.items())[:10]
            rest = len(counts) - len(top)
            text = " · ".join(f"{escape(op)} {n}" for op, n in top) + (f" · … {rest} more kinds" if rest > 0 else "")
            line(f"[bold]{what}[/] ({sum(counts.values())} in {len(counts)} kinds): {text}")

    runs = info.get("runs_on") or {}
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("format", no_wrap=True)
    table.add_column("runtimes (✓ available here, ✗ not)", overflow="fold")
    rows = []
    if runs.get("runtimes") or runs.get("format"):
        rows.append((f"{runs.get('format') or '-'} (this file)", runs.get("runtimes", [])))
    # The file's own format is the first row; harness check's export of it to the same format adds nothing.
    rows += [(e["format"], e["runtimes"]) for e in runs.get("check_exports", []) if e["format"] != runs.get("format")]
    missing: dict[str, str] = {}
    for fmt, runtimes in rows:
        cells = []
        for r in runtimes:
            cells.append(f"[green]✓[/] {escape(r['runtime'])}" if r["available"] else f"[red]✗[/] {escape(r['runtime'])}")
            if not r["available"]:
                missing[r["runtime"]] = r.get("reason") or "unavailable"
        table.add_row(escape(fmt), ", ".join(cells) or "[red]no runtime takes it[/]")
    if rows:
        line("[bold]runs on[/]" + (" (first row: this file; the others: what harness check exports it to)" if runs.get("check_exports") else ""))
        console.print(table, width=width)
        for name, why in missing.items():
            line(f"[dim]✗ {escape(name)}: {escape(why)}[/]")

    problems = info.get("problems", [])
    if problems:
        line(f"[bold red]problems ({len(problems)})[/]")
        for p in problems:
            affects = f" [dim]({escape(', '.join(p['affects']))})[/]" if p.get("affects") else ""
            line(f"[red]•[/] {escape(p['message'])}{affects}")
    else:
        line("[green]no problems found[/]")


# --- kinds ---------------------------------------------------------------------------------------

_KIND_WORDS = {"savedmodel": "SavedModel", "keras": ".keras file", "h5": ".h5 file", "tflite": ".tflite file",
               "onnx": ".onnx file", "tfjs": "TF.js model.json", "frozen_graph": "frozen graph .pb"}


def _kind(path: Path) -> tuple[str, Path]:
    """The kind and the main file (for a SavedModel: its saved_model.pb or .pbtxt)."""
    if path.is_dir():
        for name in ("saved_model.pb", "saved_model.pbtxt"):
            if (path / name).is_file():
                return "savedmodel", path / name
        if (path / "model.json").is_file():
            return "tfjs", path / "model.json"
        raise HarnessError(f"cannot inspect {path}: the folder holds no saved_model.pb and no model.json (expected {EXPECTED})")
    name, suffix = path.name.lower(), path.suffix.lower()
    if name in ("saved_model.pb", "saved_model.pbtxt"):
        return "savedmodel", path
    kind = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite", ".onnx": "onnx", ".json": "tfjs", ".pb": "frozen_graph"}.get(suffix)
    if kind is None:
        raise HarnessError(f"cannot inspect {path}: unknown kind of model file {path.name!r} (expected {EXPECTED})")
    return kind, path


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _corrupt(kind: str, path: Path, why: str, expected: str) -> HarnessError:
    why = " ".join(str(why).split())
    return HarnessError(f"corrupt {kind}: {path} {why} (expected {expected})")


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _tensor(name: str, dtype: str | None, shape: list | None, **extra) -> dict:
    out: dict[str, Any] = {"name": name, "dtype": dtype or "unknown", "shape": shape}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _counted(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _problem(info: dict, message: str, affects: Iterable[str] = ()) -> None:
    info["problems"].append({"message": message, "affects": list(affects)})


# --- SavedModel and frozen graph (TensorFlow's protos) ---------------------------------------------


def _tf_dtype(tf, enum: int) -> str:
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


def _tf_shape(shape_proto) -> list | None:
    if shape_proto.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape_proto.dim]


def _read_savedmodel(pb: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.common import import_tf
    from harness.export.validate import ConverterFault, check_savedmodel

    folder = pb.parent
    try:
        check_savedmodel(folder, "savedmodel")
    except ConverterFault as e:
        raise _corrupt("SavedModel", folder, f"is not a complete SavedModel: {e.summary}", "a SavedModel folder with a whole saved_model.pb") from None
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
        raise _corrupt("SavedModel", folder, f"has a {pb.name} that does not parse ({_first_line(e)})", "a SavedModel protobuf") from None
    if not sm.meta_graphs:
        raise _corrupt("SavedModel", folder, f"has no meta graph in {pb.name}", "a SavedModel with at least one tag set")
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
                return _tensor(k, _tf_dtype(tf, t.dtype), _tf_shape(t.tensor_shape), stored_name=t.name or None)

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
    info["ops"] = _counted(ops)
    info["functions"] = functions
    # What `harness check` reads by default (serving_default in the serve tag set) must be there.
    if tag is None and not any("serve" in t for t in tag_sets):
        _problem(info, f"no 'serve' tag set (tag sets: {tag_sets}): harness check needs --tag", ["harness check"])
    if signature is None and not any(s["key"] == "serving_default" for s in info["signatures"]):
        keys = sorted({s["key"] for s in info["signatures"]})
        _problem(info, f"no 'serving_default' signature (signatures: {', '.join(keys) or 'none'}): harness check needs --signature", ["harness check"])


def _read_frozen(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.common import import_tf
    from harness.export.validate import ConverterFault, check_frozen

    expected = "a serialised TensorFlow GraphDef"
    try:
        check_frozen(path, "frozen_graph")
    except ConverterFault as e:
        raise _corrupt("frozen graph", path, f"is not a complete GraphDef: {e.summary}", expected) from None
    tf = import_tf()
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except Exception as e:
        raise _corrupt("frozen graph", path, f"does not parse ({_first_line(e)})", expected) from None
    if not graph.node:
        raise _corrupt("frozen graph", path, "holds no graph nodes", expected)
    info["format"] = "frozen_graph"
    consumed = {re.sub(r":\d+$", "", i) for n in graph.node for i in n.input if not i.startswith("^")}
    inputs, outputs = [], []
    for n in graph.node:
        if n.op == "Placeholder":
            shape = _tf_shape(n.attr["shape"].shape) if "shape" in n.attr else None
            inputs.append(_tensor(n.name, _tf_dtype(tf, n.attr["dtype"].type), shape, stored_name=f"{n.name}:0"))
        elif n.name not in consumed and n.op not in ("NoOp", "Const", "Assert", "SaveV2", "RestoreV2", "VarHandleOp"):
            # A GraphDef records output shapes only where the writer kept `_output_shapes`.
            dtype = next((_tf_dtype(tf, n.attr[a].type) for a in ("T", "dtype") if a in n.attr), None)
            shapes = n.attr["_output_shapes"].list.shape if "_output_shapes" in n.attr else []
            outputs.append(_tensor(n.name, dtype, _tf_shape(shapes[0]) if shapes else None, stored_name=f"{n.name}:0",
                                   shape_known=None if shapes else False))
    info["signatures"].append({"key": None, "inputs": inputs, "outputs": outputs})
    ops = Counter(n.op for n in graph.node)
    for f in graph.library.function:
        ops.update(n.op for n in f.node_def)
    info["ops"] = _counted(ops)
    variables = sorted({op for op in ops if op in ("VarHandleOp", "VariableV2", "Variable")})
    if variables:
        _problem(info, f"the graph still holds variables ({', '.join(variables)}): not frozen, so it has no weights to run with", ["tf"])


# --- Keras .keras and .h5, and TF.js layers models (the same model config) -------------------------


def _read_keras(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import ConverterFault, check_keras

    expected = "a Keras 3 .keras zip with a config.json"
    try:
        check_keras(path, "keras")
    except ConverterFault as e:
        raise _corrupt(".keras file", path, f"is not readable: {e.summary}", expected) from None
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise _corrupt(".keras file", path, f"has an unreadable config.json ({_first_line(e)})", expected) from None
    info["format"] = "keras"
    info["keras_version"] = meta.get("keras_version") if isinstance(meta, dict) else None
    _keras_model(config, info, str(path))


def _read_h5(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import ConverterFault, check_h5

    expected = "a Keras .h5 model with a model_config attribute"
    try:
        check_h5(path, "h5")
    except ConverterFault as e:
        raise _corrupt(".h5 file", path, f"is not a Keras model: {e.summary}", expected) from None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            version = f.attrs.get("keras_version")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, KeyError, ValueError) as e:
        raise _corrupt(".h5 file", path, f"has an unreadable model_config ({_first_line(e)})", expected) from None
    info["format"] = "h5"
    info["keras_version"] = version.decode() if isinstance(version, bytes) else (str(version) if version is not None else None)
    _keras_model(config, info, str(path))


def _keras_model(config: dict, info: dict, where: str) -> None:
    """Inputs, outputs (shapes inferred for the common last layers) and layer counts from a Keras model
    config, Keras 3 or Keras 2 style, without Keras."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise HarnessError(f"corrupt Keras model: {where} has a model config that is not an object (expected a Keras model config)")
    info["model_class"] = config.get("class_name")
    info["model_name"] = config["config"].get("name")
    layers: Counter = Counter()
    try:
        _count_layers(config, layers, top=True)
        inputs, outputs = _keras_io(config)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:  # a config of another shape than Keras writes
        raise HarnessError(f"corrupt Keras model: {where} has a model config this reader cannot follow ({_first_line(e)}) "
                           "(expected a Keras 2 or 3 Functional or Sequential model config)") from None
    info["layers"] = _counted(layers)
    info["signatures"].append({"key": None, "inputs": inputs, "outputs": outputs})
    custom = _custom_classes(config)
    if custom:
        info["custom_objects"] = custom


def _custom_classes(config: dict) -> list[dict]:
    """Layers (and nested models' layers) that are not Keras's own: a config entry whose `module` is not
    Keras's, or that names a registered class (`mine>Scale`). Loading the model needs their code."""
    found: dict[str, dict] = {}

    def walk(layer: dict) -> None:
        module, registered = layer.get("module"), layer.get("registered_name")
        if (isinstance(module, str) and not module.startswith(("keras", "tf_keras", "tensorflow"))) or \
                (isinstance(registered, str) and ">" in registered and not registered.startswith("keras")):
            name = str(layer.get("class_name"))
            found.setdefault(name, {"class": name, "registered_name": registered, "module": module})
        for inner in (layer.get("config") or {}).get("layers") or []:
            if isinstance(inner, dict):
                walk(inner)

    for layer in (config.get("config") or {}).get("layers") or []:
        if isinstance(layer, dict):
            walk(layer)
    return list(found.values())


def _needs_code(info: dict, defined: set[str] | None) -> None:
    """A problem for each custom class the given --custom-objects/--import do not define (all of them
    when none were given): the model does not load without its code."""
    custom = info.get("custom_objects") or []
    if defined is None:
        if custom:
            names = ", ".join(repr(c["class"]) + (f" ({c['registered_name']})" if c.get("registered_name") else "") for c in custom)
            _problem(info, f"custom layer(s) {names}: the model loads only with their code: harness check and inspect take "
                           "--custom-objects FILE.py (or --import MODULE) defining them")
        return
    for c in custom:
        known_as = {c["class"], str(c.get("registered_name")), str(c.get("registered_name")).rpartition(">")[2]}
        c["defined"] = bool(known_as & defined)
        if not c["defined"]:
            _problem(info, f"custom layer {c['class']!r}: the given --custom-objects/--import define no {c['class']!r} (expected a "
                           "CUSTOM_OBJECTS entry or a class registered with keras.saving.register_keras_serializable)")


def _count_layers(config: dict, counts: Counter, top: bool = False) -> None:
    if not top:
        counts[config.get("class_name", "?")] += 1
    for layer in (config.get("config") or {}).get("layers") or []:
        if isinstance(layer, dict):
            _count_layers(layer, counts)


def _keras_tensors(obj: Any) -> Iterator[dict]:
    """The Keras 3 `__keras_tensor__` records inside a node's args and kwargs."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj.get("config") or {}
        else:
            for v in obj.values():
                yield from _keras_tensors(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keras_tensors(v)


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    """`input_layers`/`output_layers`: ["a", 0, 0] (Keras 3, one) or [["a", 0, 0], ...]."""
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        return [(spec[0], int(spec[1]), int(spec[2]))]
    return [(s[0], int(s[1]), int(s[2])) for s in spec or [] if isinstance(s, list) and len(s) >= 3]


def _layer_dtype(layer: dict) -> str:
    dtype = (layer.get("config") or {}).get("dtype")
    if isinstance(dtype, dict):  # a DTypePolicy
        dtype = (dtype.get("config") or {}).get("name")
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        return dtype[len("mixed_"):]
    return dtype if isinstance(dtype, str) else "float32"


def _keras_io(config: dict) -> tuple[list[dict], list[dict]]:
    cfg = config["config"]
    layers = [layer for layer in cfg.get("layers") or [] if isinstance(layer, dict)]
    by_name = {(layer.get("name") or (layer.get("config") or {}).get("name")): layer for layer in layers}
    shapes: dict[tuple[str, int, int], list | None] = {}

    def input_shape(layer: dict) -> list | None:
        c = layer.get("config") or {}
        for key in ("batch_shape", "batch_input_shape", "batchInputShape"):
            if isinstance(c.get(key), list):
                return list(c[key])
        return None

    sequential = config.get("class_name") == "Sequential" or "input_layers" not in cfg
    if sequential:
        first = layers[0] if layers else {}
        shape = input_shape(first)
        if shape is None and isinstance(cfg.get("build_input_shape"), list):
            shape = list(cfg["build_input_shape"])
        if shape is None and isinstance((config.get("build_config") or {}).get("input_shape"), list):
            shape = list(config["build_config"]["input_shape"])
        name = "input_0"
        if first.get("class_name") == "InputLayer":
            name = first.get("name") or (first.get("config") or {}).get("name") or name
        inputs = [_tensor(name, _layer_dtype(first) if first else "float32", shape)]
        current = shape
        for layer in layers:
            if layer.get("class_name") != "InputLayer":
                current = _infer(layer, [current])
        last = layers[-1] if layers else {}
        return inputs, [_tensor("output_0", _layer_dtype(last) if last else "float32", current, layer=last.get("name"),
                                shape_known=None if current is not None else False)]

    # Functional: shapes flow along inbound nodes; Keras 3 records the shape of every tensor a layer takes.
    for layer in layers:
        name = str(layer.get("name") or (layer.get("config") or {}).get("name"))
        if layer.get("class_name") == "InputLayer":
            shapes[(name, 0, 0)] = input_shape(layer)
            continue
        for k, node in enumerate(layer.get("inbound_nodes") or []):
            ins: list[list | None] = []
            seen = list(_keras_tensors(node))
            if seen:
                for t in seen:
                    history = t.get("keras_history") or [None, 0, 0]
                    ins.append(t.get("shape") if isinstance(t.get("shape"), list) else shapes.get((history[0], history[1], history[2])))
                    shapes.setdefault((history[0], history[1], history[2]), ins[-1])
            elif isinstance(node, list):  # Keras 2: [["layer", node, tensor, kwargs], ...]
                ins = [shapes.get((r[0], int(r[1]), int(r[2]))) for r in node if isinstance(r, list) and len(r) >= 3]
            shapes.setdefault((name, k, 0), _infer(layer, ins))
    inputs = []
    for name, _, _ in _refs(cfg.get("input_layers")):
        layer = by_name.get(name, {})
        inputs.append(_tensor(name, _layer_dtype(layer), input_shape(layer)))
    outputs = []
    for i, ref in enumerate(_refs(cfg.get("output_layers"))):
        layer = by_name.get(ref[0], {})
        shape = shapes.get(ref)
        outputs.append(_tensor(f"output_{i}", _layer_dtype(layer), shape, layer=ref[0], shape_known=None if shape is not None else False))
    return inputs, outputs


_SAME_SHAPE = {
    "Activation", "Dropout", "Softmax", "ReLU", "LeakyReLU", "ELU", "PReLU", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "UnitNormalization", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity", "Rescaling",
    "Normalization", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Add", "Subtract", "Multiply", "Average",
    "Maximum", "Minimum", "ActivityRegularization", "Masking",
}


def _infer(layer: dict, ins: list[list | None]) -> list | None:
    """A layer's output shape from its input shapes, for the layers models commonly end with; None
    where it cannot be told from the config alone."""
    cls, c = layer.get("class_name"), layer.get("config") or {}
    first = ins[0] if ins else None
    if first is None:
        return None
    if cls in _SAME_SHAPE:
        return list(first)
    if cls == "Dense" and isinstance(c.get("units"), int):
        return [*first[:-1], c["units"]]
    if cls == "Flatten":
        rest = first[1:]
        return [first[0], math.prod(rest) if all(isinstance(d, int) for d in rest) else None]
    if cls == "Reshape" and isinstance(c.get("target_shape"), list):
        return [first[0], *[None if d == -1 else d for d in c["target_shape"]]]
    if cls and cls.startswith("Global") and ("Pooling" in cls) and not c.get("keepdims"):
        return [first[0], first[1] if c.get("data_format") == "channels_first" else first[-1]]
    if cls in ("LSTM", "GRU", "SimpleRNN") and isinstance(c.get("units"), int) and not c.get("return_state"):
        return [first[0], first[1], c["units"]] if c.get("return_sequences") else [first[0], c["units"]]
    if cls == "Concatenate" and all(s is not None for s in ins):
        axis = c.get("axis", -1)
        dims = [s[axis] for s in ins if s is not None]
        out = list(first)
        out[axis] = sum(dims) if all(isinstance(d, int) for d in dims) else None
        return out
    return None


# --- TFLite (ai_edge_litert's flatbuffer schema and interpreter) -----------------------------------


def _read_tflite(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from ai_edge_litert import schema_py_generated as schema

    from harness.export.validate import FLEX_PREFIX, ConverterFault, check_tflite

    expected = "a TFLite flatbuffer"
    buf = path.read_bytes()
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise _corrupt("TFLite model", path, "is not a TFLite flatbuffer (no TFL3 identifier)", expected)
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    builtins = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAsModel(buf, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            custom = oc.CustomCode()
            codes.append(custom.decode("utf-8", "replace") if custom else builtins.get(code, f"BUILTIN_{code}"))
        ops: Counter = Counter()
        produced: list[set[int]] = []
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            made = {int(t) for t in sg.InputsAsNumpy()} if sg.InputsLength() else set()
            for o in range(sg.OperatorsLength()):
                op = sg.Operators(o)
                ops[codes[op.OpcodeIndex()]] += 1
                if op.OutputsLength():
                    made.update(int(t) for t in op.OutputsAsNumpy())
            produced.append(made)

        def tensor(sg, index: int, name: str | None = None) -> dict:
            t = sg.Tensors(index)
            shape = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
            dims = [None if int(d) < 0 else int(d) for d in shape] if not isinstance(shape, int) else []
            q = t.Quantization()
            scale = zero = None
            if q is not None and q.ScaleLength():
                scales, zeros = q.ScaleAsNumpy(), q.ZeroPointAsNumpy() if q.ZeroPointLength() else [0]
                scale = float(scales[0]) if len(scales) == 1 else [float(v) for v in scales]
                zero = int(zeros[0]) if len(zeros) == 1 else [int(v) for v in zeros]
            return _tensor(name or t.Name().decode("utf-8", "replace"), types.get(t.Type(), f"type {t.Type()}"), dims,
                           stored_name=t.Name().decode("utf-8", "replace"), scale=scale, zero_point=zero)

        for i in range(model.SignatureDefsLength()):
            sd = model.SignatureDefs(i)
            key = sd.SignatureKey().decode("utf-8", "replace")
            if signature is not None and key != signature:
                continue
            sg = model.Subgraphs(sd.SubgraphIndex())
            ins = sorted((sd.Inputs(j) for j in range(sd.InputsLength())), key=lambda m: m.Name())
            outs = sorted((sd.Outputs(j) for j in range(sd.OutputsLength())), key=lambda m: m.Name())
            info["signatures"].append({"key": key, "subgraph": sd.SubgraphIndex(),
                                       "inputs": [tensor(sg, m.TensorIndex(), m.Name().decode()) for m in ins],
                                       "outputs": [tensor(sg, m.TensorIndex(), m.Name().decode()) for m in outs]})
        keys = [model.SignatureDefs(i).SignatureKey().decode("utf-8", "replace") for i in range(model.SignatureDefsLength())]
        if signature is not None and not info["signatures"]:
            raise HarnessError(f"TFLite model {path} has no signature {signature!r}: expected one of {keys}")
        if not keys and model.SubgraphsLength():
            sg = model.Subgraphs(0)
            info["signatures"].append({"key": None, "subgraph": 0,
                                       "inputs": [tensor(sg, int(t)) for t in (sg.InputsAsNumpy() if sg.InputsLength() else [])],
                                       "outputs": [tensor(sg, int(t)) for t in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]})
            _problem(info, "no signature: the harness's litert worker runs a signature runner", ["litert"])
        quant = _tflite_quantization(model, produced, types, info["signatures"])
    except HarnessError:
        raise
    except Exception as e:  # a flatbuffer cut short or overwritten reads out of bounds
        raise _corrupt("TFLite model", path, f"does not parse ({_first_line(e)})", expected) from None
    info["ops"] = _counted(ops)
    info["subgraphs"] = model.SubgraphsLength()
    info["quantization"] = quant
    info["format"] = {"int8": "tflite_int8", "int16x8": "tflite_int8", "float16": "tflite_fp16", "dynamic-range": "tflite_dynamic"}.get(quant["scheme"] or "", "tflite")
    try:
        check_tflite(path, info["format"])  # LiteRT's own verifier and allocation: nothing runs
        info["litert_loads"] = True
    except ConverterFault as e:
        info["litert_loads"] = False
        flex = [op for op in ops if op.startswith(FLEX_PREFIX)]
        if e.culprit == "environment" or flex:
            _problem(info, f"Select TF ops {', '.join(flex) or e.op or '(unnamed)'}: {FLEX_NOTE}", ["litert"])
        else:
            _problem(info, e.summary, ["litert"])
    custom = [op for op in ops if not op.startswith(FLEX_PREFIX) and op not in builtins.values()]
    if custom and info["litert_loads"] is False:
        _problem(info, f"custom ops {', '.join(custom)}: LiteRT must have them registered", ["litert"])


def _tflite_quantization(model, produced: list[set[int]], types: dict[int, str], signatures: list[dict]) -> dict:
    """How the model is quantised, from tensor types: int8 activations (full integer), float16 or int8
    constants with float activations (float16 weights, dynamic range)."""
    activations: Counter = Counter()
    constants: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            dtype = types.get(t.Type(), "?")
            quantised = t.Quantization() is not None and t.Quantization().ScaleLength() > 0
            if i in produced[s] or t.IsVariable():
                activations[(dtype, quantised)] += 1
            else:
                constants[(dtype, quantised)] += 1
    io = {t["dtype"] for sig in signatures for t in sig["inputs"] + sig["outputs"]}
    if io and io <= {"int8", "uint8"}:
        io_words = f"{'/'.join(sorted(io))} in/out"
    elif io & {"int8", "uint8", "int16"}:
        io_words = "mixed integer and float in/out"
    else:
        io_words = "float in/out"
    if activations[("int16", True)]:
        scheme, words = "int16x8", f"full integer, int16 activations, int8 weights, {io_words}"
    elif activations[("int8", True)] or activations[("uint8", True)]:
        scheme, words = "int8", f"full integer int8, {io_words}"
    elif constants[("float16", False)] or constants[("float16", True)]:
        scheme, words = "float16", f"float16 weights, {io_words}"
    elif constants[("int8", True)] or constants[("uint8", True)]:
        scheme, words = "dynamic-range", f"dynamic-range: int8 weights, float activations, {io_words}"
    else:
        scheme, words = None, f"not quantised, {io_words}"
    return {"scheme": scheme, "io": io_words, "description": words}


# --- ONNX ----------------------------------------------------------------------------------------


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
    as it is, never converted; None below 7 (ONNX Runtime does not take it) or without an opset."""
    if not opset or opset < 7:
        return None
    return "onnx18" if opset >= 18 else "onnx13"


def _read_onnx(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    import onnx
    import onnx.checker

    from harness.export.validate import node_issues, onnx_summary, opset_map

    expected = "an ONNX ModelProto"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise _corrupt("ONNX model", path, f"does not parse ({_first_line(e)})", expected) from None
    if not model.opset_import and not model.graph.node and not model.graph.input:
        raise _corrupt("ONNX model", path, "holds no graph and no opset import", expected)
    opsets = opset_map(model.opset_import)
    info["opsets"] = {(d or "ai.onnx"): v for d, v in sorted(opsets.items())}
    version = opsets.get("")
    info["format"] = onnx_format(version)
    if info["format"] is None:
        info["format"] = f"onnx opset {version}" if version else "onnx (no default-domain opset)"
        info["runs_as_note"] = (f"ONNX opset {version} is older than ONNX Runtime's oldest (7): upgrade the file with "
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
        "inputs": [_tensor(v.name, _onnx_dtype(v.type), _onnx_shape(v.type)) for v in model.graph.input if v.name not in initialisers],
        "outputs": [_tensor(v.name, _onnx_dtype(v.type), _onnx_shape(v.type)) for v in model.graph.output],
    })
    ops: Counter = Counter()
    for f in [model.graph, *model.functions]:
        for node in _onnx_nodes(f.node):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            ops[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
    info["ops"] = _counted(ops)
    if model.functions:
        info["functions"] = [f"{f.domain}::{f.name}" if f.domain else f.name for f in model.functions]
    try:
        onnx.checker.check_model(str(path), full_check=False)
        info["checker"] = {"ok": True, "message": None}
    except Exception as e:
        message = str(e) if isinstance(e, onnx.checker.ValidationError) else _first_line(e)
        info["checker"] = {"ok": False, "message": " ".join(message.split())[:500]}
    # The same node walk the ONNX exporter's validation does: standard domains, schema at the opset.
    local = {(f.domain, f.name) for f in model.functions}
    issues = node_issues(model.graph.node, opsets, local, "main graph")
    for f in model.functions:
        issues += node_issues(f.node, {**opsets, **opset_map(f.opset_import)}, local, f"function {f.domain}::{f.name}")
    onnx_runtimes = _runtimes_taking(("onnx13", "onnx18"))
    if issues:
        _problem(info, onnx_summary(issues).replace("converter emitted ", "the graph has ", 1), onnx_runtimes)
    elif not info["checker"]["ok"]:
        _problem(info, f"onnx.checker rejects it: {info['checker']['message'][:200]}", onnx_runtimes)
    if info["format"] not in ("onnx13", "onnx18"):
        _problem(info, f"harness check does not take it: {info['runs_as_note']}", onnx_runtimes)


# --- TF.js model.json ----------------------------------------------------------------------------


def _tfjs_shape(shape: Any) -> list | None:
    if not isinstance(shape, dict) or shape.get("unknownRank"):
        return None
    dims = []
    for d in shape.get("dim") or []:
        size = int(d.get("size", -1)) if isinstance(d, dict) else -1
        dims.append(None if size < 0 else size)
    return dims


def _read_tfjs(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import ConverterFault, check_tfjs, shard_path

    expected = "a TF.js model.json with a modelTopology"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _corrupt("TF.js model", path, f"is not valid JSON ({_first_line(e)})", expected) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("modelTopology"), dict):
        raise _corrupt("TF.js model", path, "is not a TF.js model.json (no modelTopology object)", expected)
    topology = meta["modelTopology"]
    declared = meta.get("format")
    if declared == "graph-model" or (declared is None and "node" in topology):
        fmt = "tfjs_graph"
    elif declared == "layers-model" or (declared is None and ("model_config" in topology or "class_name" in topology)):
        fmt = "tfjs_layers"
    else:
        raise _corrupt("TF.js model", path, f"says format {declared!r}", "format 'graph-model' or 'layers-model'")
    info["format"] = fmt
    info["tfjs_format"] = declared
    info["generated_by"], info["converted_by"] = meta.get("generatedBy"), meta.get("convertedBy")
    try:
        check_tfjs(path, fmt)  # shards present, inside the folder, of the sizes the manifest says
    except ConverterFault as e:
        _problem(info, e.summary, _runtimes_taking((fmt,)))
    manifest: list = meta["weightsManifest"] if isinstance(meta.get("weightsManifest"), list) else []
    shards = held = weights = 0
    for g, group in enumerate(manifest):
        if not isinstance(group, dict):
            continue
        weights += len(group.get("weights") or [])
        for shard in group.get("paths") or []:
            shards += 1
            try:
                file = shard_path(path.parent, shard, g)
            except ConverterFault:
                continue
            if file.is_file():
                held += file.stat().st_size
    info["weights"] = {"groups": len(manifest), "shards": shards, "bytes": held, "tensors": weights}
    info["size_bytes"] = path.stat().st_size + held

    if fmt == "tfjs_layers":
        config = topology.get("model_config", topology)
        info["keras_version"] = topology.get("keras_version")
        _keras_model(config, info, str(path))
        layers = [layer for layer in (config.get("config") or {}).get("layers") or [] if isinstance(layer, dict)]
        if any(layer.get("class_name") == "InputLayer" and "batch_shape" in (layer.get("config") or {})
               and not {"batch_input_shape", "batchInputShape"} & set(layer.get("config") or {}) for layer in layers):
            info["keras3_input_layer"] = True
        return

    ops: Counter = Counter(n.get("op", "?") for n in topology.get("node") or [] if isinstance(n, dict))
    for f in (topology.get("library") or {}).get("function") or []:
        ops.update(n.get("op", "?") for n in f.get("nodeDef", f.get("node_def")) or [] if isinstance(n, dict))
    info["ops"] = _counted(ops)
    sig = meta.get("signature") or (meta.get("userDefinedMetadata") or {}).get("signature")
    if isinstance(sig, dict) and (sig.get("inputs") or sig.get("outputs")):
        def spec(key, t):
            return _tensor(key, TF_DTYPES.get(t.get("dtype"), t.get("dtype")), _tfjs_shape(t.get("tensorShape")), stored_name=t.get("name"))

        info["signatures"].append({"key": None, "inputs": [spec(k, v) for k, v in sorted((sig.get("inputs") or {}).items())],
                                   "outputs": [spec(k, v) for k, v in sorted((sig.get("outputs") or {}).items())]})
    else:  # no signature in model.json: the placeholders are the inputs; outputs are not recorded
        inputs = []
        for n in topology.get("node") or []:
            if isinstance(n, dict) and n.get("op") == "Placeholder":
                attr = n.get("attr") or {}
                dtype = (attr.get("dtype") or {}).get("type")
                inputs.append(_tensor(n.get("name", "?"), TF_DTYPES.get(str(dtype), dtype), _tfjs_shape((attr.get("shape") or {}).get("shape"))))
        info["signatures"].append({"key": None, "inputs": inputs, "outputs": []})


_READERS = {
    "savedmodel": _read_savedmodel, "keras": _read_keras, "h5": _read_h5, "tflite": _read_tflite,
    "onnx": _read_onnx, "tfjs": _read_tfjs, "frozen_graph": _read_frozen,
}


# --- where it runs, and what stops it ------------------------------------------------------------

_AVAILABILITY: dict[str, dict] = {}


def _runtime_entry(name: str) -> dict:
    from harness.runners.table import RUNTIMES

    if name not in _AVAILABILITY:
        spec = RUNTIMES[name]
        a = spec.availability()
        _AVAILABILITY[name] = {"runtime": name, "language": spec.language, "available": a.ok, "version": a.version,
                               "reason": a.reason, "fix": a.fix}
    return dict(_AVAILABILITY[name])


def _runtimes_taking(formats: Iterable[str]) -> list[str]:
    from harness.runners.table import RUNTIMES

    wanted = set(formats)
    return [name for name, spec in RUNTIMES.items() if wanted & set(spec.formats)]


def _runs_on(info: dict, signature: str | None, tag: str | None) -> dict:
    from harness.export import FORMATS, formats_for
    from harness.fixtures import Fixture
    from harness.runners.table import RUNTIMES

    fmt = info.get("format")
    takes = [fmt] if fmt in FORMATS else []  # an ONNX file below opset 7: no runtime here takes it
    runs: dict[str, Any] = {
        "format": fmt,
        "runtimes": [_runtime_entry(name) for name, spec in RUNTIMES.items() if set(takes) & set(spec.formats)],
    }
    if info["kind"] in ("savedmodel", "keras", "h5"):
        # `harness check` makes a fixture of kind "user" (SavedModel) or "keras" (.keras/.h5).
        probe = Fixture(name="inspect", description="", kind="user" if info["kind"] == "savedmodel" else "keras", inputs=(), outputs=(),
                        build=lambda: None, generate=lambda rng, batch: {})
        runs["check_exports"] = [
            {"format": f, "runtimes": [_runtime_entry(name) for name, spec in RUNTIMES.items() if f in spec.formats]}
            for f in formats_for(probe)
        ]
    return runs


def _check_tensors(info: dict) -> None:
    """int64 tensors on the TF.js path, and dynamic dimensions other than the batch."""
    tensors = [(role, t) for sig in info["signatures"] for role, ts in (("input", sig["inputs"]), ("output", sig["outputs"])) for t in ts]
    wide = list(dict.fromkeys(f"{role} {t['name']}" for role, t in tensors if t["dtype"] in ("int64", "uint64")))
    tfjs = _runtimes_taking(("tfjs_graph", "tfjs_layers"))
    if wide and info.get("format") in ("tfjs_graph", "tfjs_layers"):
        _problem(info, f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} int64 ({TFJS_RUNTIMES_NOTE})", tfjs)
    elif wide and info["kind"] in ("savedmodel", "keras", "h5"):
        formats = ["tfjs_graph"] + (["tfjs_layers"] if info["kind"] != "savedmodel" else [])
        _problem(info, f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} int64: its {' and '.join(formats)} export will not run "
                       f"({TFJS_RUNTIMES_NOTE})", formats + tfjs)
    dynamic = []
    for role, t in tensors:
        if t.get("shape_known") is False:
            continue  # not recorded in the file (a GraphDef's outputs) or not inferable from a Keras config
        if t["shape"] is None:
            dynamic.append(f"{role} {t['name']} (unknown rank)")
        elif any(d is None or isinstance(d, str) for d in t["shape"][1:]):
            dims = [str(i) for i, d in enumerate(t["shape"]) if i > 0 and (d is None or isinstance(d, str))]
            dynamic.append(f"{role} {t['name']} {_shape(t['shape'])} (dim {', '.join(dims)})")
    dynamic = list(dict.fromkeys(dynamic))
    if dynamic:
        _problem(info, "dynamic dimensions other than the batch: " + "; ".join(dynamic)
                 + ": harness check feeds 8 there, and converters and runtimes may need them fixed")


def _known_deviations(info: dict) -> None:
    """Known deviations (fixtures/deviations.toml) that hold for every model and hit this file's
    format or the formats `harness check` exports it to; a TF.js layers model is checked for the cause."""
    import fnmatch

    from harness.cases import load_deviations

    runs = info["runs_on"]
    formats = [runs["format"], *[e["format"] for e in runs.get("check_exports", [])]]
    for d in load_deviations():
        if d.fixture != "*":
            continue
        hit = [f for f in formats if isinstance(f, str) and fnmatch.fnmatchcase(f, d.format)]
        if not hit:
            continue
        if info.get("format") == "tfjs_layers" and "InputLayer" in (d.match or "") and not info.get("keras3_input_layer"):
            continue  # a Keras 2 layers model: its InputLayer has batchInputShape, the deviation's cause is absent
        _problem(info, f"known deviation of {', '.join(hit)} on {d.runtime} (fixtures/deviations.toml): {_clip(d.reason, 160)}", [*hit, d.runtime])


# --- rendering helpers ---------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    """The first sentence of `text` on one line, cut at a word before `limit` characters."""
    text = " ".join(text.split())
    text = re.split(r"(?<=[.;])\s", text)[0].rstrip(".;")
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def _shape(shape: list | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _num(v: Any) -> str:
    if isinstance(v, list):
        return f"{len(v)} per-channel values"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _bytes(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _signature_title(sig: dict) -> str:
    from rich.markup import escape

    parts = []
    if sig.get("key"):
        parts.append(f"signature [bold]{escape(sig['key'])}[/]")
    if sig.get("tags"):
        parts.append(f"tags {escape(', '.join(sig['tags']))}")
    return " · ".join(parts) or "inputs and outputs"


def _facts(info: dict) -> list[str]:
    from rich.markup import escape

    kind, out = info["kind"], []
    if kind == "savedmodel":
        out.append("tag sets " + escape(" ".join("[" + ", ".join(t) + "]" for t in info.get("tag_sets", []))))
        out.append(f"{info.get('functions', 0)} functions")
        if info.get("tensorflow_version"):
            out.append(f"TF {escape(info['tensorflow_version'])}")
    if info.get("model_class"):
        out.append(f"{escape(str(info['model_class']))} {escape(repr(info.get('model_name')))}")
    if info.get("keras_version"):
        out.append(f"Keras {escape(str(info['keras_version']))}")
    if kind == "tflite":
        out.append(f"quantisation: {escape(info['quantization']['description'])}")
        out.append("LiteRT loads it" if info.get("litert_loads") else "[red]LiteRT cannot load it[/]")
    if kind == "onnx":
        out.append("opsets " + ", ".join(f"{escape(d)} {v}" for d, v in info.get("opsets", {}).items()))
        if info.get("producer"):
            out.append(f"by {escape(info['producer'])}")
        out.append(f"IR {info.get('ir_version')}")
        if info.get("runs_as_note") and info.get("format") in ("onnx13", "onnx18"):
            out.append(escape(info["runs_as_note"]))
        out.append("onnx.checker: ok" if info.get("checker", {}).get("ok") else "[red]onnx.checker: rejected[/]")
    if kind == "tfjs":
        w = info.get("weights", {})
        out.append(f"{w.get('shards', 0)} weight shard(s), {_bytes(w.get('bytes'))} in {w.get('groups', 0)} group(s)")
        if info.get("converted_by"):
            out.append(f"by {escape(str(info['converted_by']))}")
    return out
