"""Level 2 of `harness fuzz`: small random Keras graphs from an op vocabulary, with valid shapes.

A model is a JSON spec (so a regression case can rebuild it exactly, and hypothesis can shrink it):
an input shape, then nodes, each an op applied to earlier nodes (node 0 is the input), the last node the
output. Shapes are tracked while drawing, so every drawn spec builds. Weights are deterministic
(`set_weights` with the spec's seed).

The float64 oracle is the **TF reference in float64**: the same spec built with every layer in float64
(`dtype="float64"`), given the float32 model's weights, run by Keras/TensorFlow on the CPU in this process.
No NumPy oracle is written per op; TF's float64 kernels are the independent, more precise computation.
The value search (`value_search`, after NNSmith's) draws inputs (seed, distribution, scale) and, while
an intermediate of the float64 model is not finite or beyond float32 range, searches over the input's
scale and offset (x·s + o: scaling down first, then shifting to other regions, for models whose valid
region does not contain small inputs: an offset in a Rescaling, an exponential) within a small budget
of float64 evaluations; an example that cannot be made so is rejected, so every comparison is between
finite numbers.

At this level one finding is kept per (format, runtime) pair and cause (harness.fuzz.findings.Causes): a model
hitting a converter error or runtime problem already found is not a new finding, and the pair is still
searched for other causes. A numeric finding's first diverging node is found against the float64
model node by node (harness.fuzz.search.first_diverging_node), so a wrong TF reference is located too.
The search of this level (`fuzz_models`) is harness.fuzz.search's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.fixtures import Fixture, Inputs, TensorSpec, set_weights

ACTIVATIONS = ("relu", "tanh", "sigmoid", "relu6", "elu", "selu", "softplus", "softsign", "silu", "gelu", "hard_sigmoid",
               "hard_silu", "leaky_relu", "exponential", "softmax", "log_softmax", "mish")
IMAGE_OPS = ("conv", "dwconv", "dense", "act", "pool", "gpool", "add", "mul", "sub", "max", "concat", "flatten", "permute",
             "reshape", "upsample", "resize", "rescale")
VECTOR_OPS = ("dense", "act", "add", "mul", "sub", "max", "concat", "reshape", "rescale")
RESCALE_SCALES = (1.0, 2.0, 0.5, 1 / 255)  # keras.layers.Rescaling as preprocessing uses it: x·scale + offset
RESCALE_OFFSETS = (0.0, -1.0, 1.0, 5.0)
SIDES = (4, 1, 3, 5, 7, 8)
INTERMEDIATE_LIMIT = 1e30  # float64 intermediates beyond this would overflow or lose all precision in float32


def _out_len(n: int, k: int, s: int, padding: str) -> int:
    return math.ceil(n / s) if padding == "same" else (n - k) // s + 1


def spec_strategy(max_nodes: int = 6):
    """Model specs: an image [H,W,C] or vector [F] input and 1..max_nodes ops with valid shapes."""
    from hypothesis import strategies as st

    @st.composite
    def draw(d):
        kind = d(st.sampled_from(["image", "vector"]))
        shape: tuple[int, ...] = (d(st.sampled_from(SIDES)), d(st.sampled_from(SIDES)), d(st.integers(1, 4))) if kind == "image" \
            else (d(st.integers(1, 16)),)
        shapes = [shape]
        nodes: list[dict] = []
        for _ in range(d(st.integers(1, max_nodes))):
            src = len(shapes) - 1 - d(st.integers(0, len(shapes) - 1))  # 0: the newest node (shrinks to a chain)
            s = shapes[src]
            op = d(st.sampled_from(IMAGE_OPS if len(s) == 3 else VECTOR_OPS))
            node: dict[str, Any] = {"op": op, "in": [src]}
            out: tuple[int, ...]
            if op == "conv" or op == "dwconv" or op == "pool":
                k = d(st.integers(1, 3)) if op != "pool" else 2
                stride = d(st.integers(1, 2))
                padding = d(st.sampled_from(["same", "valid"]))
                if padding == "valid" and (s[0] < k or s[1] < k):
                    padding = "same"
                h, w = _out_len(s[0], k, stride, padding), _out_len(s[1], k, stride, padding)
                node.update(kernel=k, stride=stride, padding=padding)
                if op == "conv":
                    node["filters"] = d(st.integers(1, 8))
                    out = (h, w, node["filters"])
                elif op == "dwconv":
                    node["multiplier"] = d(st.integers(1, 2))
                    out = (h, w, s[2] * node["multiplier"])
                else:
                    node["mode"] = d(st.sampled_from(["max", "avg"]))
                    out = (h, w, s[2])
            elif op == "dense":
                node["units"] = d(st.integers(1, 8))
                out = (*s[:-1], node["units"])
            elif op == "act":
                node["fn"] = d(st.sampled_from(ACTIVATIONS))
                out = s
            elif op == "rescale":
                node["scale"] = d(st.sampled_from(RESCALE_SCALES))
                node["offset"] = d(st.sampled_from(RESCALE_OFFSETS))
                out = s
            elif op == "gpool":
                node["mode"] = d(st.sampled_from(["avg", "max"]))
                out = (s[2],)
            elif op in ("add", "mul", "sub", "max"):
                same = [i for i, t in enumerate(shapes) if t == s]
                node["in"] = [src, same[len(same) - 1 - d(st.integers(0, len(same) - 1))]]
                out = s
            elif op == "concat":
                fits = [i for i, t in enumerate(shapes) if t[:-1] == s[:-1]]
                other = fits[len(fits) - 1 - d(st.integers(0, len(fits) - 1))]
                node["in"] = [src, other]
                out = (*s[:-1], s[-1] + shapes[other][-1])
            elif op == "flatten":
                out = (s[0] * s[1] * s[2],)
            elif op == "permute":
                out = (s[1], s[0], s[2])
            elif op == "reshape":
                if len(s) == 3:
                    out = (s[1], s[0], s[2])  # same elements, other rows: a reshape, not a transpose
                else:
                    divisors = [q for q in range(1, s[0] + 1) if s[0] % q == 0]
                    h = divisors[d(st.integers(0, len(divisors) - 1))]
                    out = (h, s[0] // h, 1)
                node["shape"] = list(out)
            elif op == "upsample":
                node["mode"] = d(st.sampled_from(["nearest", "bilinear"]))
                if s[0] * 2 > 16 or s[1] * 2 > 16:
                    node = {"op": "act", "in": [src], "fn": "relu"}
                    out = s
                else:
                    out = (2 * s[0], 2 * s[1], s[2])
            else:  # resize
                node["mode"] = d(st.sampled_from(["bilinear", "nearest"]))
                node["size"] = [d(st.integers(1, 9)), d(st.integers(1, 9))]
                out = (node["size"][0], node["size"][1], s[2])
            node["shape"] = list(out)
            nodes.append(node)
            shapes.append(out)
        return {"input": list(shape), "nodes": nodes, "seed": d(st.integers(0, 2**16 - 1))}

    return draw()


def build(spec: dict, dtype: str = "float32", outputs: str = "last"):
    """The Keras model of a spec; `outputs="all"` returns every node's output (the value search)."""
    import keras
    from keras import layers

    x = keras.Input(shape=tuple(spec["input"]), name="x", dtype=dtype)
    tensors = [x]
    for i, n in enumerate(spec["nodes"]):
        a = tensors[n["in"][0]]
        b = tensors[n["in"][1]] if len(n["in"]) > 1 else None
        name = f"n{i + 1}_{n['op']}"
        op = n["op"]
        if op == "conv":
            y = layers.Conv2D(n["filters"], n["kernel"], strides=n["stride"], padding=n["padding"], dtype=dtype, name=name)(a)
        elif op == "dwconv":
            y = layers.DepthwiseConv2D(n["kernel"], strides=n["stride"], padding=n["padding"], depth_multiplier=n["multiplier"],
                                       dtype=dtype, name=name)(a)
        elif op == "pool":
            cls = layers.MaxPooling2D if n["mode"] == "max" else layers.AveragePooling2D
            y = cls(n["kernel"], strides=n["stride"], padding=n["padding"], dtype=dtype, name=name)(a)
        elif op == "gpool":
            cls = layers.GlobalMaxPooling2D if n["mode"] == "max" else layers.GlobalAveragePooling2D
            y = cls(dtype=dtype, name=name)(a)
        elif op == "dense":
            y = layers.Dense(n["units"], dtype=dtype, name=name)(a)
        elif op == "act":
            y = layers.Activation(n["fn"], dtype=dtype, name=name)(a)
        elif op == "rescale":
            y = layers.Rescaling(n["scale"], n["offset"], dtype=dtype, name=name)(a)
        elif op in ("add", "mul", "sub", "max"):
            cls = {"add": layers.Add, "mul": layers.Multiply, "sub": layers.Subtract, "max": layers.Maximum}[op]
            y = cls(dtype=dtype, name=name)([a, b])
        elif op == "concat":
            y = layers.Concatenate(axis=-1, dtype=dtype, name=name)([a, b])
        elif op == "flatten":
            y = layers.Flatten(dtype=dtype, name=name)(a)
        elif op == "permute":
            y = layers.Permute((2, 1, 3), dtype=dtype, name=name)(a)
        elif op == "reshape":
            y = layers.Reshape(tuple(n["shape"]), dtype=dtype, name=name)(a)
        elif op == "upsample":
            y = layers.UpSampling2D(2, interpolation=n["mode"], dtype=dtype, name=name)(a)
        elif op == "resize":
            y = layers.Resizing(n["size"][0], n["size"][1], interpolation=n["mode"], dtype=dtype, name=name)(a)
        else:
            raise ValueError(f"unknown op {op!r} in a fuzz model spec")
        tensors.append(y)
    outs = tensors[1:] if outputs == "all" else tensors[-1]
    model = keras.Model(x, outs, name="fuzzmodel")
    return model


