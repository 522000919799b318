"""A float64 oracle for any Keras model: the model rebuilt with every layer in float64 and the same
weights (cast exactly), run by Keras/TensorFlow on the CPU in the harness process.

No NumPy oracle is written per layer: TensorFlow's float64 kernels are an independent, more precise
computation of the same graph, so a case where TF's float32 reference disagrees with the float64 model
while another runtime agrees with it shows that TensorFlow itself is the outlier (the engine says so).
Used by the zoo fixtures and by `harness check` for a user's Keras model.

Imports no TensorFlow at module level: the rebuild happens on the oracle's first call.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

Inputs = dict[str, np.ndarray]


class Float64Unavailable(Exception):
    """The model could not be rebuilt in float64 (a subclassed model without a config, a layer that
    refuses the dtype); the message says which and why."""


def _policy64(value: Any) -> Any:
    """A layer's dtype setting, made float64 when it is a floating one (a policy's config or a name)."""
    if isinstance(value, dict):  # a serialised DTypePolicy: {"class_name": "DTypePolicy", "config": {"name": ...}}
        name = (value.get("config") or {}).get("name")
        return "float64" if name is None or "float" in str(name) else value
    if value is None or (isinstance(value, str) and "float" in value):
        return "float64"
    return value


def float64_clone(model: Any, custom_objects: dict | None = None) -> Any:
    """`model` rebuilt with every layer's dtype policy float64 and float inputs float64, its weights the
    model's own, cast to float64 (exact). Raises Float64Unavailable when Keras cannot rebuild it."""
    import keras

    try:
        with keras.saving.custom_object_scope(custom_objects or {}):
            clone = _rebuild(model, keras)
    except Exception as e:
        raise Float64Unavailable(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    ours, theirs = model.weights, clone.weights
    if len(ours) != len(theirs) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(ours, theirs)):
        raise Float64Unavailable(f"the float64 rebuild has {len(theirs)} weights, the model {len(ours)} (or their shapes differ)")
    for a, b in zip(ours, theirs):
        value = np.asarray(a.numpy())
        b.assign(value.astype(np.float64) if value.dtype.kind == "f" else value)
    return clone


def _rebuild(model: Any, keras: Any) -> Any:
    """The model's structure in float64 (fresh weights); a model nested as a layer is rebuilt the same way."""

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return _rebuild(layer, keras)
        config = layer.get_config()
        if isinstance(layer, keras.layers.Layer):  # an op of the graph (`x + y`: keras.ops Add) has no dtype: it takes its inputs'
            config["dtype"] = _policy64(config.get("dtype"))
        return layer.__class__.from_config(config)

    def spec(t):
        return keras.Input(batch_shape=tuple(t.shape), dtype=_policy64(str(t.dtype)), name=t.name.split(":")[0])

    if isinstance(model, keras.Sequential):
        # Rebuilt as a functional model on a float64 input (a Sequential clone keeps its float32 Input,
        # which would cast the oracle's inputs down).
        first = model._layers[0] if model._layers and isinstance(model._layers[0], keras.layers.InputLayer) else None
        if first is None:
            raise ValueError("a Sequential model without an Input: its input shape is unknown")
        x = y = keras.Input(batch_shape=tuple(first.batch_shape), dtype=_policy64(str(first.dtype)), name=first.name)
        for layer in model.layers:
            y = clone_layer(layer)(y)
        return keras.Model(x, y, name=model.name)
    if model.__class__ is keras.Model or _is_functional(model):
        return keras.models.clone_model(model, input_tensors=keras.tree.map_structure(spec, model.input), clone_function=clone_layer)
    config = model.get_config()  # a subclassed model (a keras_hub backbone): rebuilt from its own config
    config["dtype"] = _policy64(config.get("dtype"))
    return model.__class__.from_config(config)


def _is_functional(model: Any) -> bool:
    from keras.src.models.functional import Functional

    # A Functional subclass with its own constructor (keras_hub backbones) is rebuilt from its config.
    return isinstance(model, Functional) and type(model).__init__ is Functional.__init__


class Float64Oracle:
    """The oracle callable of a fixture (`Fixture.oracle`): outputs `output_0`, … in the model's output
    order, computed by the float64 rebuild of the model `build()` returns. The rebuild is made on the
    first call (raising Float64Unavailable if Keras cannot make it); outputs are kept per input bytes
    (every case of a batch asks for the same inputs)."""

    def __init__(self, build: Callable[[], Any], outputs: tuple[str, ...]):
        self.build, self.outputs = build, outputs
        self._model: Any = None
        self._memo: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, model64: Any, outputs: tuple[str, ...]) -> Float64Oracle:
        """The oracle of a float64 model already made (`float64_clone`)."""
        oracle = cls(lambda: model64, outputs)
        oracle._model = model64
        return oracle

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                from harness.export.common import import_tf

                import_tf()
                self._model = float64_clone(self.build())
            return self._model

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        key = hashlib.sha1(b"".join(k.encode() + np.ascontiguousarray(v).tobytes() for k, v in sorted(inputs.items()))).hexdigest()
        if key not in self._memo:
            model = self.model()
            feed = [np.asarray(inputs[t.name.split(":")[0]]) for t in model.inputs]
            feed = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in feed]
            out = model(feed if isinstance(model.input, (list, tuple)) else feed[0], training=False)  # as it was built
            if isinstance(out, dict):  # outputs keyed by name (the fixture's names are the dict's keys): by key, never by order
                self._memo[key] = {str(k): np.asarray(v) for k, v in out.items()}
            else:
                outs = list(out) if isinstance(out, (list, tuple)) else [out]
                self._memo[key] = {name: np.asarray(o) for name, o in zip(self.outputs, outs)}
        return self._memo[key]
