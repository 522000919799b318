"""A worker's error, read: workers answer facts (data: kind, code and the code's fields, as
harness/schemas/protocol.schema.json defines them) and the sentence a person reads is formed here, once,
for workers of every language — so no worker carries English (or Python's list repr) for the protocol's
own errors, and a new language's worker is checked on structure alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("bad_request", "load_failed", "bad_input", "unsupported", "run_failed")


@dataclass(frozen=True)
class ErrorData:
    """The `data` of a JSON-RPC error a worker answered. `field` names the part of the request (a
    parameter, `inputs.<name>`, `outputs.<name>`); `detail` is a library's or a runtime's own words."""

    kind: str
    code: str
    field: str | None = None
    expected: Any = None
    got: Any = None
    path: str | None = None
    detail: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> ErrorData:
        return cls(kind=str(data.get("kind", "run_failed")), code=str(data["code"]), field=data.get("field"),
                   expected=data.get("expected"), got=data.get("got"), path=data.get("path"), detail=data.get("detail"))

    def sentence(self, runtime: str) -> str:
        """One line for a person; `runtime` is the worker's runtime name (some sentences name it)."""
        make = SENTENCES.get(self.code)
        if make is None:  # a code this harness does not know (a newer worker): its facts, as given
            facts = {k: v for k, v in vars(self).items() if v is not None and k not in ("kind", "code")}
            return f"{self.code}: {facts}" if facts else self.code
        return make(self, runtime)


# Python's spelling of the JSON types, in the sentences people know from the harness.
_PY_TYPE = {"string": "a str", "object": "a dict", "integer": "an int", "number": "a float", "boolean": "a bool", "array": "a list", "null": "None"}
_A_JSON = {"null": "null", "boolean": "a boolean", "number": "a number", "integer": "a number", "string": "a string", "array": "an array",
           "object": "an object"}


def _name(e: ErrorData) -> str:
    """The tensor's name out of `inputs.<name>` / `outputs.<name>` (a name may hold dots itself)."""
    return (e.field or "").partition(".")[2]


def _names(value: Any) -> list:
    return sorted(value) if isinstance(value, list) else value


def _dims(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _inputs(e: ErrorData, _: str) -> str:
    expected, got = _names(e.expected), _names(e.got)
    missing = sorted(set(expected) - set(got))
    unknown = sorted(set(got) - set(expected))
    return (f"inputs {got} do not match the signature: expected {expected}"
            + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else ""))


# One sentence per code of the schema (tests/test_protocol_kit.py checks that the two agree).
SENTENCES: dict[str, Callable[[ErrorData, str], str]] = {
    "parse_error": lambda e, _: f"parse error: {e.detail}",
    "invalid_request": lambda e, _: "invalid request: expected a JSON-RPC 2.0 object with a method",
    "unknown_method": lambda e, _: f"unknown method {e.got!r}: expected one of {e.expected}",
    "invalid_params": lambda e, _: "params must be an object",
    "missing_param": lambda e, _: f"missing parameter {e.field!r}",
    "wrong_param_type": lambda e, _: f"parameter {e.field!r} must be {_PY_TYPE.get(e.expected, e.expected)}",
    "out_of_range": lambda e, _: f"{e.field} must be >= {(e.expected or {}).get('minimum')}, got {e.got}",
    "unknown_handle": lambda e, _: f"unknown handle {e.got!r}: expected one of {_names(e.expected)}",
    "format_not_taken": lambda e, rt: f"runtime {rt} does not load format {e.got!r}: expected one of {e.expected}",
    "device_not_available": lambda e, rt: f"runtime {rt} has no device {e.got!r}: expected one of {e.expected}",
    "artifact_missing": lambda e, _: f"missing artifact: {e.path} does not exist",
    "artifact_unreadable": lambda e, _: f"unreadable artifact: {e.path} ({e.detail})",
    "artifact_not_json": lambda e, _: f"corrupt artifact: {e.path} is not valid JSON ({e.detail})",
    "artifact_not_object": lambda e, _: f"corrupt artifact: {e.path} is not a JSON object (it holds {_A_JSON.get(e.got, e.got)})",
    "format_mismatch": lambda e, _: f"artifact {e.path} is format {e.got!r}, expected {e.expected!r}",
    "export_failed": lambda e, _: f"artifact {e.path} failed to export: {e.detail}",
    "model_file_missing": lambda e, _: f"missing artifact file: {e.path} does not exist",
    "unknown_signature": lambda e, _: f"SavedModel {e.path} has no signature {e.got!r}: expected one of {_names(e.expected)}",
    "missing_input": _inputs,
    "unknown_input": _inputs,
    "input_file_missing": lambda e, _: f"input {_name(e)!r}: file {e.path} does not exist",
    "input_not_npy": lambda e, _: f"input {_name(e)!r}: {e.path} is not a valid .npy file ({e.detail})",
    "wrong_dtype": lambda e, _: f"input {_name(e)!r} has dtype {e.got}, expected {e.expected}",
    "wrong_shape": lambda e, _: f"input {_name(e)!r} has shape {_dims(e.got)}, expected {_dims(e.expected)}",
    "dtype_not_read": lambda e, _: f"input {_name(e)!r} has dtype {e.got}, which this worker does not read",
    "output_dir_unwritable": lambda e, _: f"cannot create output_dir {e.path}: {e.detail}",
    "missing_output": lambda e, _: f"runtime returned {_names(e.got)}, missing output {e.expected!r} ({_name(e)!r})",
    "output_unwritable": lambda e, _: f"cannot write output {_name(e)!r} to {e.path}: {e.detail}",
    "library_error": lambda e, _: f"{e.detail}",
    "runtime_refused": lambda e, _: f"{e.detail}",
    "internal_error": lambda e, _: f"internal error: {e.detail}",
}
