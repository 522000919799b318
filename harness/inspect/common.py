"""What every format reader of `harness inspect` shares: the kinds of model file, the shape of the
`info` dict they fill (tensors, counts, problems), and the words of its messages."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
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


KIND_WORDS = {"savedmodel": "SavedModel", "keras": ".keras file", "h5": ".h5 file", "tflite": ".tflite file",
               "onnx": ".onnx file", "tfjs": "TF.js model.json", "frozen_graph": "frozen graph .pb"}


def kind_of(path: Path) -> tuple[str, Path]:
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


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def corrupt(kind: str, path: Path, why: str, expected: str) -> HarnessError:
    why = " ".join(str(why).split())
    return HarnessError(f"corrupt {kind}: {path} {why} (expected {expected})")


def checked(check: Callable[[Path, str], None], path: Path, fmt: str, kind: str, how: str, expected: str) -> None:
    """The format's own artifact check (harness/export/validate.py) on a user's file; its fault becomes
    the one `corrupt` line that says what the file is not (`how`: "is not a complete GraphDef")."""
    from harness.export.validate import ConverterFault

    try:
        check(path, fmt)
    except ConverterFault as e:
        raise corrupt(kind, path, f"{how}: {e.summary}", expected) from None


def first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def tensor(name: str, dtype: str | None, shape: list | None, **extra) -> dict:
    out: dict[str, Any] = {"name": name, "dtype": dtype or "unknown", "shape": shape}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def counted(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def problem(info: dict, message: str, affects: Iterable[str] = ()) -> None:
    info["problems"].append({"message": message, "affects": list(affects)})


def runtimes_taking(formats: Iterable[str]) -> list[str]:
    from harness.runners.table import RUNTIMES

    wanted = set(formats)
    return [name for name, spec in RUNTIMES.items() if wanted & set(spec.formats)]


def clip(text: str, limit: int) -> str:
    """The first sentence of `text` on one line, cut at a word before `limit` characters."""
    text = " ".join(text.split())
    text = re.split(r"(?<=[.;])\s", text)[0].rstrip(".;")
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def shape_text(shape: list | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
