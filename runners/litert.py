"""Runtime `litert`: LiteRT (`ai_edge_litert`) signature runner on the TFLite formats."""

from __future__ import annotations

from pathlib import Path

from harness_runners.contain import check_artifact
from harness_runners.protocol import Runtime, Session, main


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

    def versions(self):
        from importlib import metadata

        import numpy

        return {"ai-edge-litert": metadata.version("ai-edge-litert"), "numpy": numpy.__version__}

    def load(self, artifact, model_path: Path, fmt, device, threads):
        check_artifact(artifact, model_path)
        interp = self.mod.Interpreter(model_path=str(model_path), num_threads=threads or None)
        return _Signature(interp, interp.get_signature_runner(artifact["signature"]))


if __name__ == "__main__":
    main(LiteRT)
