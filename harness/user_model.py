"""A model author's own model as a fixture (`harness check MODEL`, harness.toml, the pytest plugin): a
SavedModel folder or Keras `.keras`/`.h5` file (exported to every format like the registry's fixtures),
or an `.onnx`, `.tflite` or TF.js `model.json` run as it is; with the options `harness check` takes on it
(the user's inputs, golden outputs, tolerances per output, the seed). The fixture registry
(harness/fixtures.py) knows nothing of these: they are made here from the file, above the format
readers (harness/inspect/) and the exporters they use."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.comparator import DEFAULT_TOLERANCES, Tolerance
from harness.errors import HarnessError, unknown
from harness.export.common import import_tf, read_signature
from harness.export.given import shards
from harness.fixtures import Fixture, TensorSpec, generator_for, output_keys
from harness.inspect import read
from harness.inspect.onnx import onnx_format
from harness.oracle64 import Float64Oracle, Float64Unavailable, float64_clone
from harness.runners.table import RUNTIMES

if TYPE_CHECKING:
    from harness_runners.custom import CustomObjects


def _digest_path(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class OpsetUpgrade:
    """A user's ONNX file converted to a newer opset by onnx.version_converter (`check --upgrade-opset N`),
    for an opset ONNX Runtime does not load (below 7). The user's file is never touched: the run keeps
    the converted model in its own folder (`file`, inside it; `kept`, once the run's folder is known) and
    checks that; run.json's options record it (`record`)."""

    source: Path
    from_opset: int
    to_opset: int
    model: bytes  # the converted ModelProto, serialised
    kept: Path | None = None

    @property
    def file(self) -> str:
        return f"model/{self.source.stem}-opset{self.to_opset}.onnx"

    def record(self) -> dict:
        import onnx

        return {"source": str(self.source.resolve()), "from_opset": self.from_opset, "to_opset": self.to_opset, "file": self.file,
                "by": f"onnx.version_converter (onnx {onnx.__version__})"}


# onnx.version_converter's failures begin with the C++ assertion's place ("/project/onnx/version_converter/
# helper.cc:68: assertNotParams: Assertion `dim.is_int` failed: N Dimension is a param instead of an int.").
_CONVERTER_PLACE = re.compile(r"^\S*\.(?:cc|cpp|h):\d+:\s*(?:\w+:\s*)?")


def upgrade_onnx(path: Path, opset: int) -> OpsetUpgrade:
    """`path` converted to `opset` by onnx.version_converter, in memory. A file that is not an ONNX model,
    an opset outside 7 (ONNX Runtime's oldest) to the newest onnx knows or not above the file's, and a
    conversion the converter refuses are each one line (HarnessError), the last with the converter's reason."""
    import onnx
    import onnx.defs
    import onnx.version_converter

    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected {EXPECTED_SOURCES})")
    if not path.is_file() or path.suffix.lower() != ".onnx":
        raise HarnessError(f"--upgrade-opset applies to an .onnx file: {path} is not one")
    newest = onnx.defs.onnx_opset_version()
    if not 7 <= opset <= newest:
        raise HarnessError(f"--upgrade-opset {opset}: expected an opset from 7 (ONNX Runtime's oldest) to {newest} (onnx {onnx.__version__}'s newest)")
    current = (read(path).get("opsets") or {}).get("ai.onnx")  # a file that is no ONNX model: inspect's one line
    if not current:
        raise HarnessError(f"cannot upgrade {path}: it imports no default-domain (ai.onnx) opset (expected an opset_import of domain '')")
    if current >= opset:
        raise HarnessError(f"--upgrade-opset {opset}: {path} has ONNX opset {current} already (expected an opset above the file's; "
                           "from opset 7 on, check runs the file as it is)")
    try:
        converted = onnx.version_converter.convert_version(onnx.load(str(path)), opset)
    except Exception as e:
        reason = _CONVERTER_PLACE.sub("", " ".join(str(e).split())) or type(e).__name__
        raise HarnessError(f"cannot upgrade {path} from ONNX opset {current} to {opset}: onnx.version_converter says: {reason}") from None
    return OpsetUpgrade(path, int(current), opset, converted.SerializeToString())


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