def describe(spec: dict) -> str:
    parts = []
    for i, n in enumerate(spec["nodes"]):
        args = {k: v for k, v in n.items() if k not in ("op", "in", "shape")}
        extra = ",".join(f"{k}={v}" for k, v in args.items())
        parts.append(f"n{i + 1}={n['op']}({','.join(f'n{j}' for j in n['in'])}{';' + extra if extra else ''})->{n['shape']}")
    return f"x{spec['input']} " + " ".join(parts)


_F64: dict[str, Any] = {}  # digest -> the float64 model of every node's output


def _digest(spec: dict) -> str:
    # This file builds the model: its bytes are part of what the artifact is made from (the export cache key).
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode() + _SOURCE).hexdigest()


_SOURCE = hashlib.sha256(open(__file__, "rb").read()).digest()


def _built(spec: dict):
    model = build(spec)
    set_weights(model, spec["seed"])
    return model


def float64_model(spec: dict):
    """Every node's output in float64, with the float32 model's weights (cast exactly)."""
    key = _digest(spec)
    if key not in _F64:
        from harness.export.common import import_tf

        import_tf()
        ref = _built(spec)
        m64 = build(spec, "float64", outputs="all")
        for layer in ref.layers:
            if layer.weights:
                m64.get_layer(layer.name).set_weights([np.asarray(w, dtype=np.float64) for w in layer.get_weights()])
        if len(_F64) > 8:
            _F64.clear()
        _F64[key] = m64
    return _F64[key]


