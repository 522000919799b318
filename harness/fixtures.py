"""Fixture registry and the Fixture type; the definitions live in the top-level `fixtures/` package.

Fixture modules import only NumPy at module level, so listing fixtures, generating inputs and
hashing their source never imports TensorFlow (that keeps `harness doctor` and warm runs fast).
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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


@dataclass(frozen=True)
class Tolerance:
    """When a case passes. Float classes use atol/rtol (numpy.allclose semantics: |a-b| <= atol + rtol*|ref|);
    quantised classes use SNR and top-1 agreement, since elementwise bounds say little there."""

    atol: float | None = None
    rtol: float | None = None
    min_snr_db: float | None = None
    min_top1: float | None = None


# The format class decides which tolerance applies (design: conformance policy); each format declares
# its class once, in the format registry (harness.export.FORMATS, FormatSpec.tolerance_class).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5),
    "float16": Tolerance(atol=2e-3, rtol=2e-3),
    # A float32 format computed in bfloat16 (openvino@bf16): 8 significant bits, four times float16's error.
    "bfloat16": Tolerance(atol=1e-2, rtol=1e-2),
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


def format_class(fmt: str, precision: str | None = None) -> str:
    """The tolerance class of a format, run by a runtime that computes in `precision` (its worker's
    `info.precision`, when it says): a float32 format computed in float16 (TF.js WebGL without float32
    render targets, openvino@f16) is judged as float16, one computed in bfloat16 (openvino@bf16) as bfloat16."""
    # Imported here: harness.export imports this module (its import needs no TensorFlow either).
    from harness.export import FORMATS

    spec = FORMATS.get(fmt.partition("@")[0])  # `onnx13@1.16`: onnx13 made by a converter build
    cls = spec.tolerance_class if spec is not None else "float32"
    return precision if precision in ("float16", "bfloat16") and cls == "float32" else cls


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

    def tolerance(self, fmt: str, output: str, precision: str | None = None) -> Tolerance:
        cls = format_class(fmt, precision)
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
    """Every fixture defined in the `fixtures` package (one module each, exporting FIXTURE)."""
    global _REGISTRY
    if _REGISTRY is None:
        import harness_fixtures as pkg

        found: dict[str, Fixture] = {}
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
            # A module defines one FIXTURE, or a FIXTURES list for a family (a size sweep).
            for fx in [getattr(mod, "FIXTURE", None), *getattr(mod, "FIXTURES", [])]:
                if isinstance(fx, Fixture):
                    fx.source = Path(mod.__file__)  # type: ignore[arg-type]
                    found[fx.name] = fx
        # Disagreements saved by `harness fuzz` (fixtures/regressions/<id>/): fixtures named fuzz-<id>,
        # the minimal inputs pinned (harness.fuzz is imported only when there are some).
        regressions = Path(pkg.__path__[0]) / "regressions"
        if regressions.is_dir():
            from harness.fuzz import regression_fixtures

            found.update(regression_fixtures(regressions, base=dict(found)))
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


def _generator(specs: tuple[TensorSpec, ...], alt: bool = False,
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


def _embedding_bounds(model: Any) -> dict[str, tuple[int, int]]:
    """The vocabulary of each Keras Embedding fed by an integer input: ids from 0 to input_dim - 1.
    An embedding not fed by an input directly bounds the model's one integer input, if it has one."""
    import keras

    ints = [t for t in model.inputs if np.dtype(t.dtype).kind in "iu"]
    bounds: dict[str, tuple[int, int]] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            fed = layer.input
        except (AttributeError, ValueError):  # a shared layer has no single input
            fed = None
        target = next((t for t in ints if t is fed), ints[0] if len(ints) == 1 else None)
        if target is not None:
            name = target.name
            bounds[name] = (0, min(int(layer.input_dim), bounds.get(name, (0, 1 << 62))[1]))
    return bounds


