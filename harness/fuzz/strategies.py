"""What the fuzzer draws: which input values are meaningful for a fixture (ValueDomain), one drawn input
set (Example), the hypothesis strategy derived from a fixture's signature, and a generator that pins
saved inputs (how a regression case replays them)."""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.fixtures import Fixture, Inputs

BATCHES = (1, 2, 3, 5, 7)  # 1 first: hypothesis shrinks towards the start of a sampled_from
OTHER_DIM_MAX = 8

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
SUBNORMALS = (1e-45, -1e-45, 1e-40, -3e-39)  # the smallest float32 subnormal and a few more
EDGE_FINITE = (0.0, -0.0, *SUBNORMALS, F32_TINY, -F32_TINY, 1.0, -1.0, 65504.0, 65520.0, -65520.0)
NONFINITE = (math.inf, -math.inf, math.nan)


@dataclass(frozen=True)
class ValueDomain:
    """Which input values are meaningful for a fixture. `nonfinite`: ±inf and NaN are valid inputs whose
    outputs every runtime should agree on (IEEE semantics of an elementwise op or a matmul), so they are
    drawn and outputs NaN/Inf are compared position by position; otherwise examples whose float64
    oracle (or TF reference) is not finite are rejected. `max_abs`: the largest finite magnitude
    drawn. `low`/`high`: bounds every float input must respect."""

    nonfinite: bool = False
    max_abs: float = 1e6
    low: float | None = None
    high: float | None = None


# Declarations for the project's fixtures (a Fixture may also carry its own as `fuzz_values`).
DOMAINS: dict[str, ValueDomain] = {
    "pow": ValueDomain(nonfinite=True),
    "matmul": ValueDomain(nonfinite=True),
    "conv3x3": ValueDomain(nonfinite=True),
    "gemm*": ValueDomain(nonfinite=True),
}


def domain(fx: Fixture) -> ValueDomain:
    own = getattr(fx, "fuzz_values", None)
    if isinstance(own, ValueDomain):
        return own
    return next((d for pattern, d in DOMAINS.items() if fnmatch.fnmatchcase(fx.name, pattern)), ValueDomain())


@dataclass
class Example:
    """One drawn input set: the arrays, their batch, and how they were made (what a person reads)."""

    batch: int
    inputs: Inputs
    how: str

    def __repr__(self) -> str:  # hypothesis prints the falsifying example with this
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.inputs.items())
        return f"Example(batch={self.batch}, {shapes}: {self.how})"

    def digest(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.inputs):
            h.update(k.encode() + self.inputs[k].dtype.str.encode() + str(self.inputs[k].shape).encode())
            h.update(np.ascontiguousarray(self.inputs[k]).tobytes())
        return h.hexdigest()


def int_ranges(fx: Fixture) -> dict[str, tuple[int, int]]:
    """The range of each integer input, as the fixture's own generator draws it (ids, indices, pixels):
    the signature does not say which integers are valid, the generator does."""
    out: dict[str, tuple[int, int]] = {}
    for seed in range(4):
        for k, v in fx.make_inputs(1, seed=seed).items():
            if v.dtype.kind in "iub":
                lo, hi = int(v.min()), int(v.max())
                if k in out:
                    lo, hi = min(lo, out[k][0]), max(hi, out[k][1])
                out[k] = (lo, hi)
    return out


def _float_values(dom: ValueDomain):
    from hypothesis import strategies as st

    lo = -dom.max_abs if dom.low is None else max(dom.low, -dom.max_abs)
    hi = dom.max_abs if dom.high is None else min(dom.high, dom.max_abs)
    edges = [v for v in EDGE_FINITE if lo <= v <= hi and abs(v) <= dom.max_abs]
    edges += [v for v in (dom.max_abs, -dom.max_abs) if lo <= v <= hi]
    if dom.nonfinite:
        edges += list(NONFINITE)
    return st.one_of(st.sampled_from(edges), st.floats(lo, hi, width=32, allow_subnormal=True))


