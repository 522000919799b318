"""The worker's answers as typed messages, parsed once at the client (harness/runners/client.py).

The protocol's JSON Schema (harness/schemas/protocol.schema.json) defines every answer; the kit
(tests/test_protocol_kit.py) validates every worker against it. Here each answer the harness reads is
turned into a dataclass, checking what the harness relies on: an answer without it is the worker's
fault (ProtocolViolation, blamed on its runtime), never a KeyError deep in the engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Malformed(ValueError):
    """What is missing or of the wrong type in an answer (the client turns it into a ProtocolViolation)."""


def _field(result: dict, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = result.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        got = json.dumps(value)[:60] if key in result else "missing"
        raise Malformed(f"field {key!r} is {got} (expected {what})")
    return value


def _object(result: Any, keys: list[str]) -> dict:
    if not isinstance(result, dict):
        raise Malformed(f"expected an object with {keys}, got {json.dumps(result)[:100]}")
    return result


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a loaded model as the worker sees it (shape None: unknown rank)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    @classmethod
    def parse(cls, value: Any) -> TensorInfo:
        item = _object(value, ["name", "dtype", "shape"])
        shape = item.get("shape")
        return cls(str(item.get("name")), str(item.get("dtype")), tuple(shape) if isinstance(shape, list) else None)


@dataclass(frozen=True)
class InfoReply:
    """`info`: the runtime as its worker names it, and the formats it takes (the rest stays the pool's
    record of the worker, kept whole for run.json)."""

    runtime: str | None
    formats: tuple[str, ...]

    @classmethod
    def parse(cls, result: Any) -> InfoReply:
        result = _object(result, ["formats"])
        formats = _field(result, "formats", list, "a list")
        runtime = result.get("runtime")
        return cls(runtime if isinstance(runtime, str) else None, tuple(str(f) for f in formats))


@dataclass(frozen=True)
class LoadReply:
    """`load`: the handle of the loaded model and the time it took (artifact to ready session)."""

    handle: str
    load_ns: float
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    @classmethod
    def parse(cls, result: Any) -> LoadReply:
        result = _object(result, ["handle", "load_ns"])
        handle = _field(result, "handle", str, "a string")
        load_ns = _field(result, "load_ns", (int, float), "a number")
        tensors = {k: tuple(TensorInfo.parse(t) for t in result.get(k) or []) for k in ("inputs", "outputs")}
        return cls(handle, load_ns, tensors["inputs"], tensors["outputs"])

    @property
    def load_ms(self) -> float:
        return self.load_ns / 1e6


@dataclass(frozen=True)
class RunReply:
    """`run`: the .npy file of each output (under the signature's names), the cold first call, the
    timed samples (ns), and the worker's peak resident memory where it can tell."""

    outputs: dict[str, str]
    first_ns: float
    samples_ns: tuple[float, ...]
    peak_rss_bytes: int | None = None

    @classmethod
    def parse(cls, result: Any) -> RunReply:
        result = _object(result, ["outputs", "first_ns", "samples_ns"])
        outputs = _field(result, "outputs", dict, "an object")
        first_ns = _field(result, "first_ns", (int, float), "a number")
        samples = _field(result, "samples_ns", list, "a list")
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in samples):
            raise Malformed(f"field 'samples_ns' is {json.dumps(samples)[:60]} (expected a list of numbers)")
        if not all(isinstance(p, str) for p in outputs.values()):
            raise Malformed(f"field 'outputs' is {json.dumps(outputs)[:60]} (expected an object of .npy paths)")
        rss = result.get("peak_rss_bytes")
        return cls(dict(outputs), first_ns, tuple(samples), rss if isinstance(rss, int) and not isinstance(rss, bool) else None)

    def with_first(self, first_ns: float) -> RunReply:
        """The same answer with another cold call (a calibrated benchmark's first call was its probe's)."""
        return RunReply(self.outputs, first_ns, self.samples_ns, self.peak_rss_bytes)


# The answers the client parses, by method: the rest (unload, shutdown) carry nothing the harness reads.
Reply = InfoReply | LoadReply | RunReply
PARSERS: dict[str, Callable[[Any], Reply]] = {"info": InfoReply.parse, "load": LoadReply.parse, "run": RunReply.parse}
