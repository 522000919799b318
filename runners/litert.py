"""Runtime `litert`: LiteRT (`ai_edge_litert`) signature runner on the TFLite formats.

Variants (harness/runners/table.py) set HARNESS_LITERT_OP_RESOLVER, the interpreter's op resolver type:
`auto` (the default: builtin kernels with the XNNPACK delegate applied by default), `builtin-without-
default-delegates` (`litert@reference`: the optimised builtin kernels, no XNNPACK) or `builtin-ref`
(`litert@builtin-ref`: TFLite's reference kernels, what its inference_diff tool compares a delegate to)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from harness_runners.contain import check_artifact
from harness_runners.protocol import ProtocolError, Runtime, Session, main

RESOLVERS = {"auto": "AUTO", "builtin-without-default-delegates": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "builtin-ref": "BUILTIN_REF"}


class _Signature(Session):
    def __init__(self, interpreter, runner):
        self.interpreter, self.runner = interpreter, runner

    def run(self, feeds):
        # The signature runner resizes inputs when the batch changes and copies outputs out of the
        # interpreter's buffers, so the result stays valid after the next call.
        return self.runner(**feeds)

    def intermediates(self):
        # The interpreter's nodes in execution order (a delegate's kernels are listed after them as
        # DELEGATE nodes standing for several: left out), each output tensor as the last run left it.
        details = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        out = []
        for op in self.interpreter._get_ops_details():
            if op["op_name"] == "DELEGATE":
                continue
            for index in op["outputs"]:
                if index < 0 or index not in details:
                    continue
                t = details[index]
                scale, zero = t["quantization"]
                facts = {"name": t["name"], "op": op["op_name"], "index": int(index),
                         "scale": float(scale) if scale else None, "zero_point": int(zero) if scale else None}
                out.append((facts, self.interpreter.get_tensor(index)))
        return out


class LiteRT(Runtime):
    name = "litert"
    formats = ("tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_select")

    def __init__(self):
        from ai_edge_litert import interpreter

        self.mod = interpreter
        self.resolver = os.environ.get("HARNESS_LITERT_OP_RESOLVER", "auto")

    def settings(self):
        import platform

        return {"op_resolver": self.resolver, "xnnpack_default_delegate": self.resolver == "auto", "machine": platform.machine(),
                **({"emulator": os.environ["HARNESS_EMULATOR"]} if os.environ.get("HARNESS_EMULATOR") else {})}

    def versions(self):
        from importlib import metadata

        import numpy

        return {"ai-edge-litert": metadata.version("ai-edge-litert"), "numpy": numpy.__version__}

    def load(self, artifact, model_path: Path, fmt, device, threads):
        return self._open(artifact, model_path, threads, keep=False)

    def load_keeping(self, artifact, model_path: Path, fmt, device, threads):
        return self._open(artifact, model_path, threads, keep=True)

    def _open(self, artifact, model_path: Path, threads, keep: bool) -> _Signature:
        check_artifact(artifact, model_path)
        if self.resolver not in RESOLVERS:
            raise ProtocolError("bad_request", f"HARNESS_LITERT_OP_RESOLVER={self.resolver!r}: expected one of {list(RESOLVERS)}")
        resolver = getattr(self.mod.OpResolverType, RESOLVERS[self.resolver])
        # keep (load's `intermediates`): experimental_preserve_all_tensors, so no buffer is reused and every
        # node's output can be read after the run; the op resolver stays the variant's.
        extra = {"experimental_preserve_all_tensors": True} if keep else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # preserve_all_tensors is "intended for debugging purposes only": what it is for here
            interp = self.mod.Interpreter(model_path=str(model_path), num_threads=threads or None, experimental_op_resolver_type=resolver, **extra)
        return _Signature(interp, interp.get_signature_runner(artifact["signature"]))


if __name__ == "__main__":
    main(LiteRT)