def user_fixture(path: Path, signature: str = "serving_default", tag: str = "serve", custom_objects: CustomObjects | None = None,
                 upgrade: OpsetUpgrade | None = None) -> Fixture:
    """A fixture for a model author's own model (`harness check`): a SavedModel folder or Keras
    `.keras`/`.h5` file (exported to every format, judged against TF on the SavedModel), or an `.onnx`,
    `.tflite` or TF.js `model.json` (run as it is by every runtime of its format, see `given_fixture`),
    with inputs generated from its signature. `custom_objects`: the code of a Keras model's custom layers;
    `upgrade`: an ONNX file's converted copy, checked instead of the file (`check --upgrade-opset`)."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"model not found: {path} does not exist (expected {EXPECTED_SOURCES})")
    if path.suffix.lower() in (".onnx", ".tflite", ".json") or (path.is_dir() and (path / "model.json").is_file()):
        if custom_objects:
            raise HarnessError(f"--custom-objects and --import apply to a Keras .keras/.h5 model: {path} is not one")
        return given_fixture(path, signature, upgrade)
    name = "check-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name.split(".")[0])
    digest = _digest_path(path)
    if path.is_dir():
        if custom_objects:
            raise HarnessError(f"--custom-objects and --import apply to a Keras .keras/.h5 model: {path} is a SavedModel folder")
        ins, outs = read_signature(path, signature, tag)
        inputs = tuple(TensorSpec(s.name, s.dtype, tuple(s.shape or ())) for s in ins)
        for s in ins:
            if s.shape is None:
                raise HarnessError(f"input {s.name!r} of {path} has unknown rank: expected a signature with a known rank")
        fx = Fixture(
            name=name, description=f"user SavedModel {path}", kind="user", inputs=inputs,
            outputs=tuple(s.name for s in outs), build=lambda: path, generate=generator_for(inputs), generate_alt=generator_for(inputs, alt=True),
            signature=signature, tag=tag, source_digest=digest,
        )
        return fx
    if path.suffix not in (".keras", ".h5"):
        raise HarnessError(f"cannot check {path}: expected {EXPECTED_SOURCES}")
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
    try:  # the model itself in float64, same weights: tells when TF's float32 reference is the outlier
        oracle: Float64Oracle | None = Float64Oracle.of(float64_clone(model, objects), outputs)
    except Float64Unavailable:
        oracle = None  # a model Keras cannot rebuild in float64 is judged against TF alone, as before
    return Fixture(
        name=name, description=f"user Keras model {path}", kind="keras", inputs=inputs,
        outputs=outputs, output_aliases=aliases, int_bounds=bounds, oracle=oracle,
        build=lambda: keras.models.load_model(str(path), compile=False, custom_objects=objects), generate=generator_for(inputs, bounds=bounds),
        generate_alt=generator_for(inputs, alt=True, bounds=bounds),
        source_digest=digest, custom_objects=custom_objects or None,
    )


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


def given_fixture(path: Path, signature: str = "serving_default", upgrade: OpsetUpgrade | None = None) -> Fixture:
    """A user's `.onnx`, `.tflite` or TF.js `model.json` (or its folder): the file is the artifact of its
    format (copied into the cache as it is, validated, never converted), run by every runtime that
    loads that format; inputs are generated from the model's own signature (read by harness inspect);
    the reference is ort (ONNX), litert (TFLite) or the first TF.js runtime, unless golden outputs are
    given. Quantised TFLite tensors are fed and judged as the real values they stand for. With `upgrade`
    (an ONNX file converted to a newer opset) the converted copy it keeps is the artifact: its format is
    that of the new opset, its graph's inputs and outputs the file's (the converter keeps them)."""
    if path.is_dir():
        path = path / "model.json"
    info = read(path)
    kind = info["kind"]
    if kind not in ("onnx", "tflite", "tfjs"):
        raise HarnessError(f"cannot check {path}: a {kind} file (expected {EXPECTED_SOURCES})")
    if upgrade is not None:
        if upgrade.kept is None:
            raise ValueError("an OpsetUpgrade is checked from where its run keeps it: set kept")
        info["format"] = onnx_format(upgrade.to_opset)
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
    family = "tfjs" if kind == "tfjs" else kind
    runtime = _GIVEN_REFERENCE.get(family) or next(r for r, spec in RUNTIMES.items() if fmt in spec.formats)
    stem = path.parent.name if path.name == "model.json" else path.name.split(".")[0]
    name = "check-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    if kind == "tfjs":  # model.json and the shards it lists, not whatever else shares its folder
        files = [_digest_path(path), *(_digest_path(path.parent / shard) + shard for shard in shards(path))]
    elif upgrade is not None:  # what is checked: the converted model
        files = [hashlib.sha256(Path(upgrade.file).name.encode() + upgrade.model).hexdigest()]
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
    artifact = path
    if upgrade is not None and upgrade.kept is not None:
        what = f"{fmt} model (opset {upgrade.from_opset}, upgraded to {upgrade.to_opset} by onnx.version_converter)"
        artifact = upgrade.kept
    return Fixture(
        name=name, description=f"user {what} {path}", kind="given", inputs=specs,
        outputs=outputs, output_aliases=aliases, int_bounds=bounds, build=lambda: artifact, generate=generator_for(specs, bounds=bounds),
        generate_alt=generator_for(specs, alt=True, bounds=bounds), batchable=batchable, batches=batches,
        signature=str(sig.get("key") or "serving_default"), source_digest=digest, formats=(fmt,), reference=(fmt, runtime),
    )


def _numeric(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "fiub"
    except TypeError:
        return False


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
        out = replace(out, int_bounds=bounds, generate=generator_for(fx.inputs, bounds=bounds), generate_alt=generator_for(fx.inputs, alt=True, bounds=bounds))
    tolerances = dict(fx.tolerances)
    output_tolerances = dict(fx.output_tolerances)
    if a_all is not None or r_all is not None:
        base = DEFAULT_TOLERANCES["float32"]
        tolerances["float32"] = Tolerance(atol=base.atol if a_all is None else a_all, rtol=base.rtol if r_all is None else r_all)
    for name in set(a_per) | set(r_per):
        base = tolerances.get("float32", DEFAULT_TOLERANCES["float32"])
        output_tolerances[(name, "float32")] = Tolerance(atol=a_per.get(name, base.atol), rtol=r_per.get(name, base.rtol))
    return replace(out, tolerances=tolerances, output_tolerances=output_tolerances)