def _onnx_gather_bounds(path: Path) -> dict[str, tuple[int, int]]:
    """An ONNX graph input that indexes a constant table (Gather of an initializer, as an embedding
    converts to): ids from 0 to the table's size along the gathered axis."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - set(tables)
    bounds: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables and node.input[1] in inputs:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = tables[node.input[0]]
            if dims and -len(dims) <= axis < len(dims):
                size = int(dims[axis])
                bounds[node.input[1]] = (0, min(size, bounds.get(node.input[1], (0, size))[1]))
    return bounds


EXPECTED_SOURCES = "a SavedModel folder, a .keras/.h5 file, an .onnx or .tflite file or a TF.js model.json"


def user_fixture(path: Path, signature: str = "serving_default", tag: str = "serve", custom_objects: CustomObjects | None = None) -> Fixture:
    """A fixture for a model author's own model (`harness check`): a SavedModel folder or Keras
    `.keras`/`.h5` file (exported to every format, judged against TF on the SavedModel), or an `.onnx`,
    `.tflite` or TF.js `model.json` (run as it is by every runtime of its format, see `given_fixture`),
    with inputs generated from its signature. `custom_objects`: the code of a Keras model's custom layers."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected {EXPECTED_SOURCES})")
    if path.suffix.lower() in (".onnx", ".tflite", ".json") or (path.is_dir() and (path / "model.json").is_file()):
        if custom_objects:
            raise HarnessError(f"--custom-objects and --import apply to a Keras .keras/.h5 model: {path} is not one")
        return given_fixture(path, signature)
    name = "check-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name.split(".")[0])
    digest = _digest_path(path)
    if path.is_dir():
        if custom_objects:
            raise HarnessError(f"--custom-objects and --import apply to a Keras .keras/.h5 model: {path} is a SavedModel folder")
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
        raise HarnessError(f"cannot check {path}: expected {EXPECTED_SOURCES}")
    from harness.export.common import import_tf
    from harness_runners.custom import CustomObjectsError

    import_tf()
    import keras

    try:
        objects = custom_objects.load() if custom_objects else {}
    except CustomObjectsError as e:
        raise HarnessError(str(e)) from None
    wrong = _not_a_keras_file(path)
    if wrong:  # Keras would say "File not found" of a file that is there
        raise HarnessError(wrong)
    try:
        model = keras.models.load_model(str(path), compile=False, custom_objects=objects)
    except Exception as e:
        raise HarnessError(_keras_load_error(path, e, bool(custom_objects))) from None
    inputs = tuple(
        TensorSpec(t.name, np.dtype(t.dtype).name, tuple(None if d is None else int(d) for d in t.shape)) for t in model.inputs
    )
    if custom_objects:  # the custom code is part of what every artifact is made from
        digest = hashlib.sha256(f"{digest}\0{custom_objects.digest()}".encode()).hexdigest()
    # The exported signature's keys: a dict's own keys (`keras.Model(x, {"a": a, "b": b})`), else output_<i>.
    outputs = tuple(output_keys(model) or (f"output_{i}" for i in range(len(model.outputs))))
    bounds = _embedding_bounds(model)
    # Keras 3 names each output by its layer (`logits`): the name the user knows.
    layer_names = list(getattr(model, "output_names", None) or [])
    aliases = {str(n): o for n, o in zip(layer_names, outputs) if n and str(n) not in outputs} if len(layer_names) == len(outputs) else {}
    from harness.oracle64 import Float64Oracle, Float64Unavailable, float64_clone

    try:  # the model itself in float64, same weights: tells when TF's float32 reference is the outlier
        oracle: Float64Oracle | None = Float64Oracle.of(float64_clone(model, objects), outputs)
    except Float64Unavailable:
        oracle = None  # a model Keras cannot rebuild in float64 is judged against TF alone, as before
    return Fixture(
        name=name, description=f"user Keras model {path}", kind="keras", inputs=inputs,
        outputs=outputs, output_aliases=aliases, int_bounds=bounds, oracle=oracle,
        build=lambda: keras.models.load_model(str(path), compile=False, custom_objects=objects), generate=_generator(inputs, bounds=bounds),
        generate_alt=_generator(inputs, alt=True, bounds=bounds),
        source_digest=digest, custom_objects=custom_objects or None,
    )


