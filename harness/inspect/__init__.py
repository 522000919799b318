"""`harness inspect MODEL`: what a model file is, what it takes and gives, and where it can run —
read from the file, never by running it. One reader per format (savedmodel, frozen, keras, h5, tflite,
onnx, tfjs: `read(path)` picks it); harness.inspect.runs adds where it runs (`inspect(path)`: the runtime
table, the formats `harness check` exports to, the known deviations); harness.inspect.render prints it.
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

from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.inspect.common import EXPECTED, KIND_WORDS, KINDS, kind_of, size_of
from harness.inspect.frozen import read_frozen
from harness.inspect.h5 import read_h5
from harness.inspect.keras import read_keras
from harness.inspect.onnx import read_onnx
from harness.inspect.savedmodel import read_savedmodel
from harness.inspect.tfjs import read_tfjs
from harness.inspect.tflite import read_tflite

__all__ = ["EXPECTED", "KINDS", "READERS", "read"]


READERS = {
    "savedmodel": read_savedmodel, "keras": read_keras, "h5": read_h5, "tflite": read_tflite,
    "onnx": read_onnx, "tfjs": read_tfjs, "frozen_graph": read_frozen,
}


def read(path: Path, signature: str | None = None, tag: str | None = None) -> dict:
    """What the file at `path` is, takes and gives, read by its format's reader, as a JSON-ready dict (the
    package's docstring, less `runs_on`: harness.inspect.runs adds where it runs). `signature` and `tag`
    narrow a SavedModel to one signature and tag set (`signature` also picks a TFLite signature). Raises
    HarnessError (one line naming the path and what was expected) for a missing path, a kind it does not
    know and a file that does not parse."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected {EXPECTED})")
    kind, main = kind_of(path)
    if tag is not None and kind != "savedmodel":
        raise HarnessError(f"--tag applies to a SavedModel folder: {path} is a {KIND_WORDS[kind]} (expected a SavedModel folder)")
    if signature is not None and kind not in ("savedmodel", "tflite"):
        raise HarnessError(f"--signature applies to a SavedModel folder or a .tflite file: {path} is a {KIND_WORDS[kind]} "
                           "(expected a SavedModel folder or a .tflite file)")
    info: dict[str, Any] = {"path": str(path), "kind": kind, "format": None, "size_bytes": size_of(main if kind != "savedmodel" else main.parent),
                            "signatures": [], "problems": []}
    READERS[kind](main, info, signature, tag)
    return info
