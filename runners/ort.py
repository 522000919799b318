"""Runtime `ort`: ONNX Runtime, CPU execution provider, on the ONNX formats."""

from __future__ import annotations

from pathlib import Path

from harness_runners.contain import check_artifact, check_onnx_external_data
from harness_runners.protocol import Runtime, Session, main


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

    def versions(self):
        import numpy

        return {"onnxruntime": self.ort.__version__, "numpy": numpy.__version__}

    def load(self, artifact, model_path: Path, fmt, device, threads):
        root = check_artifact(artifact, model_path)
        check_onnx_external_data(root, model_path)
        options = self.ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = self.ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        return _Session(session)


if __name__ == "__main__":
    main(ORT)
