"""Custom Keras objects (`harness check --custom-objects FILE.py`, `--import MODULE`), shared by the harness
(which loads the user's model to export it) and the `tf` worker (which loads the exported .keras/.h5).

The exporter copies each file, and each module that lives outside the venv, into the artifact folder
(`custom/`, recorded in artifact.json as `extra.custom_objects`): the worker finds them inside the
artifact it was given — read-only in the sandbox, hashed with the artifact, inside its folder — and
the code is part of what the artifact was made from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOLDER = "custom"  # inside the artifact folder


class CustomObjectsError(Exception):
    """A custom-objects file or module that cannot be found or raised while it ran: one line."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


_LOADED: dict[str, dict[str, Any]] = {}  # content digest of a file → what it defined (run once per process)


def load_file(path: Path) -> dict[str, Any]:
    """Run a Python file: its `CUSTOM_OBJECTS` dict, and every class it defines, by name (classes it
    registers with keras.saving.register_keras_serializable are registered by running it)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CustomObjectsError(f"--custom-objects {path}: {e.strerror or e} (expected a Python file defining the custom layers)") from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    if digest in _LOADED:
        return _LOADED[digest]
    name = f"harness_custom_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CustomObjectsError(f"--custom-objects {path}: not a Python file (expected a .py file defining the custom layers)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise CustomObjectsError(f"--custom-objects {path} raised {_one_line(e)}") from None
    found = _defined(module)
    _LOADED[digest] = found
    return found


def load_module(name: str) -> dict[str, Any]:
    """Import a module: its `CUSTOM_OBJECTS` dict and the classes it defines."""
    try:
        module = importlib.import_module(name)
    except Exception as e:
        raise CustomObjectsError(f"--import {name}: {_one_line(e)} (expected a module importable from the working folder or the venv)") from None
    return _defined(module)


def _defined(module: Any) -> dict[str, Any]:
    out = {k: v for k, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__}
    given = getattr(module, "CUSTOM_OBJECTS", None)
    if given is not None and not isinstance(given, dict):
        raise CustomObjectsError(f"CUSTOM_OBJECTS in {module.__name__} is a {type(given).__name__}: expected a dict of name → class or function")
    return out | dict(given or {})


@dataclass(frozen=True)
class CustomObjects:
    """What `--custom-objects` and `--import` named: files (absolute) and module names."""

    files: tuple[Path, ...] = ()
    modules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.modules)

    def load(self) -> dict[str, Any]:
        """Run the files and import the modules, in this process; the objects to hand to load_model."""
        if self.modules and "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.append(str(Path.cwd()))  # `--import mypkg.layers` from the working folder, as `python -m` does
        out: dict[str, Any] = {}
        for f in self.files:
            out |= load_file(f)
        for m in self.modules:
            out |= load_module(m)
        return out

    def digest(self) -> str:
        """The code's bytes (files, and modules' source files): part of the cache key of every export."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        for m in self.modules:
            h.update(m.encode() + b"\0")
            top = _outside_venv(m)
            if top is not None:
                for p in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
                    h.update(p.read_bytes())
        return h.hexdigest()

    def stage(self, folder: Path) -> dict[str, list[str]]:
        """Copy the code into an artifact folder (`custom/`); the record the worker reads back."""
        target = folder / FOLDER
        target.mkdir()
        files = []
        for i, f in enumerate(self.files):
            name = f"{i}_{f.name}"
            shutil.copyfile(f, target / name)
            files.append(f"{FOLDER}/{name}")
        for m in self.modules:
            top = _outside_venv(m)
            if top is not None and not (target / top.name).exists():
                if top.is_dir():
                    shutil.copytree(top, target / top.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copyfile(top, target / top.name)
        return {"files": files, "modules": list(self.modules)}


def _outside_venv(module: str) -> Path | None:
    """The top-level package folder (or single file) of a module that is not installed in the venv —
    copied into the artifact so the sandboxed worker can import it; None for an installed one."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    if Path(sys.prefix).resolve() in origin.parents or Path(sys.base_prefix).resolve() in origin.parents:
        return None
    return origin.parent if origin.name == "__init__.py" else origin


def from_artifact(artifact: dict, root: Path) -> dict[str, Any]:
    """In the worker: the custom objects an artifact carries (`extra.custom_objects`), loaded."""
    record = (artifact.get("extra") or {}).get("custom_objects")
    if not record:
        return {}
    from harness_runners.contain import check_inside

    folder = check_inside(root, root, FOLDER, "custom objects folder")
    sys.dont_write_bytecode = True  # no __pycache__ inside a cached artifact
    if record.get("modules") and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    out: dict[str, Any] = {}
    for name in record.get("files", []):
        out |= load_file(check_inside(root, root, name, "custom objects file"))
    for m in record.get("modules", []):
        out |= load_module(m)
    return out
