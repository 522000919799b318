"""Fixture registry and the Fixture type; the definitions live in the top-level `fixtures/` package.

Fixture modules import only NumPy at module level, so listing fixtures, generating inputs and
hashing their source never imports TensorFlow (that keeps `harness doctor` and warm runs fast).
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError, unknown

Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One signature input: name, NumPy dtype name and shape (None for a dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Tolerance:
    """When a case passes. Float classes use atol/rtol (numpy.allclose semantics: |a-b| <= atol + rtol*|ref|);
    quantised classes use SNR and top-1 agreement, since elementwise bounds say little there."""

    atol: float | None = None
    rtol: float | None = None
    min_snr_db: float | None = None
    min_top1: float | None = None


# The format class decides which tolerance applies (design: conformance policy).
FORMAT_CLASS: dict[str, str] = {
    "tflite_fp16": "float16",
    "tflite_dynamic": "dynamic-range",
    "tflite_int8": "int8",
}

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5),
    "float16": Tolerance(atol=2e-3, rtol=2e-3),
    "dynamic-range": Tolerance(min_snr_db=30.0, min_top1=1.0),
    "int8": Tolerance(min_snr_db=15.0, min_top1=0.75),
}


def describe(tol: Tolerance) -> str:
    """The rule a tolerance applies, in words: what a reader of a verdict needs to know."""
    parts = []
    if tol.atol is not None or tol.rtol is not None:
        parts.append(f"|out - ref| <= {tol.atol or 0:g} + {tol.rtol or 0:g}·|ref| everywhere")
    if tol.min_snr_db is not None:
        parts.append(f"SNR >= {tol.min_snr_db:g} dB")
    if tol.min_top1 is not None:
        parts.append(f"top-1 agreement >= {tol.min_top1:g} (classifier outputs)")
    return " and ".join(parts) or "no bound"


def format_class(fmt: str) -> str:
    return FORMAT_CLASS.get(fmt, "float32")


@dataclass
class Fixture:
    """A reference model: a seeded builder, its signature, a seeded input generator, an optional
    float64 oracle and tolerances by format class (overridable per output)."""

    name: str
    description: str
    kind: str  # "module" (tf.Module + signature fn), "keras" (keras.Model) or "user" (a SavedModel folder)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    build: Callable[[], Any]
    generate: Callable[[np.random.Generator, int], Inputs]
    # A second input distribution, tried when the first leaves the reference without signal (a
    # saturated head, an output that ignores the input) before the cases are called inconclusive.
    generate_alt: Callable[[np.random.Generator, int], Inputs] | None = None
    oracle: Callable[[Inputs], dict[str, np.ndarray]] | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    output_tolerances: dict[tuple[str, str], Tolerance] = field(default_factory=dict)
    classifier_outputs: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 4)
    batchable: bool = True  # the first dimension is a free batch dimension
    flops: Callable[[int], float] | None = None  # floating-point operations of one call at a batch size
    bench_only: bool = False  # left out of the default matrix (large benchmark sweeps)
    signature: str = "serving_default"
    tag: str = "serve"
    source: Path | None = None  # the file that defines it; its bytes go into the cache key
    source_digest: str | None = None  # set for models that do not come from a fixture file

    def make_inputs(self, batch: int, seed: int = 0, variant: int = 0) -> Inputs:
        """The same bytes every run for the same (batch, seed, variant); variant 1 draws from the
        second input distribution."""
        rng = np.random.default_rng([seed, batch] if variant == 0 else [seed, batch, variant])
        generate = self.generate_alt if variant and self.generate_alt else self.generate
        out = generate(rng, batch)
        return {k: np.ascontiguousarray(v) for k, v in out.items()}

    def tolerance(self, fmt: str, output: str) -> Tolerance:
        cls = format_class(fmt)
        return self.output_tolerances.get(
            (output, cls), self.tolerances.get(cls, DEFAULT_TOLERANCES[cls])
        )

    def digest(self) -> str:
        if self.source_digest:
            return self.source_digest
        assert self.source is not None
        return hashlib.sha256(self.source.read_bytes()).hexdigest()


def set_weights(model: Any, seed: int) -> None:
    """Deterministic weights for a Keras model, independent of Keras' own initialisers:
    Glorot-uniform kernels and small normal biases drawn from one seeded NumPy generator."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if len(shape) >= 2:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            value = rng.uniform(-limit, limit, size=shape)
        else:
            value = rng.normal(0.0, 0.05, size=shape)
        w.assign(value.astype(np.float32))


