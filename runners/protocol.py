"""The worker side of the runner protocol (docs/architecture.md): JSON-RPC 2.0, one object per line on
stdin/stdout, tensors as `.npy` files. A runtime module subclasses `Runtime`; this module does the
rest — framing, validation of inputs against `artifact.json`, timing, name mapping, errors.

Only the standard library and NumPy are imported here, so a worker's start-up cost is its runtime's.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1


_UNSET: Any = object()


class ProtocolError(Exception):
    """An error answered to the client: `kind` is one of bad_request, load_failed, bad_input,
    unsupported, run_failed; `code` and its fields are the facts (harness/schemas/protocol.schema.json),
    from which the harness forms the sentence. A runtime's own refusal is `ProtocolError(kind, words)`:
    code runtime_refused, its words the detail."""

    def __init__(self, kind: str, detail: str | None = None, *, code: str = "runtime_refused", field: Any = _UNSET,
                 expected: Any = _UNSET, got: Any = _UNSET, path: Any = _UNSET):
        super().__init__(detail if detail is not None else code)
        self.kind, self.code, self.detail = kind, code, detail
        # A fact given as None is a null (artifact.json naming no format), not an absent fact.
        self.facts = {k: v for k, v in (("field", field), ("expected", expected), ("got", got), ("path", path)) if v is not _UNSET}

    def data(self) -> dict:
        has_detail = self.detail is not None or self.code in _DETAIL_MAY_BE_NULL
        return {"kind": self.kind, "code": self.code, **self.facts, **({"detail": self.detail} if has_detail else {})}


_DETAIL_MAY_BE_NULL = {"export_failed"}  # the export's error, which a failed export may lack


class Session(ABC):
    """A loaded model. `run` takes and returns arrays keyed by the format's stored names."""

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference, including whatever makes the result readable on the host."""

    def close(self) -> None:  # noqa: B027 - optional hook: most sessions free with the process
        """Free what the session holds (unload)."""

    def intermediates(self) -> list[tuple[dict, np.ndarray]]:
        """After a run of a session loaded with `intermediates`: every tensor an operator wrote, in the
        order the operators ran, as (facts, value); facts: name, op (the operator's type), index (the
        runtime's tensor index), scale and zero_point (null unless quantised)."""
        raise NotImplementedError


class Runtime(ABC):
    name: str = ""
    formats: tuple[str, ...] = ()

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Version of every library the runtime loaded."""

    def devices(self) -> list[str]:
        return ["cpu"]

    def settings(self) -> dict:
        """What this worker really runs with where a variant can change it (providers, kernels,
        optimisation level, ISA cap), as `info` reports it; empty when nothing can change."""
        return {}

    def address(self, fmt: str) -> str:
        """Which artifact.json field names tensors for this runtime: `stored_name` (the format's own
        names) or `name` (the signature's keys, for runtimes that call signatures by key)."""
        return "stored_name"

    @abstractmethod
    def load(self, artifact: dict, model_path: Path, fmt: str, device: str, threads: int) -> Session:
        """Ready a session for one artifact; raise ProtocolError('load_failed', ...) on failure."""

    def load_keeping(self, artifact: dict, model_path: Path, fmt: str, device: str, threads: int) -> Session:
        """`load` with every intermediate tensor kept readable after a run (load's `intermediates`: the
        harness's search for the first diverging node); a runtime that cannot keep them refuses."""
        raise ProtocolError("unsupported", f"runtime {self.name} cannot keep intermediate tensors (load's intermediates)")


class _Loaded:
    def __init__(self, session: Session, artifact: dict, address: str, keeping: bool = False):
        self.session = session
        self.inputs = artifact["inputs"]
        self.outputs = artifact["outputs"]
        self.address = address
        self.keeping = keeping  # loaded with `intermediates`: run answers them too


def _check_input(spec: dict, value: np.ndarray) -> None:
    field = f"inputs.{spec['name']}"
    # Strings travel as fixed-width bytes (`S<n>`, no pickle); the signature says only "bytes".
    if value.dtype.name != spec["dtype"] and not (spec["dtype"] == "bytes" and value.dtype.kind == "S"):
        raise ProtocolError("bad_input", code="wrong_dtype", field=field, expected=spec["dtype"], got=value.dtype.name)
    shape = spec.get("shape")
    if shape is None:
        return
    if value.ndim != len(shape) or any(d is not None and d != v for d, v in zip(shape, value.shape)):
        raise ProtocolError("bad_input", code="wrong_shape", field=field, expected=shape, got=list(value.shape))


def _read_npy(path: str, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ProtocolError("bad_input", code="input_file_missing", field=f"inputs.{name}", path=path) from None
    except Exception as e:
        raise ProtocolError("bad_input", one_line(e), code="input_not_npy", field=f"inputs.{name}", path=path) from None


def read_json(path: Path, what: str) -> Any:
    """A runtime's JSON document at `path` (a checkpoint's manifest). Failures are load_failed
    ProtocolErrors in the runtime's words, naming it as `what`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProtocolError("load_failed", f"{what} does not exist") from None
    except ValueError as e:
        raise ProtocolError("load_failed", f"{what} is not valid JSON ({one_line(e)})") from None


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value, as the schema names them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class Worker:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.sessions: dict[str, _Loaded] = {}
        self.counter = 0

    # --- methods -------------------------------------------------------------------------------
    def info(self, _params: dict) -> dict:
        return {
            "runtime": self.runtime.name,
            "protocol": PROTOCOL_VERSION,
            "versions": self.runtime.versions(),
            "devices": self.runtime.devices(),
            "formats": list(self.runtime.formats),
            "settings": self.runtime.settings(),
            "pid": os.getpid(),
        }

    def load(self, params: dict) -> dict:
        folder = Path(_param(params, "artifact", str))
        fmt = _param(params, "format", str)
        device = params.get("device", "cpu")
        threads = int(params.get("threads", 0) or 0)
        keeping = params.get("intermediates", False)
        if not isinstance(keeping, bool):
            raise ProtocolError("bad_request", code="wrong_param_type", field="intermediates", expected="boolean", got=_json_type(keeping))
        if fmt not in self.runtime.formats:
            raise ProtocolError("unsupported", code="format_not_taken", field="format", expected=list(self.runtime.formats), got=fmt)
        if device not in self.runtime.devices():
            raise ProtocolError("unsupported", code="device_not_available", field="device", expected=self.runtime.devices(), got=device)
        meta_path = folder / "artifact.json"
        try:
            artifact = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ProtocolError("load_failed", code="artifact_missing", path=str(meta_path)) from None
        except ValueError as e:
            raise ProtocolError("load_failed", one_line(e), code="artifact_not_json", path=str(meta_path)) from None
        except OSError as e:
            raise ProtocolError("load_failed", one_line(e), code="artifact_unreadable", path=str(meta_path)) from None
        if not isinstance(artifact, dict):
            raise ProtocolError("load_failed", code="artifact_not_object", path=str(meta_path), expected="object", got=_json_type(artifact))
        if artifact.get("format") != fmt:
            raise ProtocolError("bad_request", code="format_mismatch", field="format", path=str(folder), expected=fmt, got=artifact.get("format"))
        if artifact.get("status") != "ok":
            raise ProtocolError("load_failed", artifact.get("error"), code="export_failed", path=str(folder))
        signature = params.get("signature") or artifact.get("signature", "serving_default")
        artifact["signature"] = signature
        model_path = folder / artifact["path"]
        if not model_path.exists():
            raise ProtocolError("load_failed", code="model_file_missing", path=str(model_path))
        start = time.perf_counter_ns()
        try:
            session = (self.runtime.load_keeping if keeping else self.runtime.load)(artifact, model_path, fmt, device, threads)
        except ProtocolError:
            raise
        except Exception as e:
            raise ProtocolError("load_failed", f"{type(e).__name__}: {one_line(e)}", code="library_error") from None
        load_ns = time.perf_counter_ns() - start
        self.counter += 1
        handle = f"h{self.counter}"
        self.sessions[handle] = _Loaded(session, artifact, self.runtime.address(fmt), keeping)

        def io(specs: list[dict]) -> list[dict]:
            return [{"name": s["name"], "dtype": s["dtype"], "shape": s["shape"]} for s in specs]

        return {"handle": handle, "inputs": io(artifact["inputs"]), "outputs": io(artifact["outputs"]), "load_ns": load_ns}

    def run(self, params: dict) -> dict:
        loaded = self._session(params)
        given = _param(params, "inputs", dict)
        output_dir = Path(_param(params, "output_dir", str))
        warmup, iterations = _count(params, "warmup", 0), _count(params, "iterations", 1)
        # Self-tests only: a busy-wait of delay_us inside each timed call (an injected slowdown).
        delay_ns = _count(params, "delay_us", 0) * 1000
        expected = {s["name"] for s in loaded.inputs}
        if set(given) != expected:
            raise ProtocolError("bad_input", code="missing_input" if expected - set(given) else "unknown_input", field="inputs",
                                expected=sorted(expected), got=sorted(given))
        feeds = {}
        for spec in loaded.inputs:
            value = _read_npy(given[spec["name"]], spec["name"])
            _check_input(spec, value)
            feeds[spec[loaded.address]] = value

        session = loaded.session
        try:
            start = time.perf_counter_ns()
            result = session.run(feeds)
            first_ns = time.perf_counter_ns() - start
            for _ in range(warmup):
                session.run(feeds)
            samples = []
            for _ in range(iterations):
                start = time.perf_counter_ns()
                session.run(feeds)
                if delay_ns:
                    until = time.perf_counter_ns() + delay_ns
                    while time.perf_counter_ns() < until:
                        pass
                samples.append(time.perf_counter_ns() - start)
        except ProtocolError:
            raise
        except Exception as e:
            raise ProtocolError("run_failed", f"{type(e).__name__}: {one_line(e)}", code="library_error") from None

        output_dir.mkdir(parents=True, exist_ok=True)
        outputs = {}
        for spec in loaded.outputs:
            key = spec[loaded.address]
            if key not in result:
                raise ProtocolError("run_failed", code="missing_output", field=f"outputs.{spec['name']}", expected=key, got=sorted(result))
            path = output_dir / f"{_safe(spec['name'])}.npy"
            np.save(path, np.ascontiguousarray(result[key]), allow_pickle=False)
            outputs[spec["name"]] = str(path)
        kept = []
        if loaded.keeping:
            # The tensors as the last call left them (every call computes the same from the same inputs).
            folder = output_dir / "intermediates"
            folder.mkdir(exist_ok=True)
            try:
                tensors = session.intermediates()
            except Exception as e:
                raise ProtocolError("run_failed", f"{type(e).__name__}: {one_line(e)}", code="library_error") from None
            for i, (facts, value) in enumerate(tensors):
                path = folder / f"{i:05d}.npy"
                value = np.ascontiguousarray(value)
                np.save(path, value, allow_pickle=False)
                kept.append({**facts, "dtype": value.dtype.name, "shape": list(value.shape), "path": str(path)})
        return {
            "outputs": outputs,
            "first_ns": first_ns,
            "samples_ns": samples,
            "peak_rss_bytes": peak_rss_bytes(),
            **({"intermediates": kept} if loaded.keeping else {}),
        }

    def unload(self, params: dict) -> dict:
        loaded = self._session(params)
        loaded.session.close()
        del self.sessions[params["handle"]]
        return {}

    def _session(self, params: dict) -> _Loaded:
        handle = _param(params, "handle", str)
        if handle not in self.sessions:
            raise ProtocolError("bad_request", code="unknown_handle", field="handle", expected=sorted(self.sessions), got=handle)
        return self.sessions[handle]

    # --- framing -------------------------------------------------------------------------------
    def serve(self, stdin=None, stdout=None) -> None:
        stdin = stdin or sys.stdin
        out = stdout or _protocol_stdout()
        methods = {"info": self.info, "load": self.load, "run": self.run, "unload": self.unload}
        for line in stdin:
            if not line.strip():
                continue
            req_id: Any = None
            try:
                try:
                    request = json.loads(line)
                except ValueError as e:
                    raise _RpcError(-32700, ProtocolError("bad_request", one_line(e), code="parse_error")) from None
                if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or "method" not in request:
                    raise _RpcError(-32600, ProtocolError("bad_request", code="invalid_request"))
                req_id = request.get("id")
                method = request["method"]
                params = request.get("params") or {}
                if method == "shutdown":
                    _write(out, {"jsonrpc": "2.0", "id": req_id, "result": {}})
                    return
                if method not in methods:
                    raise _RpcError(-32601, ProtocolError("bad_request", code="unknown_method", field="method", expected=METHODS, got=method))
                if not isinstance(params, dict):
                    raise _RpcError(-32602, ProtocolError("bad_request", code="invalid_params", field="params", expected="object", got=_json_type(params)))
                result = methods[method](params)
                _write(out, {"jsonrpc": "2.0", "id": req_id, "result": result})
            except _RpcError as e:
                _write(out, _error(req_id, e.code, e.error))
            except ProtocolError as e:
                _write(out, _error(req_id, -32000, e))
            except Exception as e:  # a bug in the worker: say so, keep serving
                traceback.print_exc(file=sys.stderr)
                _write(out, _error(req_id, -32603, ProtocolError("run_failed", f"{type(e).__name__}: {one_line(e)}", code="internal_error")))


METHODS = ["info", "load", "run", "unload", "shutdown"]


class _RpcError(Exception):
    """A framing error, with its own JSON-RPC code."""

    def __init__(self, code: int, error: ProtocolError):
        super().__init__(str(error))
        self.code, self.error = code, error


def _error(req_id: Any, code: int, e: ProtocolError) -> dict:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": str(e), "data": e.data()}}


_JSON_TYPE = {str: "string", dict: "object", int: "integer"}


def _param(params: dict, name: str, kind: type):
    if name not in params:
        raise ProtocolError("bad_request", code="missing_param", field=name)
    if not isinstance(params[name], kind):
        raise ProtocolError("bad_request", code="wrong_param_type", field=name, expected=_JSON_TYPE[kind], got=_json_type(params[name]))
    return params[name]


def _count(params: dict, name: str, default: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("bad_request", code="wrong_param_type", field=name, expected="integer", got=_json_type(value))
    if value < 0:
        raise ProtocolError("bad_request", code="out_of_range", field=name, expected={"minimum": 0}, got=value)
    return value


def peak_rss_bytes() -> int:
    """Peak resident memory of this process's address space (VmHWM). getrusage's ru_maxrss is not
    used: on Linux it carries over the high-water mark of the process that spawned us across exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_line(e: BaseException) -> str:
    """One line, never cut: the decisive part of a runtime's message is often at its end
    ("No Op registered for Erfc"), and the harness keeps error texts whole."""
    return " ".join(part.strip() for part in str(e).splitlines() if part.strip())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _write(out, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _protocol_stdout():
    """Keep the protocol channel clean: libraries that print to stdout (C++ logs, converters) would
    corrupt the framing, so the real stdout is kept for protocol messages and fd 1 goes to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1)


def main(factory: Callable[[], Runtime]) -> None:
    """Entry point of every Python worker. The protocol channel is set aside before the runtime is
    constructed, since importing a framework may already print."""
    out = _protocol_stdout()
    Worker(factory()).serve(stdout=out)
