"""Runtime `openvino`: OpenVINO's CPU plugin, reading ONNX, TFLite and SavedModel files directly
(its own front ends, no conversion step of ours).

Precision: the variants `openvino@bf16` and `openvino@f16` set HARNESS_OPENVINO_PRECISION, which
becomes the compile hint INFERENCE_PRECISION_HINT. The CPU plugin ignores a hint the CPU cannot honour
(bf16 without AVX-512 or AMX, f16 without AVX512-FP16 or AMX-FP16) and silently computes in f32; so the
worker reads the precision back from every compiled model and refuses a load whose precision is not
the one asked for (`unsupported`, with what it got), instead of passing off f32 numbers as bf16 ones.
`info.settings.precision` is the precision every loaded model runs in: the harness judges by its tolerance class.

Tensor names: a SavedModel read by OpenVINO keeps the signature's keys; an ONNX file its graph names
(artifact.json's `stored_name`); a TFLite file its tensor names, which artifact.json does not hold
(LiteRT calls signatures by key), so the worker reads the key-to-tensor map from the file's
SignatureDefs (flatbuffers, pinned: the TFLite schema's few fields needed are read by hand below).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness_runners.contain import check_artifact, check_onnx_external_data
from harness_runners.protocol import ProtocolError, Runtime, Session, main

# The variant's environment: "" (the plugin's default, f32 here), "bf16" or "f16".
PRECISIONS = {"": "float32", "f32": "float32", "bf16": "bfloat16", "f16": "float16"}


class _Session(Session):
    def __init__(self, compiled, names: dict[str, str]):
        self.request = compiled.create_infer_request()
        self.outputs = [(names.get(o.get_any_name(), o.get_any_name()), o) for o in compiled.outputs]
        self.inputs = {i.get_any_name() for i in compiled.inputs}

    def run(self, feeds):
        # The request's outputs are views of its buffers: copied, so they outlive the next call.
        self.request.infer(feeds)
        return {name: np.array(self.request.get_tensor(port).data, copy=True) for name, port in self.outputs}


def _tflite_signature(path: Path, signature: str) -> dict[str, str]:
    """The signature's key -> tensor name map of a .tflite file (inputs and outputs). The TFLite schema
    (tensorflow/compiler/mlir/lite/schema/schema.fbs): Model.subgraphs (field 2), Model.signature_defs
    (field 7); SignatureDef.inputs/outputs (0, 1: [TensorMap]), signature_key (2), subgraph_index (4);
    TensorMap.name (0), tensor_index (1); SubGraph.tensors (0); Tensor.name (3)."""
    import flatbuffers
    from flatbuffers.table import Table

    buf = bytearray(path.read_bytes())
    model = Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))

    def field(t: Table, index: int) -> int:
        return t.Offset(4 + 2 * index)

    def vector(t: Table, index: int) -> list[Table]:
        o = field(t, index)
        if not o:
            return []
        start = t.Vector(o)
        return [Table(t.Bytes, t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]

    def string(t: Table, index: int) -> str:
        o = field(t, index)
        return t.String(o + t.Pos).decode() if o else ""

    def uint(t: Table, index: int) -> int:
        o = field(t, index)
        return t.Get(flatbuffers.number_types.Uint32Flags, o + t.Pos) if o else 0

    subgraphs = vector(model, 2)
    for sig in vector(model, 7):
        if string(sig, 2) != signature:
            continue
        tensors = vector(subgraphs[uint(sig, 4)], 0)
        return {string(m, 0): string(tensors[uint(m, 1)], 3) for m in vector(sig, 0) + vector(sig, 1)}
    raise ProtocolError("load_failed", f"{path} has no signature {signature!r}")


class OpenVINO(Runtime):
    name = "openvino"
    formats = ("onnx13", "onnx18", "tflite", "tflite_fp16", "savedmodel")

    def __init__(self):
        import openvino

        self.ov = openvino
        self.core = openvino.Core()
        self.hint = os.environ.get("HARNESS_OPENVINO_PRECISION", "")
        if self.hint not in PRECISIONS:
            raise SystemExit(f"HARNESS_OPENVINO_PRECISION={self.hint!r}: expected one of {sorted(p for p in PRECISIONS if p)}")
        # Pinned once: the worker answers `info` before any model is loaded.
        self.precision = PRECISIONS[self.hint]

    def versions(self):
        return {"openvino": self.ov.get_version().split("-")[0], "numpy": np.__version__}

    def settings(self) -> dict:
        cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
        return {"precision": self.precision, "precision_hint": self.hint or None, "device": f"CPU ({cpu})",
                "capabilities": list(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}

    def address(self, fmt: str) -> str:
        return "name" if fmt == "savedmodel" else "stored_name"

    def load(self, artifact, model_path: Path, fmt, device, threads):
        root = check_artifact(artifact, model_path)
        names: dict[str, str] = {}  # the model's output name -> the name run() returns it under
        if fmt.startswith("onnx"):
            check_onnx_external_data(root, model_path)
        model = self.core.read_model(str(model_path))
        if fmt.startswith("tflite"):
            tensors = _tflite_signature(model_path, artifact["signature"])
            by_tensor = {v: k for k, v in tensors.items()}
            names = {o.get_any_name(): by_tensor.get(o.get_any_name(), o.get_any_name()) for o in model.outputs}
            # Feeds arrive under the signature's keys: rename the model's inputs to match.
            for port in model.inputs:
                key = by_tensor.get(port.get_any_name())
                if key is not None:
                    port.get_tensor().set_names({key})
        config: dict = {}
        if self.hint:
            config["INFERENCE_PRECISION_HINT"] = self.hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = self.core.compile_model(model, "CPU", config)
        got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        got = {"<Type: 'float32'>": "float32", "<Type: 'bfloat16'>": "bfloat16", "<Type: 'float16'>": "float16"}.get(got, got)
        if got != self.precision:
            cpu = self.core.get_property("CPU", "FULL_DEVICE_NAME")
            raise ProtocolError("unsupported", f"OpenVINO's CPU plugin computes this model in {got}, not the {self.precision} asked for "
                                               f"(INFERENCE_PRECISION_HINT={self.hint}): this CPU ({cpu}) has no {self.precision} "
                                               "arithmetic it uses (bf16: AVX-512 or AMX; f16: AVX512-FP16 or AMX-FP16)")
        return _Session(compiled, names)


if __name__ == "__main__":
    main(OpenVINO)
