"""Runtime `ort`: ONNX Runtime, CPU execution provider, on the ONNX formats.

Variants (harness/runners/table.py) set HARNESS_ORT_GRAPH_OPTIMIZATION: `all` (ONNX Runtime's
default) or `disabled` (`ort@noopt`: every graph optimisation off, the kernels run the graph as written);
and HARNESS_ORT_PROVIDERS, the execution providers in order (default CPUExecutionProvider; `ort@cuda`,
`ort@tensorrt`, `ort@xnnpack` put theirs first). A provider this build lacks is refused at load
(`unsupported`, naming the build's providers), never silently replaced by the CPU one."""

from __future__ import annotations

import os
from pathlib import Path

from harness_runners.contain import check_artifact, check_onnx_external_data
from harness_runners.protocol import ProtocolError, Runtime, Session, main


class _Session(Session):
    def __init__(self, session):
        self.session = session
        self.names = [o.name for o in session.get_outputs()]

    def run(self, feeds):
        return dict(zip(self.names, self.session.run(self.names, feeds)))


class ORT(Runtime):
    name = "ort"
    formats = ("onnx13", "onnx18")

    def __init__(self):
        import onnxruntime

        self.ort = onnxruntime
        onnxruntime.set_default_logger_severity(3)

    def _optimization(self):
        level = os.environ.get("HARNESS_ORT_GRAPH_OPTIMIZATION", "all")
        levels = {"all": self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "disabled": self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if level not in levels:
            raise ProtocolError("bad_request", f"HARNESS_ORT_GRAPH_OPTIMIZATION={level!r}: expected one of {list(levels)}")
        return level, levels[level]

    def _providers(self) -> list[str]:
        asked = [p for p in os.environ.get("HARNESS_ORT_PROVIDERS", "CPUExecutionProvider").split(",") if p]
        return asked + ([] if "CPUExecutionProvider" in asked else ["CPUExecutionProvider"])

    def settings(self):
        import platform

        return {"providers": self._providers(), "graph_optimization": self._optimization()[0],
                "available_providers": self.ort.get_available_providers(), "machine": platform.machine(),
                **({"emulator": os.environ["HARNESS_EMULATOR"]} if os.environ.get("HARNESS_EMULATOR") else {})}

    def versions(self):
        import numpy

        return {"onnxruntime": self.ort.__version__, "numpy": numpy.__version__}

    def load(self, artifact, model_path: Path, fmt, device, threads):
        root = check_artifact(artifact, model_path)
        check_onnx_external_data(root, model_path)
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self._optimization()[1]
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = self._providers()
        lacking = [p for p in providers if p not in self.ort.get_available_providers()]
        if lacking:
            raise ProtocolError("unsupported", f"execution provider {', '.join(lacking)} is not in this onnxruntime build "
                                               f"(it has {', '.join(self.ort.get_available_providers())})")
        session = self.ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        if session.get_providers()[0] != providers[0]:
            raise ProtocolError("unsupported", f"ONNX Runtime could not start {providers[0]} here and fell back to {session.get_providers()}")
        return _Session(session)


if __name__ == "__main__":
    main(ORT)