def output_keys(model: Any) -> list[str] | None:
    """The keys of a Keras model's dict outputs (`keras.Model(x, {"a": a, "b": b})`) in the order of
    `model.outputs`, or None for a tensor or a list. Keras flattens a dict by sorted key; flattening a
    dict of its own keys says which, whatever the rule."""
    import keras

    struct = getattr(model, "_outputs_struct", None)
    if not isinstance(struct, dict):
        return None
    return [str(k) for k in keras.tree.flatten({k: k for k in struct})]


# Keras' words for a class its registry lacks (.keras: "Could not locate class 'Scale'"; .h5: "Unknown layer: 'Scale'").
_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object|class|activation|loss|metric)\w*: '?([\w>.]+)'?")


def _not_a_keras_file(path: Path) -> str | None:
    """Why a .keras/.h5 file cannot be a Keras model (empty, or not the container its suffix says), or None."""
    import zipfile

    size = path.stat().st_size
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        what = "empty" if size == 0 else f"{size} bytes that are not a zip archive"
        return f"cannot load Keras model {path}: the file is {what} (expected a .keras file as model.save writes it: a zip with config.json)"
    if path.suffix == ".h5":
        heads = []
        with open(path, "rb") as f:  # HDF5's signature: at 0, or at 512, 1024, 2048, ... after a user block
            for offset in (0, *(512 << k for k in range(20))):
                if offset >= size:
                    break
                f.seek(offset)
                heads.append(f.read(8))
        if b"\x89HDF\r\n\x1a\n" not in heads:
            what = "empty" if size == 0 else f"{size} bytes that are not an HDF5 file"
            return f"cannot load Keras model {path}: the file is {what} (expected a legacy .h5 file as model.save writes it)"
    return None


def _keras_load_error(path: Path, e: BaseException, had_custom: bool) -> str:
    """One line for a Keras model that does not load; an unknown (custom) class is named, with the fix."""
    text = str(e)
    m = _UNKNOWN_CLASS.search(text)
    if m:
        cls = m.group(1) or m.group(2)
        if had_custom:
            return (f"cannot load Keras model {path}: unknown class {cls!r}: the given --custom-objects/--import define no {cls!r} "
                    "(expected a CUSTOM_OBJECTS entry or a class registered with keras.saving.register_keras_serializable)")
        return (f"cannot load Keras model {path}: unknown class {cls!r} (a custom layer or object): expected --custom-objects FILE.py "
                f"defining it (its CUSTOM_OBJECTS dict or a class registered with keras.saving.register_keras_serializable) or --import MODULE")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"cannot load Keras model {path}: {type(e).__name__}: {first}"


# The runtime whose outputs are the reference for a given model of each format family.
_GIVEN_REFERENCE = {"onnx": "ort", "tflite": "litert"}