_REGISTRY: dict[str, Fixture] | None = None


def all_fixtures() -> dict[str, Fixture]:
    """Every fixture defined in the `fixtures` package (one module each, exporting FIXTURE)."""
    global _REGISTRY
    if _REGISTRY is None:
        import fixtures as pkg

        found: dict[str, Fixture] = {}
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"fixtures.{info.name}")
            # A module defines one FIXTURE, or a FIXTURES list for a family (a size sweep).
            for fx in [getattr(mod, "FIXTURE", None), *getattr(mod, "FIXTURES", [])]:
                if isinstance(fx, Fixture):
                    fx.source = Path(mod.__file__)  # type: ignore[arg-type]
                    found[fx.name] = fx
        _REGISTRY = found
    return _REGISTRY


def get_fixture(name: str) -> Fixture:
    fixtures = all_fixtures()
    if name not in fixtures:
        raise unknown("fixture", name, list(fixtures))
    return fixtures[name]


def _digest_path(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _generator(specs: tuple[TensorSpec, ...], alt: bool = False) -> Callable[[np.random.Generator, int], Inputs]:
    """Inputs for a model we know only by its signature: the batch for the first dynamic dimension,
    8 for any other; normal floats, small non-negative integers (valid as indices), random booleans.
    The alternative distribution (`alt`) draws floats uniformly from [0, 1) (image-like) and integers
    from 0..1, for models that the first one saturates."""

    def generate(rng: np.random.Generator, batch: int) -> Inputs:
        out = {}
        for s in specs:
            shape = [batch if i == 0 and d is None else (8 if d is None else d) for i, d in enumerate(s.shape)]
            dt = np.dtype(s.dtype)
            if dt.kind == "f":
                out[s.name] = (rng.uniform(0.0, 1.0, shape) if alt else rng.standard_normal(shape)).astype(dt)
            elif dt.kind in "iu":
                out[s.name] = rng.integers(0, 2 if alt else 10, size=shape).astype(dt)
            elif dt.kind == "b":
                out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise HarnessError(f"input {s.name!r} has dtype {s.dtype}: expected a numeric or boolean dtype")
        return out

    return generate


def user_fixture(path: Path, signature: str = "serving_default", tag: str = "serve") -> Fixture:
    """A fixture for a model author's own SavedModel folder or Keras `.keras`/`.h5` file, with inputs
    generated from its signature (`harness check`)."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected a SavedModel folder or a .keras/.h5 file)")
    name = "check-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name.split(".")[0])
    digest = _digest_path(path)
    if path.is_dir():
        from harness.export.common import read_signature

        ins, outs = read_signature(path, signature, tag)
        inputs = tuple(TensorSpec(s.name, s.dtype, tuple(s.shape or ())) for s in ins)
        for s in ins:
            if s.shape is None:
                raise HarnessError(f"input {s.name!r} of {path} has unknown rank: expected a signature with a known rank")
        fx = Fixture(
            name=name, description=f"user SavedModel {path}", kind="user", inputs=inputs,
            outputs=tuple(s.name for s in outs), build=lambda: path, generate=_generator(inputs), generate_alt=_generator(inputs, alt=True),
            signature=signature, tag=tag, source_digest=digest,
        )
        return fx
    if path.suffix not in (".keras", ".h5"):
        raise HarnessError(f"cannot check {path}: expected a SavedModel folder or a .keras/.h5 file")
    from harness.export.common import import_tf

    import_tf()
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise HarnessError(f"cannot load Keras model {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    inputs = tuple(
        TensorSpec(t.name, np.dtype(t.dtype).name, tuple(None if d is None else int(d) for d in t.shape)) for t in model.inputs
    )
    return Fixture(
        name=name, description=f"user Keras model {path}", kind="keras", inputs=inputs,
        outputs=tuple(f"output_{i}" for i in range(len(model.outputs))),
        build=lambda: keras.models.load_model(str(path), compile=False), generate=_generator(inputs),
        generate_alt=_generator(inputs, alt=True),
        source_digest=digest,
    )
