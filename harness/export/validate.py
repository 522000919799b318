"""Validation of what converters emit, before any runtime sees it.

A converter that writes an invalid artifact must be blamed once, at stage `validate`, with the op it got
wrong — not once per runtime as `load_failed`. `validate(spec, folder, art)` checks the artifact with
the format's own reference tooling (the check its FormatSpec names) and raises `ConverterFault` with a
one-line summary, the whole upstream message as `detail`, and the offending op where there is one:

- ONNX: `onnx.checker.check_model` (path form, so models with external data and over 2 GB work) and a
  walk over every node, subgraph bodies (`If`/`Loop`/`Scan`) and model-local functions included:
  each node must be in a standard ONNX domain and, in that domain, have a schema at the opset the model
  declares. The checker alone is not enough: it silently accepts nodes of domains it has no schemas for
  (`com.microsoft`), and its message for an unknown op is about a "node spec", not about the converter.
- TFLite: LiteRT's own `Interpreter(...).allocate_tensors()` (it runs the flatbuffer verifier and
  prepares every node; nothing is run).
- TF.js: `model.json` parses, and every weight shard exists, stays inside the model folder and the
  shards hold exactly the bytes the `weights` entries describe.
- SavedModel, Keras, `.h5`, frozen graph: cheap structural checks (main file present, non-empty, and
  not truncated where that can be told without TensorFlow).
- Checkpoint: the manifest names the code, the `.index` table is whole, every data shard exists.

This module never imports TensorFlow (the checks use onnx, ai_edge_litert, h5py and the standard
library), so validating costs milliseconds and works in a process that has no TensorFlow.
"""

from __future__ import annotations

import glob
import json
import mmap
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from harness.artifact import Artifact

if TYPE_CHECKING:
    from harness.export import FormatSpec


class ConverterFault(Exception):
    """A converter emitted an invalid artifact. `op` names the offending op (or None), `detail` is the
    whole upstream message.

    `culprit` says who is to blame, in the words of the verdict's stage/culprit pair:
    - `"converter"` (the default): the artifact is invalid for every consumer of the format — an op
      that is not in the format, a truncated file, a weight manifest that does not match its shards.
    - `"environment"`: the artifact is valid, but needs something this installation lacks. The one case
      today is TFLite Select TF ops ("Flex"): the converter was allowed to emit them
      (`SELECT_TF_OPS`), the TFLite format defines them, and a LiteRT linked with the Flex delegate runs
      them; the `ai_edge_litert` wheel is not linked with it. Blaming the converter would be wrong on a
      machine with the delegate, and blaming the runtime would be wrong too: it refuses cleanly, as
      documented. It is still raised here, at export, because no runtime of this installation can load
      the artifact, and saying so once with the op names beats N identical `load_failed`s.
    - `"harness"`: the exporter's own record is wrong (no model path, or one outside its folder).
    """

    def __init__(self, summary: str, detail: str = "", op: str | None = None, culprit: str = "converter"):
        summary = " ".join(summary.split())  # one line, whatever the upstream message looked like
        super().__init__(summary)
        self.summary = summary
        self.detail = detail or summary
        self.op = op
        self.culprit = culprit


def validate(spec: FormatSpec, folder: Path, art: Artifact) -> None:
    """Raise ConverterFault if the artifact in `folder` (art.path relative to it) is not a valid artifact
    of the format `spec` (the registry's entry: its layout and its check). Never imports TensorFlow."""
    fmt = spec.base
    if spec.check is None:
        raise ConverterFault(f"format {fmt} has no check in the format registry (harness/export/__init__.py FORMATS)", culprit="harness")
    folder = Path(folder)
    if not art.path:
        raise ConverterFault(f"the {fmt} export recorded no model path", culprit="harness")
    path = folder / art.path
    if not _inside(path, folder):
        raise ConverterFault(f"the {fmt} export's model path {art.path} leaves its artifact folder", culprit="harness")
    if art.path != spec.layout:
        raise ConverterFault(f"the {fmt} export recorded model path {art.path}, expected {spec.layout} (the format registry's layout)",
                             culprit="harness")
    spec.check(path, fmt)


# --- helpers ---------------------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links followed, lies in `folder` (or is it)."""
    return path.resolve().is_relative_to(folder.resolve())


def _first_line(message: object) -> str:
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _plural(items: list[str], one: str, many: str) -> str:
    return f"{', '.join(items)}, {one if len(items) == 1 else many}"