def given_fixture(path: Path, signature: str = "serving_default") -> Fixture:
    """A user's `.onnx`, `.tflite` or TF.js `model.json` (or its folder): the file is the artifact of its
    format (copied into the cache as it is, validated, never converted), run by every runtime that
    loads that format; inputs are generated from the model's own signature (read by harness inspect);
    the reference is ort (ONNX), litert (TFLite) or the first TF.js runtime, unless golden outputs are
    given. Quantised TFLite tensors are fed and judged as the real values they stand for."""
    from harness.inspect_model import inspect

    if path.is_dir():
        path = path / "model.json"
    info = inspect(path)
    kind = info["kind"]
    if kind not in ("onnx", "tflite", "tfjs"):
        raise HarnessError(f"cannot check {path}: a {kind} file (expected {EXPECTED_SOURCES})")
    if kind == "onnx" and info.get("format") not in ("onnx13", "onnx18"):
        # Below opset 7 (ONNX Runtime's oldest), or no default-domain opset: inspect said what it is.
        raise HarnessError(f"cannot check {path}: {info.get('runs_as_note') or info.get('format')}")
    fmt = str(info["format"])
    sigs = info["signatures"]
    keys = [s.get("key") for s in sigs]
    if kind == "tflite" and len(sigs) > 1:
        if signature not in keys:
            raise unknown("signature", signature, [str(k) for k in keys])
        sig = sigs[keys.index(signature)]
    elif sigs:
        sig = sigs[0]
    else:
        raise HarnessError(f"cannot check {path}: it declares no inputs and outputs (expected a model with a signature)")
    inputs = []
    for t in sig["inputs"]:
        if t["shape"] is None:
            raise HarnessError(f"input {t['name']!r} of {path} has unknown rank: expected a known rank")
        shape = tuple(d if isinstance(d, int) else None for d in t["shape"])  # a symbol (ONNX) is a dynamic dimension
        dtype = "float32" if t.get("scale") is not None else t["dtype"]  # quantised: fed as the real values
        inputs.append(TensorSpec(t["name"], dtype, shape))
    specs = tuple(inputs)
    for s in specs:
        if s.dtype in ("unknown", "string", "bytes", "resource", "variant") or not _numeric(s.dtype):
            raise HarnessError(f"input {s.name!r} of {path} has dtype {s.dtype}: expected a numeric or boolean dtype")
    first = [s.shape[0] if s.shape else None for s in specs]
    batchable = all(d is None for d in first) if specs else False
    # A fixed first dimension (batch 2, as many published models have) is the model's one batch.
    fixed = {d for d in first if d is not None}
    batches = (1, 4) if batchable else ((int(next(iter(fixed))),) if len(fixed) == 1 and None not in first else (1,))
    from harness.runners import RUNTIMES

    family = "tfjs" if kind == "tfjs" else kind
    runtime = _GIVEN_REFERENCE.get(family) or next(r for r, spec in RUNTIMES.items() if fmt in spec.formats)
    stem = path.parent.name if path.name == "model.json" else path.name.split(".")[0]
    name = "check-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    if kind == "tfjs":  # model.json and the shards it lists, not whatever else shares its folder
        from harness.export.given import shards

        files = [_digest_path(path), *(_digest_path(path.parent / shard) + shard for shard in shards(path))]
    else:
        files = [_digest_path(path)]
    digest = hashlib.sha256("\0".join(["given", fmt, *files]).encode()).hexdigest()
    outputs = tuple(t["name"] for t in sig["outputs"])
    # A TFLite or TF.js output is also known by its tensor's name (StatefulPartitionedCall:0, Identity:0).
    aliases = {str(t["stored_name"]): t["name"] for t in sig["outputs"]
               if t.get("stored_name") and t["stored_name"] not in outputs and t["stored_name"] != t["name"]}
    bounds = _onnx_gather_bounds(path) if kind == "onnx" else {}
    opset = (info.get("opsets") or {}).get("ai.onnx")
    what = f"{fmt} model (opset {opset})" if kind == "onnx" and opset not in (13, 18) else f"{fmt} model"
    return Fixture(
        name=name, description=f"user {what} {path}", kind="given", inputs=specs,
        outputs=outputs, output_aliases=aliases, int_bounds=bounds, build=lambda: path, generate=_generator(specs, bounds=bounds),
        generate_alt=_generator(specs, alt=True, bounds=bounds), batchable=batchable, batches=batches,
        signature=str(sig.get("key") or "serving_default"), source_digest=digest, formats=(fmt,), reference=(fmt, runtime),
    )


