"""Runtime `litert`: LiteRT (`ai_edge_litert`) signature runner on the TFLite formats.

Variants (harness/runners/table.py) set HARNESS_LITERT_OP_RESOLVER, the interpreter's op resolver type:
`auto` (the default: builtin kernels with the XNNPACK delegate applied by default), `builtin-without-
default-delegates` (`litert@reference`: the optimised builtin kernels, no XNNPACK) or `builtin-ref`
(`litert@builtin-ref`: TFLite's reference kernels, what its inference_diff tool compares a delegate to)."""

from __future__ import annotations

import os
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
        check_artifact(artifact, model_path)
        if self.resolver not in RESOLVERS:
            raise ProtocolError("bad_request", f"HARNESS_LITERT_OP_RESOLVER={self.resolver!r}: expected one of {list(RESOLVERS)}")
        resolver = getattr(self.mod.OpResolverType, RESOLVERS[self.resolver])
        interp = self.mod.Interpreter(model_path=str(model_path), num_threads=threads or None, experimental_op_resolver_type=resolver)
        return _Signature(interp, interp.get_signature_runner(artifact["signature"]))


if __name__ == "__main__":
    main(LiteRT)
