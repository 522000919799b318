"""The table of runtimes: how each worker starts, which formats it takes, and whether it can run here.

Availability is decided without importing any framework (package metadata and module specs only),
so `harness doctor` stays fast."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.errors import unknown

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Availability:
    ok: bool
    version: str | None = None
    reason: str = ""
    fix: str = ""


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    language: str
    formats: tuple[str, ...]
    description: str
    python_module: str  # worker module, `python -m <module>`
    import_name: str  # the framework module the worker imports
    dist: str  # the distribution that provides it
    devices: tuple[str, ...] = ("cpu",)

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.python_module]

    def availability(self) -> Availability:
        fix = "make setup   (installs the pinned requirements into .venv)"
        try:
            version = metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            return Availability(False, None, f"Python package {self.dist} is not installed in {sys.prefix}", fix)
        if importlib.util.find_spec(self.import_name.split(".")[0]) is None:
            return Availability(False, version, f"module {self.import_name} cannot be found", fix)
        if importlib.util.find_spec(self.python_module) is None:
            return Availability(False, version, f"worker module {self.python_module} is missing", "pip install -e .")
        return Availability(True, version)


RUNTIMES: dict[str, RuntimeSpec] = {
    r.name: r
    for r in [
        RuntimeSpec(
            "tf", "python", ("savedmodel", "keras", "h5", "frozen_graph"),
            "Python TensorFlow: SavedModel signatures, Keras .keras/.h5, frozen graphs",
            "runners.tf", "tensorflow", "tensorflow-cpu",
        ),
        RuntimeSpec(
            "litert", "python", ("tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8"),
            "LiteRT (ai_edge_litert) signature runner", "runners.litert", "ai_edge_litert", "ai-edge-litert",
        ),
        RuntimeSpec(
            "ort", "python", ("onnx13", "onnx18"),
            "ONNX Runtime, CPU execution provider", "runners.ort", "onnxruntime", "onnxruntime",
        ),
    ]
}


def check_runtime(name: str) -> RuntimeSpec:
    if name not in RUNTIMES:
        raise unknown("runtime", name, list(RUNTIMES))
    return RUNTIMES[name]