def _numeric(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "fiub"
    except TypeError:
        return False


def signature_variant(fx: Fixture, saved_model: Path, signature: str, tag: str) -> Fixture:
    """The fixture `fx` run through another signature (and tag set) of its SavedModel `saved_model`:
    inputs and outputs read from that signature, inputs from the fixture's generator for it or from its
    signature, the fixture's oracle for it if it has one. Named `<fixture>.<signature>` (with the tag
    set, `+`-joined, when it is not the fixture's)."""
    from harness.export.common import read_signature, tag_set

    ins, outs = read_signature(saved_model, signature, tag)
    for s in ins:
        if s.shape is None:
            raise HarnessError(f"input {s.name!r} of signature {signature!r} has unknown rank: expected a known rank")
    inputs = tuple(TensorSpec(s.name, s.dtype, tuple(s.shape or ())) for s in ins)
    same_tag = set(tag_set(tag)) == set(tag_set(fx.tag))
    name = f"{fx.name}.{signature}" if same_tag else f"{fx.name}.{'+'.join(tag_set(tag))}.{signature}"
    digest = hashlib.sha256(f"{fx.digest()}\0{signature}\0{tag}".encode()).hexdigest()
    generate = fx.signature_generators.get(signature)
    if generate is None and any(s.dtype == "bytes" for s in inputs):
        raise HarnessError(f"signature {signature!r} of {fx.name} takes strings: expected a generator for it in the fixture's signature_generators")
    return replace(
        fx, name=name, description=f"{fx.name} through signature {signature!r} (tags {tag})", kind="graph", inputs=inputs,
        outputs=tuple(s.name for s in outs), build=lambda: saved_model, generate=generate or _generator(inputs),
        generate_alt=None if generate else _generator(inputs, alt=True), oracle=fx.signature_oracles.get(signature),
        classifier_outputs=tuple(o for o in fx.classifier_outputs if o in {s.name for s in outs}), signature=signature, tag=tag,
        source_digest=digest, extra_formats=(), signature_generators={}, signature_oracles={},
    )


def _known_as(names: tuple[str, ...], aliases: dict[str, str] | None) -> str:
    """The names an output goes by, for a message: `['output_0 (logits)']`."""
    by = {n: [a for a, target in (aliases or {}).items() if target == n] for n in names}
    return "[" + ", ".join(f"'{n} ({', '.join(by[n])})'" if by[n] else repr(n) for n in names) + "]"


def load_tensors(path: Path, names: tuple[str, ...], what: str, aliases: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Tensors given on the command line, by name: a `.npz` (one array per name), a `.npy` (when there
    is one name), or a folder of ONNX TensorProto files as in ONNX test data (`input_0.pb`, ... for
    inputs, `output_0.pb`, ... for outputs: named by the proto's name, else by position). `aliases`:
    other names of the same tensors (a Keras output layer's name for `output_0`), taken as well."""
    path = Path(path)
    aliases = {a: n for a, n in (aliases or {}).items() if a not in names}
    expected = f"expected a .npz with arrays {list(names)}, a .npy (one {what}) or a folder of {what}_*.pb"
    if not path.exists():
        raise HarnessError(f"{what}s not found: {path} does not exist ({expected})")
    try:
        if path.is_dir():
            import onnx
            from onnx import numpy_helper

            files = sorted(path.glob(f"{what}_*.pb"), key=lambda p: int(p.stem.split("_")[-1]) if p.stem.split("_")[-1].isdigit() else 1 << 30)
            if not files:
                raise HarnessError(f"no {what}_*.pb in {path} ({expected})")
            out = {}
            for i, f in enumerate(files):
                proto = onnx.TensorProto()
                proto.ParseFromString(f.read_bytes())
                named = aliases.get(proto.name, proto.name)
                name = named if named in names else (names[i] if i < len(names) else proto.name or f.stem)
                out[name] = numpy_helper.to_array(proto)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        elif path.suffix == ".npy":
            if len(names) != 1:
                raise HarnessError(f"{path} holds one array, but the model has {what}s {list(names)}: expected a .npz or a folder of {what}_*.pb")
            out = {names[0]: np.load(path, allow_pickle=False)}
        else:
            raise HarnessError(f"cannot read {what}s from {path} ({expected})")
    except HarnessError:
        raise
    except Exception as e:
        raise HarnessError(f"cannot read {what}s from {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} ({expected})") from None
    renamed = {aliases.get(k, k): v for k, v in out.items()}
    if len(renamed) == len(out) and set(renamed) == set(names):
        out = renamed
    if set(out) != set(names):
        raise HarnessError(f"{path} holds {what}s {sorted(out)}, the model's are {_known_as(tuple(sorted(names)), aliases)}: "
                           f"expected one array per {what}, by name")
    return {k: np.asarray(out[k], order="C") for k in names}


def parse_tolerances(values: tuple[str, ...], option: str, outputs: tuple[str, ...],
                     aliases: dict[str, str] | None = None) -> tuple[float | None, dict[str, float]]:
    """`--atol 1e-4` (every output) and `--atol name=1e-4` (one output, by its name or an alias such as
    a Keras output layer's name), repeatable."""
    aliases = aliases or {}
    default: float | None = None
    per: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            bound = float(number)
        except ValueError:
            raise HarnessError(f"{option} {value} is not valid: expected a number or OUTPUT=NUMBER") from None
        if not bound >= 0:
            raise HarnessError(f"{option} {value} is not valid: expected a bound of 0 or more")
        name = name if name in outputs else aliases.get(name, name)
        if not name:
            default = bound
        elif name not in outputs:
            raise HarnessError(f"{option} {value}: unknown output {name!r}: expected one of {_known_as(outputs, aliases)[1:-1].replace(chr(39), '')}")
        else:
            per[name] = bound
    return default, per


def with_user_options(fx: Fixture, inputs: Path | None = None, expected: Path | None = None, atol: tuple[str, ...] = (),
                      rtol: tuple[str, ...] = (), seed: int = 0) -> Fixture:
    """`harness check` options on a user's fixture: their inputs (their batch is then the one batch),
    golden outputs, float32 tolerances overall and per output, and the seed of generated inputs."""
    given = load_tensors(inputs, tuple(s.name for s in fx.inputs), "input") if inputs else None
    batches = fx.batches
    if given is not None:
        for s in fx.inputs:
            if np.dtype(s.dtype) != given[s.name].dtype:
                raise HarnessError(f"input {s.name!r} in {inputs} is {given[s.name].dtype}, the model takes {s.dtype}")
            if len(s.shape) != given[s.name].ndim or any(d is not None and d != n for d, n in zip(s.shape, given[s.name].shape)):
                raise HarnessError(f"input {s.name!r} in {inputs} has shape {list(given[s.name].shape)}, the model takes {list(s.shape)}")
        batches = (int(next(iter(given.values())).shape[0]),) if fx.inputs and fx.inputs[0].shape else (1,)
    golden = load_tensors(expected, fx.outputs, "output", fx.output_aliases) if expected else None
    if golden is not None and given is None:
        raise HarnessError("--expected needs --inputs: golden outputs are for given inputs")
    a_all, a_per = parse_tolerances(atol, "--atol", fx.outputs, fx.output_aliases)
    r_all, r_per = parse_tolerances(rtol, "--rtol", fx.outputs, fx.output_aliases)
    out = replace(fx, given_inputs=given, golden=golden, batches=batches, seed=seed)
    if given is not None and fx.kind in ("user", "keras", "given"):
        # The other input sets (drawn to tell an output that ignores its input) keep integer inputs
        # inside the range of the user's own, which the model is known to take.
        bounds = dict(fx.int_bounds)
        for s in fx.inputs:
            v = given[s.name]
            if v.dtype.kind in "iu" and v.size:
                bounds[s.name] = (int(v.min()), int(v.max()) + 1)
        out = replace(out, int_bounds=bounds, generate=_generator(fx.inputs, bounds=bounds), generate_alt=_generator(fx.inputs, alt=True, bounds=bounds))
    tolerances = dict(fx.tolerances)
    output_tolerances = dict(fx.output_tolerances)
    if a_all is not None or r_all is not None:
        base = DEFAULT_TOLERANCES["float32"]
        tolerances["float32"] = Tolerance(atol=base.atol if a_all is None else a_all, rtol=base.rtol if r_all is None else r_all)
    for name in set(a_per) | set(r_per):
        base = tolerances.get("float32", DEFAULT_TOLERANCES["float32"])
        output_tolerances[(name, "float32")] = Tolerance(atol=a_per.get(name, base.atol), rtol=r_per.get(name, base.rtol))
    return replace(out, tolerances=tolerances, output_tolerances=output_tolerances)