def input_strategy(fx: Fixture, batches: tuple[int, ...] = BATCHES, max_patches: int = 6):
    """Examples for a fixture, derived from its signature (shapes within the declared bounds: the batch
    from `batches`, other dynamic dimensions 1..8, shared between inputs by axis) and its ValueDomain."""
    from hypothesis import strategies as st

    dom = domain(fx)
    ints = int_ranges(fx)
    if any(s.dtype not in ("float16", "float32", "float64", "bool") and np.dtype(s.dtype).kind not in "iu" for s in fx.inputs):
        raise HarnessError(f"fixture {fx.name} has a non-numeric input: expected numeric or boolean inputs to fuzz")
    dynamic_axes = sorted({i for s in fx.inputs for i, d in enumerate(s.shape) if d is None and i > 0})
    batchable = fx.batchable and any(s.shape and s.shape[0] is None for s in fx.inputs)
    float_scale = [1.0, -1.0, 1e-3, 1e3, 1e-38, 1e30]

    @st.composite
    def draw(draw_):
        batch = draw_(st.sampled_from(batches)) if batchable else 1
        sizes = {axis: draw_(st.integers(1, OTHER_DIM_MAX)) for axis in dynamic_axes}
        shapes = {s.name: tuple(batch if (i == 0 and d is None) else (sizes[i] if d is None else d) for i, d in enumerate(s.shape))
                  for s in fx.inputs}
        mode = draw_(st.sampled_from(["fixture", "fill"]))
        seed = draw_(st.integers(0, 2**16 - 1))
        base = fx.make_inputs(batch, seed=seed) if mode == "fixture" else None
        if base is not None and any(base[s.name].shape != shapes[s.name] for s in fx.inputs):
            base, mode = None, "fill"  # the fixture's generator makes only its own shapes
        out, how = {}, []
        for s in fx.inputs:
            dt = np.dtype(s.dtype)
            shape = shapes[s.name]
            size = int(np.prod(shape))
            if dt.kind == "f":
                values = _float_values(dom)
                if base is not None:
                    scale = draw_(st.sampled_from(float_scale))
                    largest = float(np.abs(base[s.name]).max(initial=0.0))
                    if largest * abs(scale) > dom.max_abs:
                        # At most the domain's largest magnitude: x1e30 inputs to a matmul overflow every
                        # float32 product, and a float64 answer says nothing of what a float32 runtime should give.
                        scale = math.copysign(dom.max_abs / largest, scale)
                    with np.errstate(over="ignore", under="ignore"):
                        arr = (base[s.name].astype(np.float64) * scale).astype(dt)
                    if dom.low is not None or dom.high is not None:
                        arr = np.clip(arr, dom.low, dom.high).astype(dt)
                    how.append(f"{s.name}: the fixture's inputs (seed {seed})" + (f" x{scale:g}" if scale != 1 else ""))
                else:
                    fill = draw_(values)
                    arr = np.full(shape, fill, dtype=dt)
                    how.append(f"{s.name}: all {fill!r}")
            elif dt.kind == "b":
                values = st.booleans()
                arr = base[s.name].copy() if base is not None else np.full(shape, draw_(values), dtype=bool)
                how.append(f"{s.name}: " + (f"the fixture's inputs (seed {seed})" if base is not None else f"all {bool(arr.flat[0])}"))
            else:
                lo, hi = ints.get(s.name, (0, 1))
                values = st.integers(lo, hi)
                arr = base[s.name].copy() if base is not None else np.full(shape, draw_(values), dtype=dt)
                how.append(f"{s.name}: " + (f"the fixture's inputs (seed {seed})" if base is not None else f"all {int(arr.flat[0])}"))
            if size:
                patches = draw_(st.lists(st.tuples(st.integers(0, size - 1), values), max_size=max_patches, unique_by=lambda p: p[0]))
                flat = arr.reshape(-1)
                for index, value in patches:
                    flat[index] = value
                if patches:
                    how.append(f"{s.name}" + ", ".join(f"[{np.unravel_index(i, shape)}]={v!r}" for i, v in patches))
            out[s.name] = np.ascontiguousarray(arr)
        return Example(batch, out, "; ".join(how))

    return draw()


def pinned_generator(inputs: Inputs, fallback: Callable[[np.random.Generator, int], Inputs] | None = None):
    """A fixture generator that returns `inputs` for the Engine's first input set at their batch
    (`make_inputs(batch)`: seed 0, variant 0) and, for its other input sets (the check that an output
    depends on its input), the same values permuted and scaled by 0.5..1.5 (valid wherever the pinned
    ones are). Another batch takes the pinned rows cyclically."""
    batch0 = next(iter(inputs.values())).shape[0] if inputs and next(iter(inputs.values())).ndim else 1

    def generate(rng: np.random.Generator, batch: int) -> Inputs:
        first = rng.bit_generator.state == np.random.default_rng([0, batch]).bit_generator.state
        out = {}
        for k, v in inputs.items():
            v = np.take(v, np.arange(batch) % batch0, axis=0) if v.ndim and batch != batch0 else v.copy()
            if not first:
                flat = rng.permutation(v.reshape(-1))
                if flat.dtype.kind == "f":
                    with np.errstate(all="ignore"):
                        flat = (flat * rng.uniform(0.5, 1.5, flat.shape)).astype(v.dtype)
                v = flat.reshape(v.shape)
            out[k] = np.ascontiguousarray(v)
        return out

    return generate
