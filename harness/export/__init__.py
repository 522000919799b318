"""Exports: one module per format family, a content-addressed cache, written atomically under a lock.

Every format but `keras`/`h5` is derived from the fixture's SavedModel, so the SavedModel artifact is
exported (or found in the cache) first. Exports run in this process: one TensorFlow import for all of
them, instead of one per converter CLI call.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from filelock import FileLock

from harness.artifact import Artifact
from harness.errors import HarnessError, unknown
from harness.fixtures import Fixture


@dataclass(frozen=True)
class FormatSpec:
    name: str
    family: str  # module in harness.export
    keras_only: bool = False
    options: tuple[tuple[str, object], ...] = ()


FORMATS: dict[str, FormatSpec] = {
    f.name: f
    for f in [
        FormatSpec("savedmodel", "savedmodel"),
        FormatSpec("keras", "keras", keras_only=True),
        FormatSpec("h5", "keras", keras_only=True),
        FormatSpec("frozen_graph", "frozen"),
        FormatSpec("tflite", "tflite"),
        FormatSpec("tflite_fp16", "tflite"),
        FormatSpec("tflite_dynamic", "tflite"),
        FormatSpec("tflite_int8", "tflite"),
        FormatSpec("onnx13", "onnx", options=(("opset", 13),)),
        FormatSpec("onnx18", "onnx", options=(("opset", 18),)),
        FormatSpec("tfjs_graph", "tfjs"),
        FormatSpec("tfjs_layers", "tfjs", keras_only=True),
    ]
}

# Distributions whose versions decide what a conversion produces; they go into the cache key.
CONVERTER_DISTS = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "tensorflowjs", "numpy", "protobuf")


def check_format(name: str) -> FormatSpec:
    if name not in FORMATS:
        raise unknown("format", name, list(FORMATS))
    return FORMATS[name]


def formats_for(fixture: Fixture) -> list[str]:
    return [f for f, spec in FORMATS.items() if not spec.keras_only or fixture.kind == "keras"]


def converter_versions() -> dict[str, str]:
    out = {}
    for dist in CONVERTER_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", ".harness/cache")).resolve()


class Exporter:
    """Finds artifacts in the cache or exports them into it."""

    def __init__(self, root: Path | None = None):
        self.root = root or cache_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions = converter_versions()
        self._family_hash: dict[str, str] = {}

    def key(self, fixture: Fixture, fmt: str) -> str:
        spec = check_format(fmt)
        h = hashlib.sha256()
        for part in (
            fixture.name,  # members of a family (gemm64, gemm256) share one source file
            fixture.digest(),
            fmt,
            self._family_source_hash(spec.family),
            json.dumps(self.versions, sort_keys=True),
        ):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:20]

    def _family_source_hash(self, family: str) -> str:
        if family not in self._family_hash:
            here = Path(__file__).parent
            data = (here / f"{family}.py").read_bytes() + (here / "common.py").read_bytes()
            self._family_hash[family] = hashlib.sha256(data).hexdigest()
        return self._family_hash[family]

    def folder(self, fixture: Fixture, fmt: str) -> Path:
        return self.root / f"{fixture.name}-{fmt}-{self.key(fixture, fmt)}"

    def cached(self, fixture: Fixture, fmt: str) -> Artifact | None:
        folder = self.folder(fixture, fmt)
        if (folder / "artifact.json").exists():
            try:
                return Artifact.load(folder)
            except HarnessError:
                return None  # unreadable record: treated as absent, re-exported under the lock
        return None

    def get(self, fixture: Fixture, fmt: str) -> Artifact:
        """The artifact, from the cache or freshly exported. A failed conversion is an artifact too
        (status `error` with the converter's message), cached like a good one: same inputs, same result."""
        spec = check_format(fmt)
        art = self.cached(fixture, fmt)
        if art is not None:
            return art
        folder = self.folder(fixture, fmt)
        with FileLock(str(folder) + ".lock"):
            art = self.cached(fixture, fmt)  # another process may have written it meanwhile
            if art is not None:
                return art
            if folder.exists():  # a damaged entry (crash mid-write elsewhere, disk full): replace it
                shutil.rmtree(folder)
            source = None
            if fmt != "savedmodel" and not spec.keras_only:
                source = self.get(fixture, "savedmodel")
            return self._export(fixture, spec, folder, source)

    def _export(self, fixture: Fixture, spec: FormatSpec, folder: Path, source: Artifact | None) -> Artifact:
        art = Artifact(
            fixture=fixture.name,
            format=spec.name,
            key=self.key(fixture, spec.name),
            status="ok",
            converters=dict(self.versions),
            source_hash=fixture.digest(),
        )
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        start = time.perf_counter()
        try:
            if source is not None and source.status != "ok":
                raise RuntimeError(f"the SavedModel it is converted from failed: {source.error}")
            module = importlib.import_module(f"harness.export.{spec.family}")
            export: Callable = module.export
            export(fixture, spec, tmp, source, art)
        except Exception as e:  # a converter's failure is a result, recorded with its own message
            art.status = "error"
            art.error = f"{type(e).__name__}: {_first_lines(str(e))}"
            art.extra["traceback"] = traceback.format_exc(limit=8)
            art.inputs, art.outputs = [], []
        art.export_s = round(time.perf_counter() - start, 3)
        (tmp / "artifact.json").write_text(art.to_json())
        try:
            os.rename(tmp, folder)  # atomic: readers see all of it or nothing
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return Artifact.load(folder)


def _first_lines(message: str, limit: int = 600) -> str:
    message = " ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    return message if len(message) <= limit else message[: limit - 3] + "..."
