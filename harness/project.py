"""A project's own models, declared once: `harness.toml` (or `[tool.harness]` in pyproject.toml) in the
project's folder, read by `harness check` (no PATH: every model it lists) and the pytest plugin (one test
per case of each) alike, as pytest and Polygraphy users configure their tools.

```toml
[[model]]
path = "models/classifier.keras"
inputs = "data/in.npz"            # check --inputs
expected = "data/golden.npz"      # check --expected
atol = {logits = 1e-3}            # a number for every output, or {OUTPUT = NUMBER}
rtol = 1e-5
custom_objects = ["layers.py"]    # check --custom-objects (files), import = ["pkg.layers"] (modules)
runtimes = ["tf", "ort"]          # which runtimes and formats (default: all)
formats = ["savedmodel", "onnx13"]
```

Other keys: `signature`, `tag`, `seed`, `batch` (a list of batch sizes). Paths are relative to the file's
folder. A key or value that is not understood is one line naming the file, the model and what was expected.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.fixtures import Fixture
from harness.user_model import user_fixture, with_user_options

FILES = ("harness.toml", "pyproject.toml")
KEYS = ("path", "inputs", "expected", "atol", "rtol", "seed", "custom_objects", "import", "signature", "tag", "runtimes", "formats", "batch")


@dataclass(frozen=True)
class ProjectModel:
    """One `[[model]]` entry: the check options of one model, paths resolved against the file's folder."""

    path: Path
    inputs: Path | None = None
    expected: Path | None = None
    atol: tuple[str, ...] = ()
    rtol: tuple[str, ...] = ()
    seed: int = 0
    custom_objects: tuple[Path, ...] = ()
    imports: tuple[str, ...] = ()
    signature: str = "serving_default"
    tag: str = "serve"
    runtimes: list[str] | None = None
    formats: list[str] | None = None
    batches: list[int] | None = None
    where: str = ""  # "harness.toml, model 2": for messages
    options: dict[str, Any] = field(default_factory=dict)

    def fixture(self) -> Fixture:
        """The fixture `harness check` makes of this model with these options."""
        from harness_runners.custom import CustomObjects

        for f in self.custom_objects:
            if not f.is_file():
                raise HarnessError(f"{self.where}: custom_objects {f}: no such file (expected a Python file defining the custom layers)")
        custom = CustomObjects(self.custom_objects, self.imports)
        fx = user_fixture(self.path, self.signature, self.tag, custom or None)
        return with_user_options(fx, self.inputs, self.expected, self.atol, self.rtol, self.seed)


def find(folder: Path) -> Path | None:
    """The project file of `folder`: harness.toml, else a pyproject.toml with a [tool.harness] table."""
    if (folder / "harness.toml").is_file():
        return folder / "harness.toml"
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return None  # not ours to judge unless it says [tool.harness]; read() names the error when asked
        if "harness" in (data.get("tool") or {}):
            return pyproject
    return None


def _tolerances(value: Any, key: str, where: str) -> tuple[str, ...]:
    """`1e-4`, `{logits = 1e-3}` or `["1e-4", "logits=1e-3"]` as check's --atol values."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (repr(float(value)),)
    if isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        return tuple(f"{k}={float(v)!r}" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise HarnessError(f"{where}: {key} = {value!r} is not valid: expected a number, {{OUTPUT = NUMBER}} or a list of \"OUTPUT=NUMBER\"")


def _strings(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where}: {key} = {value!r} is not valid: expected a list of names")
    return value


def read(path: Path) -> list[ProjectModel]:
    """The models a project file lists (`[[model]]`, or `[[tool.harness.model]]` in pyproject.toml)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"{path} is not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read {path}: {e}") from None
    table = (data.get("tool") or {}).get("harness") if path.name == "pyproject.toml" else data
    prefix = "[tool.harness] " if path.name == "pyproject.toml" else ""
    if not isinstance(table, dict):
        raise HarnessError(f"{path}: {prefix}is not a table (expected [[model]] entries)")
    unknown = sorted(set(table) - {"model"})
    if unknown:
        raise HarnessError(f"{path}: {prefix}unknown key(s) {', '.join(unknown)}: expected [[model]] entries")
    entries = table.get("model") or []
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise HarnessError(f"{path}: {prefix}lists no model: expected one or more [[{'tool.harness.' if prefix else ''}model]] tables with a path")
    base = path.parent
    models = []
    for n, entry in enumerate(entries, 1):
        where = f"{path.name}, model {n}"
        extra = sorted(set(entry) - set(KEYS))
        if extra:
            raise HarnessError(f"{where}: unknown key(s) {', '.join(extra)}: expected some of {', '.join(KEYS)}")
        if not isinstance(entry.get("path"), str):
            raise HarnessError(f"{where}: no path: expected path = \"model.keras\" (a SavedModel folder, .keras, .h5, .onnx, .tflite or model.json)")
        seed = entry.get("seed", 0)
        batch = entry.get("batch")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise HarnessError(f"{where}: seed = {seed!r} is not valid: expected an integer")
        if batch is not None and (not isinstance(batch, list) or not all(isinstance(b, int) and b > 0 for b in batch)):
            raise HarnessError(f"{where}: batch = {batch!r} is not valid: expected a list of positive integers like [1, 4]")
        for key in ("inputs", "expected", "signature", "tag"):
            if key in entry and not isinstance(entry[key], str):
                raise HarnessError(f"{where}: {key} = {entry[key]!r} is not valid: expected a string")
        models.append(ProjectModel(
            path=base / entry["path"], inputs=base / entry["inputs"] if "inputs" in entry else None,
            expected=base / entry["expected"] if "expected" in entry else None,
            atol=_tolerances(entry["atol"], "atol", where) if "atol" in entry else (),
            rtol=_tolerances(entry["rtol"], "rtol", where) if "rtol" in entry else (), seed=seed,
            custom_objects=tuple((base / f).resolve() for f in _strings(entry.get("custom_objects", []), "custom_objects", where)),
            imports=tuple(_strings(entry.get("import", []), "import", where)),
            signature=entry.get("signature", "serving_default"), tag=entry.get("tag", "serve"),
            runtimes=_strings(entry["runtimes"], "runtimes", where) if "runtimes" in entry else None,
            formats=_strings(entry["formats"], "formats", where) if "formats" in entry else None,
            batches=batch, where=where, options=dict(entry),
        ))
    return models


def unique_names(fixtures: list[Fixture]) -> list[Fixture]:
    """Fixtures named apart (two models of the same file name: check-model, check-model-2)."""
    from dataclasses import replace

    seen: set[str] = set()
    out = []
    for fx in fixtures:
        name, n = fx.name, 2
        while name in seen:
            name, n = f"{fx.name}-{n}", n + 1
        seen.add(name)
        out.append(replace(fx, name=name) if name != fx.name else fx)
    return out