def _main_file(path: Path, what: str) -> None:
    """The converter wrote the file and it is not empty."""
    if not path.is_file():
        raise ConverterFault(f"converter wrote no {what} ({path.name} is missing)")
    if path.stat().st_size == 0:
        raise ConverterFault(f"converter wrote an empty {what} ({path.name} has 0 bytes)")


def _protobuf_wellformed(path: Path, what: str) -> None:
    """Walk the top-level fields of a serialised protobuf message (no schema needed): a file cut short
    ends inside a field. Catches truncation of SavedModel and GraphDef files without TensorFlow."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        n, i = len(buf), 0

        def varint() -> int:
            nonlocal i
            shift = value = 0
            while True:
                if i >= n or shift > 63:
                    raise ValueError(f"a varint runs past byte {i}")
                b = buf[i]
                i += 1
                value |= (b & 0x7F) << shift
                if b < 0x80:
                    return value
                shift += 7

        try:
            while i < n:
                start = i
                tag = varint()
                field, wire = tag >> 3, tag & 7
                if field == 0:
                    raise ValueError(f"field number 0 at byte {start}")
                if wire == 0:
                    varint()
                elif wire == 1:
                    i += 8
                elif wire == 2:
                    length = varint()  # not `i += varint()`: that adds to the value of i before the call
                    i += length
                elif wire == 5:
                    i += 4
                else:  # groups (3, 4) are not used by TensorFlow's protos; 6, 7 do not exist
                    raise ValueError(f"wire type {wire} at byte {start}")
                if i > n:
                    raise ValueError(f"field {field} at byte {start} ends at byte {i}, past the end of the file")
        except ValueError as e:
            raise ConverterFault(f"{path.name} is not a complete {what}: {e} ({n} bytes)", detail=str(e)) from None


# --- SavedModel, Keras, h5, frozen graph -----------------------------------------------------------


def check_savedmodel(path: Path, fmt: str) -> None:
    if not path.is_dir():
        raise ConverterFault(f"converter wrote no SavedModel folder ({path.name} is missing)")
    pb, pbtxt = path / "saved_model.pb", path / "saved_model.pbtxt"
    if pbtxt.is_file() and not pb.exists():
        return _main_file(pbtxt, "SavedModel")
    _main_file(pb, "SavedModel")
    _protobuf_wellformed(pb, "SavedModel protobuf")


def check_frozen(path: Path, fmt: str) -> None:
    _main_file(path, "frozen graph")
    _protobuf_wellformed(path, "GraphDef protobuf")


def check_keras(path: Path, fmt: str) -> None:
    _main_file(path, ".keras file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ConverterFault(f"{path.name} is not a .keras archive: {_first_line(e)}", detail=str(e)) from None
    if "config.json" not in names:
        raise ConverterFault(f"{path.name} has no config.json: not a Keras 3 model archive", detail=f"members: {sorted(names)}")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_h5(path: Path, fmt: str) -> None:
    _main_file(path, ".h5 file")
    try:
        import h5py
    except ImportError:  # h5py comes with Keras; without it, the signature is what can be checked
        with path.open("rb") as f:
            if f.read(8) != HDF5_SIGNATURE:
                raise ConverterFault(f"{path.name} is not an HDF5 file (no HDF5 signature)") from None
        return
    try:
        with h5py.File(path, "r") as f:
            has_config = "model_config" in f.attrs
    except OSError as e:  # h5py reports truncation as "truncated file: eof = ..., stored_eof = ..."
        raise ConverterFault(f"{path.name} is not a readable HDF5 file: {_first_line(e)}", detail=str(e)) from None
    if not has_config:
        raise ConverterFault(f"{path.name} has no model_config attribute: a weights-only file, not a Keras model")


# --- ONNX -----------------------------------------------------------------------------------------

# The domains the ONNX standard defines operators in ('' and 'ai.onnx' are the same default domain).
ONNX_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview")
# `com.microsoft` holds ONNX Runtime's contrib ops. Every ONNX consumer in the harness is an ONNX
# Runtime today, so such a node would load; it is refused all the same, because the formats promise
# standard ONNX at an opset (`onnx13`, `onnx18`), and tf2onnx only emits contrib ops when asked for
# them (`extra_opset`), which the exporter never does — a contrib op in the output is a converter fault.
ORT_CONTRIB_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class _NodeIssue:
    op: str
    domain: str
    kind: str  # "foreign" (no such op), "too_new" (exists from a later opset), "contrib", "no_opset", "other_domain"
    where: str
    since: int | None = None
    declared: int | None = None


def opset_map(opset_import: Iterable) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in opset_import}


def _first_since(op: str, domain: str) -> int | None:
    """The earliest opset in which ONNX defines `op`, or None if it never does."""
    import onnx.defs

    if not onnx.defs.has(op, domain):
        return None
    return min(s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op and s.domain == domain)


def node_issues(nodes: Iterable, opsets: dict[str, int], local: set[tuple[str, str]], where: str) -> list[_NodeIssue]:
    import onnx
    import onnx.defs

    issues: list[_NodeIssue] = []
    for node in nodes:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        label = f"{where}, node {node.name or '(unnamed)'}"
        if (node.domain, node.op_type) in local:
            pass  # a call of a function the model defines itself; its body is walked separately
        elif domain in ONNX_DOMAINS:
            declared = opsets.get(domain)
            if declared is None:
                issues.append(_NodeIssue(node.op_type, domain, "no_opset", label))
            elif not onnx.defs.has(node.op_type, declared, domain):
                since = _first_since(node.op_type, domain)
                kind = "foreign" if since is None else "too_new"
                issues.append(_NodeIssue(node.op_type, domain, kind, label, since, declared))
        elif domain == ORT_CONTRIB_DOMAIN:
            issues.append(_NodeIssue(node.op_type, domain, "contrib", label))
        else:
            issues.append(_NodeIssue(node.op_type, domain, "other_domain", label))
        for attr in node.attribute:  # If/Loop/Scan bodies are graphs held in attributes
            if attr.type == onnx.AttributeProto.GRAPH:
                issues += node_issues(attr.g.node, opsets, local, f"{label} attribute {attr.name}")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for k, g in enumerate(attr.graphs):
                    issues += node_issues(g.node, opsets, local, f"{label} attribute {attr.name}[{k}]")
    return issues


def _qualified(issue: _NodeIssue) -> str:
    return issue.op if not issue.domain else f"{issue.domain}::{issue.op}"


def onnx_summary(issues: list[_NodeIssue]) -> str:
    parts = []
    for kind in ("foreign", "too_new", "no_opset", "contrib", "other_domain"):
        these = [i for i in issues if i.kind == kind]
        names = list(dict.fromkeys(_qualified(i) for i in these))
        if not names:
            continue
        if kind == "foreign":
            parts.append("converter emitted " + _plural(names, "not an ONNX op", "not ONNX ops"))
        elif kind == "too_new":
            firsts = list(dict.fromkeys(f"{_qualified(i)} (ONNX opset {i.since}+)" for i in these))
            parts.append(f"converter emitted {', '.join(firsts)}, newer than the model's opset {these[0].declared}")
        elif kind == "no_opset":
            parts.append(f"converter emitted {', '.join(names)} without importing an opset for its domain")
        elif kind == "contrib":
            parts.append("converter emitted " + _plural(names, "an ONNX Runtime contrib op", "ONNX Runtime contrib ops")
                         + ", not standard ONNX")
        else:
            parts.append("converter emitted " + _plural(names, "not an ONNX op", "not ONNX ops") + " (not an ONNX domain)")
    return "; ".join(parts)


def check_onnx(path: Path, fmt: str) -> None:
    import onnx
    import onnx.checker

    _main_file(path, "ONNX model")
    checker_msg = None
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:  # ValidationError, or whatever else the checker raises on a broken file
        checker_msg = str(e) if isinstance(e, onnx.checker.ValidationError) else f"{type(e).__name__}: {e}"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        message = checker_msg or f"{type(e).__name__}: {e}"
        raise ConverterFault(f"{path.name} is not a readable ONNX model: {_first_line(message)}",
                             detail=f"{message}\n(onnx.load: {type(e).__name__}: {e})") from None

    opsets = opset_map(model.opset_import)
    local = {(f.domain, f.name) for f in model.functions}
    issues = node_issues(model.graph.node, opsets, local, "main graph")
    for f in model.functions:
        issues += node_issues(f.node, {**opsets, **opset_map(f.opset_import)}, local, f"function {f.domain}::{f.name}")
    if issues:
        listing = "\n".join(f"  {_qualified(i)} ({i.kind}) at {i.where}" for i in issues)
        detail = (f"onnx.checker: {checker_msg}\n" if checker_msg else "onnx.checker: passed\n") + f"offending nodes:\n{listing}"
        raise ConverterFault(onnx_summary(issues), detail=detail, op=issues[0].op)
    if checker_msg:
        op = re.search(r"OpType: (\S+)", checker_msg)
        raise ConverterFault(f"ONNX checker rejects {path.name}: {_first_line(checker_msg)}", detail=checker_msg,
                             op=op.group(1) if op else None)
    wanted = {"onnx13": 13, "onnx18": 18}.get(fmt)
    if wanted is not None and opsets.get("") != wanted:
        raise ConverterFault(f"converter wrote ONNX opset {opsets.get('')}, the format {fmt} is opset {wanted}")


# --- TFLite ---------------------------------------------------------------------------------------

FLEX_PREFIX = "Flex"  # the converter names each Select TF op "Flex" + the TensorFlow op name


def _custom_ops(path: Path) -> list[str]:
    """The custom op codes the flatbuffer declares (every subgraph's ops are in one table), in file
    order; [] if the file does not parse."""
    try:
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
        codes = (model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength()))
        return list(dict.fromkeys(c.decode("utf-8", "replace") for c in codes if c))
    except Exception:
        return []


def check_tflite(path: Path, fmt: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _main_file(path, "TFLite model")
    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as e:
        message = str(e)
        failed = re.search(r"Node number \d+ \((\w+)\) failed to prepare", message)
        unresolved = re.search(r"unresolved custom op: (\w+)", message)
        found = unresolved or failed
        named = found.group(1) if found else None
        if "Select TensorFlow op" in message or "Flex delegate" in message or (named or "").startswith(FLEX_PREFIX):
            flex = [op for op in _custom_ops(path) if op.startswith(FLEX_PREFIX)]
            flex = flex or [op for op in re.findall(r"\b(Flex\w+)", message)]
            flex = list(dict.fromkeys(flex))
            op = named if named in flex else (flex[0] if flex else named)
            raise ConverterFault(
                f"converter emitted Select TF ops ({', '.join(flex) or 'unnamed'}) that this LiteRT build "
                "cannot run (no Flex delegate)",
                detail=message, op=op, culprit="environment") from None
        raise ConverterFault(f"LiteRT cannot load {path.name}: {_first_line(message)}", detail=message, op=named) from None


# --- TF.js ----------------------------------------------------------------------------------------

# Bytes per element of each TF.js weight dtype (tfjs-core `DataType`, and the quantised storage types).
TFJS_DTYPE_BYTES = {
    "float32": 4, "int32": 4, "complex64": 8, "float16": 2, "uint16": 2, "int16": 2,
    "uint8": 1, "int8": 1, "bool": 1,
}
TFJS_FORMATS = {"tfjs_graph": "graph-model", "tfjs_layers": "layers-model"}


def shard_path(model_dir: Path, shard: object, group: int) -> Path:
    """The shard's file, refused if the manifest points anywhere but into the model folder: TF.js
    resolves paths against model.json's URL, and no worker follows a path out of its artifact."""
    if not isinstance(shard, str) or not shard:
        raise ConverterFault(f"TF.js weightsManifest[{group}] lists a shard path that is not a file name: {shard!r}")
    if shard.startswith(("/", "\\")) or PureWindowsPath(shard).drive or "://" in shard:
        raise ConverterFault(f"TF.js weight shard path {shard} is absolute, not relative to model.json")
    if ".." in PurePosixPath(shard.replace("\\", "/")).parts:
        raise ConverterFault(f"TF.js weight shard path {shard} leaves the model folder")
    path = model_dir / shard
    if not _inside(path, model_dir):  # a link out of the folder
        raise ConverterFault(f"TF.js weight shard path {shard} leaves the model folder (through a link)")
    return path


def _weight_bytes(weight: object, group: int) -> int | None:
    """Bytes one weight entry takes in its group's shards; None for string weights, whose size the
    manifest does not say (each element is a length prefix and its bytes)."""
    if not isinstance(weight, dict):
        raise ConverterFault(f"TF.js weightsManifest[{group}] has a weight entry that is not an object: {weight!r}")
    name, shape, dtype = weight.get("name"), weight.get("shape"), weight.get("dtype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ConverterFault(f"TF.js weight {name} has shape {shape!r}, expected a list of non-negative integers")
    if dtype == "string":
        return None
    quantization = weight.get("quantization")
    if isinstance(quantization, dict):
        dtype = quantization.get("dtype")  # stored in the quantised type, dequantised at load
    if dtype not in TFJS_DTYPE_BYTES:
        raise ConverterFault(f"TF.js weight {name} has dtype {dtype!r}, expected one of {', '.join(TFJS_DTYPE_BYTES)}")
    count = 1
    for d in shape:
        count *= d
    return count * TFJS_DTYPE_BYTES[dtype]


def check_tfjs(path: Path, fmt: str) -> None:
    _main_file(path, "TF.js model.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConverterFault(f"TF.js {path.name} is not valid JSON: {e}", detail=str(e)) from None
    if not isinstance(meta, dict):
        raise ConverterFault(f"TF.js {path.name} is not a JSON object")
    expected = TFJS_FORMATS[fmt]
    if meta.get("format", expected) != expected:
        raise ConverterFault(f"TF.js {path.name} says format {meta.get('format')!r}, expected {expected!r}")
    if not isinstance(meta.get("modelTopology"), dict):
        raise ConverterFault(f"TF.js {path.name} has no modelTopology")
    manifest = meta.get("weightsManifest", [])
    if not isinstance(manifest, list):
        raise ConverterFault(f"TF.js {path.name} weightsManifest is not a list")
    model_dir = path.parent
    for g, group in enumerate(manifest):
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) or not isinstance(group.get("weights", []), list):
            raise ConverterFault(f"TF.js weightsManifest[{g}] needs a list of paths and a list of weights")
        held = 0
        for shard in group["paths"]:
            file = shard_path(model_dir, shard, g)
            if not file.is_file():
                raise ConverterFault(f"TF.js weight shard {shard} listed in {path.name} is missing")
            held += file.stat().st_size
        sizes = [_weight_bytes(w, g) for w in group.get("weights", [])]
        if any(s is None for s in sizes):
            continue  # string weights have no size in the manifest: this group's total cannot be checked
        needed = sum(sizes)  # type: ignore[arg-type]
        if held != needed:
            raise ConverterFault(
                f"TF.js weights group {g} holds {held} bytes in {len(group['paths'])} shard(s), "
                f"its {len(sizes)} weights need {needed} bytes",
                detail=f"shards: {group['paths']}; weights: {[(w.get('name'), w.get('shape'), w.get('dtype')) for w in group['weights']]}")


# --- checkpoints ------------------------------------------------------------------------------------

# The last 8 bytes of a TensorFlow table (a checkpoint's .index), little-endian.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")


def check_checkpoint(path: Path, fmt: str) -> None:
    """A checkpoint folder: checkpoint.json names the code and the prefix; the .index is a whole table
    (its footer ends in the table magic), every data shard it is split into exists, and a TF1 Saver's
    .meta graph is a complete protobuf. Values are checked by TensorFlow (checksums) when restored."""
    if not path.is_dir():
        raise ConverterFault(f"converter wrote no checkpoint folder ({path.name} is missing)")
    manifest = path / "checkpoint.json"
    _main_file(manifest, "checkpoint manifest")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        style, module, prefix = meta["style"], meta["module"], meta["prefix"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConverterFault(f"checkpoint.json is not a checkpoint manifest: {_first_line(e) if not isinstance(e, KeyError) else f'no {e}'}") from None
    if style not in ("tf1", "tf2") or not str(module).startswith("harness_fixtures.") or not _inside(path / str(prefix), path):
        raise ConverterFault(f"checkpoint.json names style {style!r}, module {module!r}, prefix {prefix!r}: expected tf1 or tf2, "
                             "a module under harness_fixtures and a prefix inside the folder")
    index = path / f"{prefix}.index"
    _main_file(index, "checkpoint index")
    with index.open("rb") as f:
        f.seek(max(0, index.stat().st_size - 8))
        if f.read(8) != _TABLE_MAGIC:
            raise ConverterFault(f"{index.name} is not a complete checkpoint index: it does not end in the table magic "
                                 f"({index.stat().st_size} bytes)")
    shards = sorted(path.glob(f"{glob.escape(str(prefix))}.data-*-of-*"))
    if not shards:
        raise ConverterFault(f"converter wrote no checkpoint data ({prefix}.data-*-of-* is missing)")
    count = int(shards[0].name.rsplit("-of-", 1)[1])
    missing = [f"{prefix}.data-{i:05d}-of-{count:05d}" for i in range(count) if not (path / f"{prefix}.data-{i:05d}-of-{count:05d}").is_file()]
    if missing:
        raise ConverterFault(f"checkpoint data shard {_plural(missing, 'is', 'are')} missing")
    if style == "tf1":
        graph = path / f"{prefix}.meta"
        _main_file(graph, "checkpoint meta graph")
        _protobuf_wellformed(graph, "MetaGraphDef protobuf")