def intermediates(spec: dict, x: np.ndarray) -> list[np.ndarray]:
    outs = float64_model(spec)(np.asarray(x, dtype=np.float64), training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [np.asarray(o) for o in outs]


def model_fixture(spec: dict) -> Fixture:
    """A generated model as a Fixture: kind keras, input `x`, output `output_0`, the TF float64 oracle."""
    digest = _digest(spec)

    def generate(rng: np.random.Generator, batch: int) -> Inputs:
        return {"x": rng.standard_normal((batch, *spec["input"])).astype(np.float32)}

    def oracle(inputs: Inputs) -> dict[str, np.ndarray]:
        return {"output_0": intermediates(spec, inputs["x"])[-1]}

    fx = Fixture(
        name=f"fuzzmodel-{digest[:12]}", description=f"generated by harness fuzz: {describe(spec)}"[:300], kind="keras",
        inputs=(TensorSpec("x", "float32", (None, *spec["input"])),), outputs=("output_0",), build=lambda: _built(spec),
        generate=generate, oracle=oracle, batches=(1,), source_digest=digest,
    )
    fx._fuzz_spec = spec  # type: ignore[attr-defined]
    return fx


def valid(spec: dict, x: np.ndarray) -> bool:
    """Whether every float64 intermediate of the model is finite and within float32 range for `x`."""
    if not (np.all(np.isfinite(x)) and float(np.max(np.abs(x), initial=0.0)) < INTERMEDIATE_LIMIT):
        return False
    with np.errstate(all="ignore"):
        return all(np.all(np.isfinite(o)) and float(np.max(np.abs(o), initial=0.0)) < INTERMEDIATE_LIMIT for o in intermediates(spec, x))


@dataclass(frozen=True)
class Found:
    """Inputs the value search found valid: x·scale + offset, and how many float64 evaluations it took."""

    values: np.ndarray
    scale: float
    offset: float
    tries: int


SEARCH_SCALES = (1.0, 0.1, 0.01, 1e-3, 1e-4)
SEARCH_OFFSETS = (-1.0, 1.0, -10.0, 10.0, -100.0, 100.0, -1000.0, 1000.0)
SEARCH_BUDGET = 24  # float64 evaluations of the model (each a few milliseconds)


def value_search(spec: dict, x: np.ndarray, budget: int = SEARCH_BUDGET) -> Found | None:
    """Input values for which the float64 model stays finite (NNSmith's value search, gradient-free): the
    drawn `x` as it is, then x·s for s down to 1e-4 (overflow grows with magnitude), then x·s + o, shifting
    the values to other regions (offsets of ±1 to ±1000, at scales 1, 0.1, 0.01): a model whose valid
    region lies away from zero (a Rescaling offset before an exponential) has no valid input near zero,
    so scaling down alone cannot find one. At most `budget` evaluations; None if nothing was valid."""
    candidates = [(s, 0.0) for s in SEARCH_SCALES] + [(s, o) for o in SEARCH_OFFSETS for s in SEARCH_SCALES[:3]]
    for tries, (scale, offset) in enumerate(candidates[:budget], 1):
        with np.errstate(all="ignore"):
            values = (x * scale + offset).astype(np.float32)
        if valid(spec, values.astype(np.float64)):
            return Found(values, scale, offset, tries)
    return None


def model_strategy(max_nodes: int = 6):
    """(spec, batch, seed, distribution, scale): a model and how to draw its inputs."""
    from hypothesis import strategies as st

    return st.tuples(spec_strategy(max_nodes), st.sampled_from([1, 2, 3]), st.integers(0, 2**16 - 1),
                     st.sampled_from(["normal", "uniform"]), st.sampled_from([1.0, 10.0, 100.0, 0.01, 1e4]))


def op_label(node: dict) -> str:
    """What an op is, for telling causes apart: the op with its function or mode (act/softsign, pool/max)."""
    kind = node.get("fn") or node.get("mode")
    return f"{node['op']}/{kind}" if kind else str(node["op"])


def op_labels(fx: Fixture) -> set[str]:
    spec = getattr(fx, "_fuzz_spec", None)
    return {op_label(n) for n in spec["nodes"]} if spec else set()


def finding_label(fx: Fixture, op: str | None) -> str | None:
    """The label of a finding's first diverging node ("n3_max (Maximum)" -> "max"), None when unknown."""
    spec = getattr(fx, "_fuzz_spec", None)
    m = re.match(r"n(\d+)_", op or "")
    if spec is None or m is None or not 1 <= int(m.group(1)) <= len(spec["nodes"]):
        return None
    return op_label(spec["nodes"][int(m.group(1)) - 1])


def ancestors(spec: dict) -> list[int]:
    """The nodes (1-based, in order) the output depends on: a node off that path cannot be where it diverges."""
    need, stack = set(), [len(spec["nodes"])]
    while stack:
        i = stack.pop()
        if i and i not in need:
            need.add(i)
            stack.extend(spec["nodes"][i - 1]["in"])
    return sorted(need)


def node_fixture(spec: dict, index: int) -> Fixture:
    """The generated model cut after node `index` (1-based), with the full model's weights, and the float64
    model's output of that node as its oracle."""
    base = model_fixture(spec)
    name = f"n{index}_{spec['nodes'][index - 1]['op']}"

    def build():
        import keras

        full = _built(spec)
        return keras.Model(full.inputs, full.get_layer(name).output)

    def oracle(inputs: Inputs) -> dict[str, np.ndarray]:
        return {"output_0": intermediates(spec, inputs["x"])[index - 1]}

    digest = hashlib.sha256(f"{base.source_digest}:{index}".encode()).hexdigest()
    fx = replace(base, name=f"{base.name}~n{index}", description=f"{base.description} (cut after {name})"[:300], build=build,
                 oracle=oracle, source_digest=digest)
    fx._fuzz_spec = spec  # type: ignore[attr-defined]
    return fx
