"""TF.js `model.json` (graph or layers model): its signature or placeholders, its weight manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.inspect.common import TF_DTYPES, corrupt, counted, first_line, problem, runtimes_taking, tensor
from harness.inspect.keras import keras_model


def _tfjs_shape(shape: Any) -> list | None:
    if not isinstance(shape, dict) or shape.get("unknownRank"):
        return None
    dims = []
    for d in shape.get("dim") or []:
        size = int(d.get("size", -1)) if isinstance(d, dict) else -1
        dims.append(None if size < 0 else size)
    return dims


def read_tfjs(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import ConverterFault, check_tfjs, shard_path

    expected = "a TF.js model.json with a modelTopology"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise corrupt("TF.js model", path, f"is not valid JSON ({first_line(e)})", expected) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("modelTopology"), dict):
        raise corrupt("TF.js model", path, "is not a TF.js model.json (no modelTopology object)", expected)
    topology = meta["modelTopology"]
    declared = meta.get("format")
    if declared == "graph-model" or (declared is None and "node" in topology):
        fmt = "tfjs_graph"
    elif declared == "layers-model" or (declared is None and ("model_config" in topology or "class_name" in topology)):
        fmt = "tfjs_layers"
    else:
        raise corrupt("TF.js model", path, f"says format {declared!r}", "format 'graph-model' or 'layers-model'")
    info["format"] = fmt
    info["tfjs_format"] = declared
    info["generated_by"], info["converted_by"] = meta.get("generatedBy"), meta.get("convertedBy")
    try:
        check_tfjs(path, fmt)  # shards present, inside the folder, of the sizes the manifest says
    except ConverterFault as e:
        problem(info, e.summary, runtimes_taking((fmt,)))
    manifest: list = meta["weightsManifest"] if isinstance(meta.get("weightsManifest"), list) else []
    shards = held = weights = 0
    for g, group in enumerate(manifest):
        if not isinstance(group, dict):
            continue
        weights += len(group.get("weights") or [])
        for shard in group.get("paths") or []:
            shards += 1
            try:
                file = shard_path(path.parent, shard, g)
            except ConverterFault:
                continue
            if file.is_file():
                held += file.stat().st_size
    info["weights"] = {"groups": len(manifest), "shards": shards, "bytes": held, "tensors": weights}
    info["size_bytes"] = path.stat().st_size + held

    if fmt == "tfjs_layers":
        config = topology.get("model_config", topology)
        info["keras_version"] = topology.get("keras_version")
        keras_model(config, info, str(path))
        layers = [layer for layer in (config.get("config") or {}).get("layers") or [] if isinstance(layer, dict)]
        if any(layer.get("class_name") == "InputLayer" and "batch_shape" in (layer.get("config") or {})
               and not {"batch_input_shape", "batchInputShape"} & set(layer.get("config") or {}) for layer in layers):
            info["keras3_input_layer"] = True
        return

    ops: Counter = Counter(n.get("op", "?") for n in topology.get("node") or [] if isinstance(n, dict))
    for f in (topology.get("library") or {}).get("function") or []:
        ops.update(n.get("op", "?") for n in f.get("nodeDef", f.get("node_def")) or [] if isinstance(n, dict))
    info["ops"] = counted(ops)
    sig = meta.get("signature") or (meta.get("userDefinedMetadata") or {}).get("signature")
    if isinstance(sig, dict) and (sig.get("inputs") or sig.get("outputs")):
        def spec(key, t):
            return tensor(key, TF_DTYPES.get(t.get("dtype"), t.get("dtype")), _tfjs_shape(t.get("tensorShape")), stored_name=t.get("name"))

        info["signatures"].append({"key": None, "inputs": [spec(k, v) for k, v in sorted((sig.get("inputs") or {}).items())],
                                   "outputs": [spec(k, v) for k, v in sorted((sig.get("outputs") or {}).items())]})
    else:  # no signature in model.json: the placeholders are the inputs; outputs are not recorded
        inputs = []
        for n in topology.get("node") or []:
            if isinstance(n, dict) and n.get("op") == "Placeholder":
                attr = n.get("attr") or {}
                dtype = (attr.get("dtype") or {}).get("type")
                inputs.append(tensor(n.get("name", "?"), TF_DTYPES.get(str(dtype), dtype), _tfjs_shape((attr.get("shape") or {}).get("shape"))))
        info["signatures"].append({"key": None, "inputs": inputs, "outputs": []})
