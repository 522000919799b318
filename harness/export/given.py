"""A user's own `.onnx`, `.tflite` or TF.js model (`harness check model.onnx`): no conversion. The file —
for TF.js, model.json and the weight shards its manifest lists — is copied into the cache as it is,
its tensors are read from the copy (harness inspect's readers, harness/inspect/) and it is validated as an export would
be; a file that fails validation is the model's fault, not a converter's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.artifact import Artifact, IOSpec
from harness.fixtures import Fixture


def export(fixture: Fixture, spec, out: Path, source: Artifact | None, art: Artifact) -> None:
    from harness.export.validate import ConverterFault, validate
    from harness.inspect import read

    given = Path(fixture.build())
    model = out / spec.layout  # where the format's exporter would have written it
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(given, model)
    if spec.name.startswith("tfjs"):
        for shard in shards(given):
            target = model.parent / shard
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(given.parent / shard, target)
    art.path = spec.layout
    try:
        validate(spec, out, art)
    except ConverterFault as e:
        # A given ONNX model keeps its own opset (onnx13 and onnx18 name what every ONNX runtime takes);
        # anything else wrong is the model's: nothing converted it.
        if not e.summary.startswith("converter wrote ONNX opset"):
            e.culprit = "model"
            e.summary = e.summary.replace("converter emitted", "the model holds").replace("converter wrote", "the file holds")
            raise
    info = read(out / art.path)
    keys = [s.get("key") for s in info["signatures"]]
    sig = info["signatures"][keys.index(fixture.signature) if fixture.signature in keys else 0]
    layers = spec.name == "tfjs_layers"  # a layers model takes and gives tensors in order

    def io(tensors: list[dict]) -> list[IOSpec]:
        return [IOSpec(name=t["name"], stored_name=str(i) if layers else (t["name"] if spec.family == "tflite" else t.get("stored_name") or t["name"]),
                       dtype=t["dtype"] if t["dtype"] != "unknown" else "float32",
                       shape=[d if isinstance(d, int) else None for d in t["shape"] or []],
                       scale=t.get("scale"), zero_point=t.get("zero_point"))
                for i, t in enumerate(tensors)]

    art.inputs, art.outputs = io(sig["inputs"]), io(sig["outputs"])
    art.extra["given"] = str(given)


def shards(model_json: Path) -> list[str]:
    """The weight files model.json lists that lie inside its folder (one outside is left out: the
    validation then names it as missing)."""
    try:
        meta = json.loads(model_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    folder = model_json.parent.resolve()
    out = []
    for group in meta.get("weightsManifest") or []:
        for shard in (group.get("paths") or []) if isinstance(group, dict) else []:
            if isinstance(shard, str) and (folder / shard).resolve().is_relative_to(folder) and (folder / shard).is_file():
                out.append(shard)
    return out
