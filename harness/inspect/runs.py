"""Where a model file can run, and what stops it: `inspect(path)` is the format reader's dict (harness.inspect)
with `runs_on` (the runtimes of the table that take its format, with their availability here, and the
formats `harness check` exports it to) and the problems found against the runtime table and the known
deviations. Above the runtime table, the exporters' format registry and the case matrix's deviations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.inspect import read
from harness.inspect.common import TFJS_RUNTIMES_NOTE, clip, problem, runtimes_taking, shape_text
from harness.inspect.keras import needs_code


def inspect(path: Path, signature: str | None = None, tag: str | None = None, custom_names: set[str] | None = None) -> dict:
    """Everything `harness inspect` shows about the model at `path`, as a JSON-ready dict (see the
    docstring of harness.inspect). `signature` and `tag` narrow a SavedModel to one signature and tag set
    (`signature` also picks a TFLite signature) and are what `harness check` would be given. Raises
    HarnessError (one line naming the path and what was expected) for a missing path, a kind it does
    not know and a file that does not parse. `custom_names`: the names the given --custom-objects/--import
    define (None: none given), checked against a Keras model's custom layers."""
    info = read(path, signature, tag)
    if info["kind"] in ("keras", "h5"):
        needs_code(info, custom_names)
    _check_tensors(info)
    info["runs_on"] = _runs_on(info, signature, tag)
    _known_deviations(info)
    info["problems"] = info.pop("problems")  # last, as render shows them
    return info


_AVAILABILITY: dict[str, dict] = {}


def _runtime_entry(name: str) -> dict:
    from harness.runners.table import RUNTIMES

    if name not in _AVAILABILITY:
        spec = RUNTIMES[name]
        a = spec.availability()
        _AVAILABILITY[name] = {"runtime": name, "language": spec.language, "available": a.ok, "version": a.version,
                               "reason": a.reason, "fix": a.fix}
    return dict(_AVAILABILITY[name])


def _runs_on(info: dict, signature: str | None, tag: str | None) -> dict:
    from harness.export import FORMATS, formats_for
    from harness.fixtures import Fixture
    from harness.runners.table import RUNTIMES

    fmt = info.get("format")
    takes = [fmt] if fmt in FORMATS else []  # an ONNX file below opset 7: no runtime here takes it
    runs: dict[str, Any] = {
        "format": fmt,
        "runtimes": [_runtime_entry(name) for name, spec in RUNTIMES.items() if set(takes) & set(spec.formats)],
    }
    if info["kind"] in ("savedmodel", "keras", "h5"):
        # `harness check` makes a fixture of kind "user" (SavedModel) or "keras" (.keras/.h5).
        probe = Fixture(name="inspect", description="", kind="user" if info["kind"] == "savedmodel" else "keras", inputs=(), outputs=(),
                        build=lambda: None, generate=lambda rng, batch: {})
        runs["check_exports"] = [
            {"format": f, "runtimes": [_runtime_entry(name) for name, spec in RUNTIMES.items() if f in spec.formats]}
            for f in formats_for(probe)
        ]
    return runs


def _check_tensors(info: dict) -> None:
    """int64 tensors on the TF.js path, and dynamic dimensions other than the batch."""
    tensors = [(role, t) for sig in info["signatures"] for role, ts in (("input", sig["inputs"]), ("output", sig["outputs"])) for t in ts]
    wide = list(dict.fromkeys(f"{role} {t['name']}" for role, t in tensors if t["dtype"] in ("int64", "uint64")))
    tfjs = runtimes_taking(("tfjs_graph", "tfjs_layers"))
    if wide and info.get("format") in ("tfjs_graph", "tfjs_layers"):
        problem(info, f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} int64 ({TFJS_RUNTIMES_NOTE})", tfjs)
    elif wide and info["kind"] in ("savedmodel", "keras", "h5"):
        formats = ["tfjs_graph"] + (["tfjs_layers"] if info["kind"] != "savedmodel" else [])
        problem(info, f"{', '.join(wide)} {'is' if len(wide) == 1 else 'are'} int64: its {' and '.join(formats)} export will not run "
                       f"({TFJS_RUNTIMES_NOTE})", formats + tfjs)
    dynamic = []
    for role, t in tensors:
        if t.get("shape_known") is False:
            continue  # not recorded in the file (a GraphDef's outputs) or not inferable from a Keras config
        if t["shape"] is None:
            dynamic.append(f"{role} {t['name']} (unknown rank)")
        elif any(d is None or isinstance(d, str) for d in t["shape"][1:]):
            dims = [str(i) for i, d in enumerate(t["shape"]) if i > 0 and (d is None or isinstance(d, str))]
            dynamic.append(f"{role} {t['name']} {shape_text(t['shape'])} (dim {', '.join(dims)})")
    dynamic = list(dict.fromkeys(dynamic))
    if dynamic:
        problem(info, "dynamic dimensions other than the batch: " + "; ".join(dynamic)
                 + ": harness check feeds 8 there, and converters and runtimes may need them fixed")


def _known_deviations(info: dict) -> None:
    """Known deviations (fixtures/deviations.toml) that hold for every model and hit this file's
    format or the formats `harness check` exports it to; a TF.js layers model is checked for the cause."""
    import fnmatch

    from harness.cases import load_deviations

    runs = info["runs_on"]
    formats = [runs["format"], *[e["format"] for e in runs.get("check_exports", [])]]
    for d in load_deviations():
        if d.fixture != "*":
            continue
        hit = [f for f in formats if isinstance(f, str) and fnmatch.fnmatchcase(f, d.format)]
        if not hit:
            continue
        if info.get("format") == "tfjs_layers" and "InputLayer" in (d.match or "") and not info.get("keras3_input_layer"):
            continue  # a Keras 2 layers model: its InputLayer has batchInputShape, the deviation's cause is absent
        problem(info, f"known deviation of {', '.join(hit)} on {d.runtime} (fixtures/deviations.toml): {clip(d.reason, 160)}", [*hit, d.runtime])
