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
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.comparator import DEFAULT_TOLERANCES, Tolerance
from harness.errors import HarnessError, unknown

if TYPE_CHECKING:
    from harness_runners.custom import CustomObjects

Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One signature input: name, NumPy dtype name and shape (None for a dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass
class Fixture:
    """A reference model: a seeded builder, its signature, a seeded input generator, an optional
    float64 oracle and tolerances by format class (overridable per output)."""

    name: str
    description: str
    # "module" (build returns a tf.Module and its signature fn), "keras" (a keras.Model), "graph" (build
    # writes a SavedModel folder, e.g. a TF1 graph, and returns its path), "user" (a user's SavedModel)
    # or "given" (a user's .onnx, .tflite or TF.js model: build returns its path).
    kind: str
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
    group: str | None = None  # opt-in set (`zoo`): left out of the default matrix, selected by `-f GROUP` or by name
    extra_formats: tuple[str, ...] = ()  # opt-in formats (converter options such as tflite_select) in its matrix
    signature: str = "serving_default"
    tag: str = "serve"  # the meta graph's tag set, comma-separated ("serve,extra")
    # Other signatures of the SavedModel (`harness run --signature NAME`): inputs made by these
    # generators and judged against these oracles where the signature needs its own (string inputs).
    signature_generators: dict[str, Callable[[np.random.Generator, int], Inputs]] = field(default_factory=dict)
    signature_oracles: dict[str, Callable[[Inputs], dict[str, np.ndarray]]] = field(default_factory=dict)
    # `harness check --inputs/--expected/--seed`: the user's inputs, their golden outputs (then the
    # baseline of every case, the reference included) and the seed of generated inputs.
    check_signal: bool = True  # False: no signal (inconclusive) check — pinned minimal regression inputs
    given_inputs: Inputs | None = None
    golden: dict[str, np.ndarray] | None = None
    seed: int = 0
    source: Path | None = None  # the file that defines it; its bytes go into the cache key
    # `harness check --custom-objects/--import`: the code a Keras model's custom layers come from, copied
    # into its .keras/.h5 artifacts for the tf worker (harness_runners.custom).
    custom_objects: CustomObjects | None = None
    # A given .onnx/.tflite/TF.js model (kind "given"): its one format, handed out as it is (no
    # export), and the (format, runtime) whose outputs are the reference instead of TF on the SavedModel.
    formats: tuple[str, ...] | None = None
    reference: tuple[str, str] = ("savedmodel", "tf")
    source_digest: str | None = None  # set for models that do not come from a fixture file
    # The names a user knows an output by (a Keras output layer's name, a TFLite or TF.js tensor name),
    # to the signature's output name the harness uses (`logits` -> `output_0`): goldens and
    # tolerances may be given by either.
    output_aliases: dict[str, str] = field(default_factory=dict)
    # What integer inputs of a user's model accept, [low, high) by input name (an embedding's vocabulary,
    # the range of the user's own inputs): generated input sets stay inside it.
    int_bounds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def make_inputs(self, batch: int, seed: int = 0, variant: int = 0) -> Inputs:
        """The same bytes every run for the same (batch, seed, variant); variant 1 draws from the
        second input distribution. A user's own inputs (`given_inputs`) are the first input set; the
        other sets, which tell an output that ignores its input, are still drawn."""
        if self.given_inputs is not None and seed == 0 and variant == 0:
            return dict(self.given_inputs)
        seed += self.seed
        rng = np.random.default_rng([seed, batch] if variant == 0 else [seed, batch, variant])
        generate = self.generate_alt if variant and self.generate_alt else self.generate
        out = generate(rng, batch)
        return {k: np.asarray(v, order="C") for k, v in out.items()}  # C order, and a scalar stays 0-d

    def tolerance(self, cls: str, output: str) -> Tolerance:
        """The bound of `output` in tolerance class `cls` (a format's class: harness.export.format_class)."""
        return self.output_tolerances.get(
            (output, cls), self.tolerances.get(cls, DEFAULT_TOLERANCES[cls])
        )

    def digest(self) -> str:
        """What the fixture's artifacts are made from: its own file and the project code it imports
        (see `source_closure`), so a change of a shared helper (fixtures/_nn.py) makes new artifacts."""
        if self.source_digest:
            return self.source_digest
        assert self.source is not None
        known = _DIGESTS.get(self.source)
        if known is not None and _stats(known[0]) == known[1]:  # a few stat calls: digest() is asked per case
            return known[2]
        closure = source_closure(self.source, _FILES.setdefault(self.source, []))
        if len(closure) == 1:  # a self-contained file: its bytes' digest, as before helpers were hashed (cache keys unchanged)
            digest = hashlib.sha256(closure[0][1]).hexdigest()
        else:
            h = hashlib.sha256()
            for name, data in closure:
                h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            digest = h.hexdigest()
        files = list(_FILES[self.source])  # the files read (their stats tell a change without hashing again)
        _DIGESTS[self.source] = (files, _stats(files), digest)
        return digest


FIXTURES_PACKAGE = "harness_fixtures"
_DIGESTS: dict[Path, tuple[list[Path], list[tuple[int, int]], str]] = {}  # source -> (files, their stats, digest)
_FILES: dict[Path, list[Path]] = {}  # the files of the closure, per source


def _stats(files: list[Path]) -> list[tuple[int, int]]:
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((-1, -1))
    return out


def source_closure(source: Path, files: list[Path] | None = None) -> list[tuple[str, bytes]]:
    """The code a fixture module's exports depend on, as (name, bytes), in a stable order: its own file;
    every module of the fixtures package it imports, transitively (fixtures/_nn.py, another fixture),
    whole; and the source of each function it imports from the harness (`set_weights` draws the
    weights). Classes imported from the harness (Fixture, TensorSpec) describe the fixture and leave
    the exported model alone, so they stay out: a change to the registry does not re-export everything."""
    import ast
    import importlib.util
    import inspect

    package_dir = Path(importlib.util.find_spec(FIXTURES_PACKAGE).submodule_search_locations[0])  # type: ignore[union-attr,index]
    seen: dict[str, bytes] = {}
    read: list[Path] = files if files is not None else []
    read.clear()
    todo = [Path(source)]
    while todo:
        path = todo.pop()
        key = f"{FIXTURES_PACKAGE}/{path.relative_to(package_dir)}" if package_dir in path.parents else path.name
        if key in seen:
            continue
        data = path.read_bytes()
        seen[key] = data
        read.append(path)
        for node in ast.walk(ast.parse(data, filename=str(path))):
            pairs: list[tuple[str, str | None]]
            if isinstance(node, ast.Import):
                pairs = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: inside the fixtures package
                    base = FIXTURES_PACKAGE + (f".{base}" if base else "")
                pairs = [(base, alias.name) for alias in node.names]
            else:
                continue
            for module, name in pairs:
                if module == FIXTURES_PACKAGE or module.startswith(FIXTURES_PACKAGE + "."):
                    # `from harness_fixtures import _nn` names a module; `from harness_fixtures._nn import x` a name in one.
                    for candidate in ([f"{module}.{name}", module] if name else [module]):
                        spec = importlib.util.find_spec(candidate)
                        if spec is not None and spec.origin and spec.origin.endswith(".py"):
                            todo.append(Path(spec.origin))
                            break
                elif name and (module == "harness" or module.startswith("harness.")):
                    obj = getattr(importlib.import_module(module), name, None)
                    if inspect.isfunction(obj):
                        seen[f"{module}.{name}"] = inspect.getsource(obj).encode()
    return sorted(seen.items())


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
    """Every fixture defined in the `fixtures` package: a module defines one FIXTURE, or a FIXTURES list
    for a family (a size sweep), or `derived(registry)`, fixtures made from the others once they are all
    loaded (fixtures/fuzz_regressions.py: the disagreements `harness fuzz` saved, which the fuzzer turns
    back into fixtures). The registry imports no tool of the harness: a module that needs one imports it."""
    global _REGISTRY
    if _REGISTRY is None:
        import harness_fixtures as pkg

        found: dict[str, Fixture] = {}
        derived: list[Callable[[dict[str, Fixture]], dict[str, Fixture]]] = []
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            try:
                mod = importlib.import_module(f"harness_fixtures.{info.name}")
            except Exception as e:  # a fixture being edited: one line naming it, not a traceback for every command
                where = Path(pkg.__path__[0]) / f"{info.name}.py"
                line = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
                raise HarnessError(f"fixture module {where} cannot be imported{line}: {type(e).__name__}: {e} "
                                   "(expected a module defining FIXTURE or FIXTURES)") from None
            for fx in [getattr(mod, "FIXTURE", None), *getattr(mod, "FIXTURES", [])]:
                if isinstance(fx, Fixture):
                    fx.source = Path(mod.__file__)  # type: ignore[arg-type]
                    found[fx.name] = fx
            if callable(getattr(mod, "derived", None)):
                derived.append(mod.derived)
        for make in derived:  # each sees the fixtures the modules define (a copy: it cannot change them)
            found.update(make(dict(found)))
        _REGISTRY = found
    return _REGISTRY


def get_fixture(name: str) -> Fixture:
    fixtures = all_fixtures()
    if name not in fixtures:
        raise unknown("fixture", name, list(fixtures))
    return fixtures[name]


def generator_for(specs: tuple[TensorSpec, ...], alt: bool = False,
               bounds: dict[str, tuple[int, int]] | None = None) -> Callable[[np.random.Generator, int], Inputs]:
    """Inputs for a model we know only by its signature: the batch for the first dynamic dimension,
    8 for any other; normal floats, small non-negative integers (valid as indices), random booleans.
    The alternative distribution (`alt`) draws floats uniformly from [0, 1) (image-like) and integers
    from 0..1, for models that the first one saturates. `bounds`: what an integer input accepts,
    [low, high) by name (an embedding's vocabulary, the range of the user's inputs): integers are drawn
    inside it, never an id the model cannot take."""
    bounds = dict(bounds or {})

    def generate(rng: np.random.Generator, batch: int) -> Inputs:
        out = {}
        for s in specs:
            shape = [batch if i == 0 and d is None else (8 if d is None else d) for i, d in enumerate(s.shape)]
            dt = np.dtype(s.dtype)
            if dt.kind == "f":
                out[s.name] = (rng.uniform(0.0, 1.0, shape) if alt else rng.standard_normal(shape)).astype(dt)
            elif dt.kind in "iu":
                low, high = bounds.get(s.name, (0, 10))
                if alt:
                    high = min(high, low + 2)
                out[s.name] = rng.integers(low, max(high, low + 1), size=shape).astype(dt)
            elif dt.kind == "b":
                out[s.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise HarnessError(f"input {s.name!r} has dtype {s.dtype}: expected a numeric or boolean dtype")
        return out

    return generate


def output_keys(model: Any) -> list[str] | None:
    """The keys of a Keras model's dict outputs (`keras.Model(x, {"a": a, "b": b})`) in the order of
    `model.outputs`, or None for a tensor or a list. Keras flattens a dict by sorted key; flattening a
    dict of its own keys says which, whatever the rule."""
    import keras

    struct = getattr(model, "_outputs_struct", None)
    if not isinstance(struct, dict):
        return None
    return [str(k) for k in keras.tree.flatten({k: k for k in struct})]
