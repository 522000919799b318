"""Keras `.keras` zips (their config.json): the model config, shared with `.h5` files and TF.js layers models
(keras_model), and the custom classes a model needs code for."""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.inspect.common import checked, corrupt, counted, first_line, problem, tensor


def read_keras(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import check_keras

    expected = "a Keras 3 .keras zip with a config.json"
    checked(check_keras, path, "keras", ".keras file", "is not readable", expected)
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise corrupt(".keras file", path, f"has an unreadable config.json ({first_line(e)})", expected) from None
    info["format"] = "keras"
    info["keras_version"] = meta.get("keras_version") if isinstance(meta, dict) else None
    keras_model(config, info, str(path))


def keras_model(config: dict, info: dict, where: str) -> None:
    """Inputs, outputs (shapes inferred for the common last layers) and layer counts from a Keras model
    config, Keras 3 or Keras 2 style, without Keras."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise HarnessError(f"corrupt Keras model: {where} has a model config that is not an object (expected a Keras model config)")
    info["model_class"] = config.get("class_name")
    info["model_name"] = config["config"].get("name")
    layers: Counter = Counter()
    try:
        _count_layers(config, layers, top=True)
        inputs, outputs = _keras_io(config)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:  # a config of another shape than Keras writes
        raise HarnessError(f"corrupt Keras model: {where} has a model config this reader cannot follow ({first_line(e)}) "
                           "(expected a Keras 2 or 3 Functional or Sequential model config)") from None
    info["layers"] = counted(layers)
    info["signatures"].append({"key": None, "inputs": inputs, "outputs": outputs})
    custom = _custom_classes(config)
    if custom:
        info["custom_objects"] = custom


def _custom_classes(config: dict) -> list[dict]:
    """Layers (and nested models' layers) that are not Keras's own: a config entry whose `module` is not
    Keras's, or that names a registered class (`mine>Scale`). Loading the model needs their code."""
    found: dict[str, dict] = {}

    def walk(layer: dict) -> None:
        module, registered = layer.get("module"), layer.get("registered_name")
        if (isinstance(module, str) and not module.startswith(("keras", "tf_keras", "tensorflow"))) or \
                (isinstance(registered, str) and ">" in registered and not registered.startswith("keras")):
            name = str(layer.get("class_name"))
            found.setdefault(name, {"class": name, "registered_name": registered, "module": module})
        for inner in (layer.get("config") or {}).get("layers") or []:
            if isinstance(inner, dict):
                walk(inner)

    for layer in (config.get("config") or {}).get("layers") or []:
        if isinstance(layer, dict):
            walk(layer)
    return list(found.values())


def needs_code(info: dict, defined: set[str] | None) -> None:
    """A problem for each custom class the given --custom-objects/--import do not define (all of them
    when none were given): the model does not load without its code."""
    custom = info.get("custom_objects") or []
    if defined is None:
        if custom:
            names = ", ".join(repr(c["class"]) + (f" ({c['registered_name']})" if c.get("registered_name") else "") for c in custom)
            problem(info, f"custom layer(s) {names}: the model loads only with their code: harness check and inspect take "
                           "--custom-objects FILE.py (or --import MODULE) defining them")
        return
    for c in custom:
        known_as = {c["class"], str(c.get("registered_name")), str(c.get("registered_name")).rpartition(">")[2]}
        c["defined"] = bool(known_as & defined)
        if not c["defined"]:
            problem(info, f"custom layer {c['class']!r}: the given --custom-objects/--import define no {c['class']!r} (expected a "
                           "CUSTOM_OBJECTS entry or a class registered with keras.saving.register_keras_serializable)")


def _count_layers(config: dict, counts: Counter, top: bool = False) -> None:
    if not top:
        counts[config.get("class_name", "?")] += 1
    for layer in (config.get("config") or {}).get("layers") or []:
        if isinstance(layer, dict):
            _count_layers(layer, counts)


def _keras_tensors(obj: Any) -> Iterator[dict]:
    """The Keras 3 `__keras_tensor__` records inside a node's args and kwargs."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj.get("config") or {}
        else:
            for v in obj.values():
                yield from _keras_tensors(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keras_tensors(v)


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    """`input_layers`/`output_layers`: ["a", 0, 0] (Keras 3, one) or [["a", 0, 0], ...]."""
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        return [(spec[0], int(spec[1]), int(spec[2]))]
    return [(s[0], int(s[1]), int(s[2])) for s in spec or [] if isinstance(s, list) and len(s) >= 3]


def _layer_dtype(layer: dict) -> str:
    dtype = (layer.get("config") or {}).get("dtype")
    if isinstance(dtype, dict):  # a DTypePolicy
        dtype = (dtype.get("config") or {}).get("name")
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        return dtype[len("mixed_"):]
    return dtype if isinstance(dtype, str) else "float32"


def _keras_io(config: dict) -> tuple[list[dict], list[dict]]:
    cfg = config["config"]
    layers = [layer for layer in cfg.get("layers") or [] if isinstance(layer, dict)]
    by_name = {(layer.get("name") or (layer.get("config") or {}).get("name")): layer for layer in layers}
    shapes: dict[tuple[str, int, int], list | None] = {}

    def input_shape(layer: dict) -> list | None:
        c = layer.get("config") or {}
        for key in ("batch_shape", "batch_input_shape", "batchInputShape"):
            if isinstance(c.get(key), list):
                return list(c[key])
        return None

    sequential = config.get("class_name") == "Sequential" or "input_layers" not in cfg
    if sequential:
        first = layers[0] if layers else {}
        shape = input_shape(first)
        if shape is None and isinstance(cfg.get("build_input_shape"), list):
            shape = list(cfg["build_input_shape"])
        if shape is None and isinstance((config.get("build_config") or {}).get("input_shape"), list):
            shape = list(config["build_config"]["input_shape"])
        name = "input_0"
        if first.get("class_name") == "InputLayer":
            name = first.get("name") or (first.get("config") or {}).get("name") or name
        inputs = [tensor(name, _layer_dtype(first) if first else "float32", shape)]
        current = shape
        for layer in layers:
            if layer.get("class_name") != "InputLayer":
                current = _infer(layer, [current])
        last = layers[-1] if layers else {}
        return inputs, [tensor("output_0", _layer_dtype(last) if last else "float32", current, layer=last.get("name"),
                                shape_known=None if current is not None else False)]

    # Functional: shapes flow along inbound nodes; Keras 3 records the shape of every tensor a layer takes.
    for layer in layers:
        name = str(layer.get("name") or (layer.get("config") or {}).get("name"))
        if layer.get("class_name") == "InputLayer":
            shapes[(name, 0, 0)] = input_shape(layer)
            continue
        for k, node in enumerate(layer.get("inbound_nodes") or []):
            ins: list[list | None] = []
            seen = list(_keras_tensors(node))
            if seen:
                for t in seen:
                    history = t.get("keras_history") or [None, 0, 0]
                    ins.append(t.get("shape") if isinstance(t.get("shape"), list) else shapes.get((history[0], history[1], history[2])))
                    shapes.setdefault((history[0], history[1], history[2]), ins[-1])
            elif isinstance(node, list):  # Keras 2: [["layer", node, tensor, kwargs], ...]
                ins = [shapes.get((r[0], int(r[1]), int(r[2]))) for r in node if isinstance(r, list) and len(r) >= 3]
            shapes.setdefault((name, k, 0), _infer(layer, ins))
    inputs = []
    for name, _, _ in _refs(cfg.get("input_layers")):
        layer = by_name.get(name, {})
        inputs.append(tensor(name, _layer_dtype(layer), input_shape(layer)))
    outputs = []
    for i, ref in enumerate(_refs(cfg.get("output_layers"))):
        layer = by_name.get(ref[0], {})
        shape = shapes.get(ref)
        outputs.append(tensor(f"output_{i}", _layer_dtype(layer), shape, layer=ref[0], shape_known=None if shape is not None else False))
    return inputs, outputs


_SAME_SHAPE = {
    "Activation", "Dropout", "Softmax", "ReLU", "LeakyReLU", "ELU", "PReLU", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "UnitNormalization", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity", "Rescaling",
    "Normalization", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Add", "Subtract", "Multiply", "Average",
    "Maximum", "Minimum", "ActivityRegularization", "Masking",
}


def _infer(layer: dict, ins: list[list | None]) -> list | None:
    """A layer's output shape from its input shapes, for the layers models commonly end with; None
    where it cannot be told from the config alone."""
    cls, c = layer.get("class_name"), layer.get("config") or {}
    first = ins[0] if ins else None
    if first is None:
        return None
    if cls in _SAME_SHAPE:
        return list(first)
    if cls == "Dense" and isinstance(c.get("units"), int):
        return [*first[:-1], c["units"]]
    if cls == "Flatten":
        rest = first[1:]
        return [first[0], math.prod(rest) if all(isinstance(d, int) for d in rest) else None]
    if cls == "Reshape" and isinstance(c.get("target_shape"), list):
        return [first[0], *[None if d == -1 else d for d in c["target_shape"]]]
    if cls and cls.startswith("Global") and ("Pooling" in cls) and not c.get("keepdims"):
        return [first[0], first[1] if c.get("data_format") == "channels_first" else first[-1]]
    if cls in ("LSTM", "GRU", "SimpleRNN") and isinstance(c.get("units"), int) and not c.get("return_state"):
        return [first[0], first[1], c["units"]] if c.get("return_sequences") else [first[0], c["units"]]
    if cls == "Concatenate" and all(s is not None for s in ins):
        axis = c.get("axis", -1)
        dims = [s[axis] for s in ins if s is not None]
        out = list(first)
        out[axis] = sum(dims) if all(isinstance(d, int) for d in dims) else None
        return out
    return None
