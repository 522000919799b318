"""Builds: another version of a runtime or a converter, in its own pinned environment, named
`RUNTIME@BUILD` (`ort@1.30`) or `CONVERTER@BUILD` (`tf2onnx@1.16`) wherever a runtime or converter is named.

Two places, on purpose:
- the **definition** (name, what it builds, the packages asked for, the exact versions and the full
  lock of what was installed) is written to `harness-builds.toml` in the working folder, a file the
  user commits, so CI and colleagues rebuild the same thing;
- the **environment** lives in the per-user cache (`builds/` beside the export cache;
  HARNESS_BUILD_CACHE moves it), in a folder named by the digest of the lock: two definitions with the
  same lock share it, and one that is missing is rebuilt from the lock when first needed.

An environment is built in a temporary folder next to its final place and renamed when complete, so a
failed or interrupted install leaves nothing behind; the installer's own reason is the one line said.

Kinds of environment:
- `python` (runtimes `tf`, `litert`, `ort`): an isolated venv, the named packages installed with their
  dependencies resolved by pip the first time, then from the lock with --no-deps. The harness's worker
  code (runners/, fixtures/) is not installed there: the worker is started with a bootstrap that maps
  `harness_runners` and `harness_fixtures` onto this checkout's folders (python_command).
- `converter` (tensorflow, tf2onnx, tensorflowjs): a venv holding only the named packages (installed
  with --no-deps, exact pins), laid over the harness's own environment at start (its site-packages
  added after the build's), so the harness's exporters run with the build's converter.
- `node` (the Node runtimes): a folder with the named npm packages (`npm install --ignore-scripts`);
  the worker runs from a per-checkout view that links js/src beside the build's node_modules.
- `go-ort` (the go-ort runtime): the libonnxruntime of an onnxruntime wheel, which the Go worker
  opens at start (HARNESS_ORT_LIB); the worker binary is this checkout's.
- `go-tfgo` (the go-tfgo runtime): the TensorFlow C library of a tensorflow-cpu wheel; this checkout's
  Go worker is compiled against it at first use (as go/build.sh does against the main wheel), into the
  environment, under the digest of the Go sources (go_worker).

This module knows nothing of the runtime table (harness/runners/table.py resolves names through it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from harness.errors import HarnessError

BUILDS_FILE = "harness-builds.toml"
KINDS = ("python", "converter", "node", "go-ort", "go-tfgo")
# The converters a build can replace, and the distribution each one is (its version goes into the
# export cache key of every artifact it makes).
CONVERTERS = {"tensorflow": "tensorflow-cpu", "tf2onnx": "tf2onnx", "tensorflowjs": "tensorflowjs"}
# Which converter makes each format family (harness/export/<family>.py).
CONVERTER_OF_FAMILY = {"savedmodel": "tensorflow", "frozen": "tensorflow", "tflite": "tensorflow", "keras": "tensorflow",
                       "checkpoint": "tensorflow", "onnx": "tf2onnx", "tfjs": "tensorflowjs"}
INSTALL_TIMEOUT_S = 900
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PY_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
_NPM_PIN = re.compile(r"^((?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*)@(\d+\.\d+\.\d+[A-Za-z0-9.+-]*)$")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Build:
    """One build's definition, as recorded in harness-builds.toml."""

    name: str  # `ort@1.30`: the runtime or converter, `@`, the build's own name
    kind: str  # one of KINDS
    specs: tuple[str, ...]  # what was asked for: exact pins (`onnxruntime==1.30.0`, `@tensorflow/tfjs@4.21.0`)
    versions: dict[str, str] = field(default_factory=dict)  # the named packages' exact versions
    lock: tuple[str, ...] = ()  # every package installed, exact (`name==version` or `name@version`)
    python: str = ""  # the Python (major.minor) a Python build was made for

    @property
    def target(self) -> str:
        """The runtime or converter this build is another version of."""
        return self.name.partition("@")[0]

    @property
    def label(self) -> str:
        return self.name.partition("@")[2]

    @property
    def env_id(self) -> str:
        """The environment's folder name: the digest of what is installed, so equal locks share it."""
        h = hashlib.sha256(json.dumps([self.kind, self.python, sorted(self.lock)]).encode()).hexdigest()[:16]
        return f"{self.kind}-{h}"

    @property
    def root(self) -> Path:
        return build_cache() / self.env_id

    @property
    def ready(self) -> bool:
        """Whether the environment is there and complete (its marker is written last)."""
        return (self.root / ".complete").exists()

    def to_toml(self) -> str:
        lines = [f"[builds.{_toml_str(self.name)}]", f"kind = {_toml_str(self.kind)}",
                 f"specs = [{', '.join(_toml_str(s) for s in self.specs)}]",
                 "versions = { " + ", ".join(f"{_toml_str(k)} = {_toml_str(v)}" for k, v in sorted(self.versions.items())) + " }"]
        if self.python:
            lines.append(f"python = {_toml_str(self.python)}")
        lines.append("lock = [")
        lines += [f"  {_toml_str(p)}," for p in self.lock]
        lines.append("]")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, name: str, data: dict, where: Path) -> Build:
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
            return cls(name=name, kind=kind, specs=tuple(str(s) for s in data["specs"]),
                       versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
                       lock=tuple(str(p) for p in data.get("lock", ())), python=str(data.get("python", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise HarnessError(f"{where}: build {name!r} is not valid ({e}): expected kind, specs, versions and lock "
                               "(harness build add writes them)") from None

    # --- where the worker starts ---------------------------------------------------------------

    @property
    def python_exe(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def ort_lib(self) -> Path | None:
        libs = sorted(self.root.glob("lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*"))
        return libs[-1] if libs else None


def _toml_str(s: str) -> str:
    # A JSON string is a valid TOML basic string (the same escapes, \uXXXX included).
    return json.dumps(s)


# --- the project's definitions ------------------------------------------------------------------

def builds_file() -> Path:
    """harness-builds.toml of the working folder (HARNESS_BUILDS_FILE names another)."""
    return Path(os.environ.get("HARNESS_BUILDS_FILE") or BUILDS_FILE)


def build_cache() -> Path:
    """Where build environments live: HARNESS_BUILD_CACHE, else `builds/` in the per-user cache (Linux:
    ~/.cache/harness/builds)."""
    given = os.environ.get("HARNESS_BUILD_CACHE")
    if given:
        return Path(given).expanduser().resolve()
    import platformdirs

    return (platformdirs.user_cache_path("harness", appauthor=False) / "builds").resolve()


_loaded: dict[tuple[str, float, int], dict[str, Build]] = {}


def load() -> dict[str, Build]:
    """Every build the project defines (an absent file: none). Read once per file version."""
    path = builds_file()
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _loaded:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise HarnessError(f"cannot read {path}: {e} (expected the file `harness build add` writes)") from None
        table = data.get("builds", {})
        if not isinstance(table, dict):
            raise HarnessError(f"{path}: [builds] is not a table (expected the file `harness build add` writes)")
        _loaded.clear()
        _loaded[key] = {name: Build.from_toml(name, value, path) for name, value in table.items() if isinstance(value, dict)}
    return _loaded[key]


def find(name: str) -> Build | None:
    """The build named `name` (`ort@1.30`), or None."""
    return load().get(name)


def of_target(target: str) -> list[Build]:
    return [b for b in load().values() if b.target == target]


def _save(builds: dict[str, Build]) -> None:
    """Rewrite the definitions file whole (a sibling file renamed over it)."""
    path = builds_file()
    head = ("# Builds of runtimes and converters for this project, written by `harness build add` (commit it: CI and\n"
            "# colleagues rebuild the same environments from the locks below). Environments live in the per-user\n"
            "# cache; `harness build list` shows them.\n")
    text = head + "".join("\n" + b.to_toml() for b in sorted(builds.values(), key=lambda b: b.name))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    _loaded.clear()


def remove(name: str) -> Build:
    """Drop a definition. Its environment stays in the per-user cache: other projects' definitions with
    the same lock share it (and a worker may be running in it); delete the folder to reclaim the space."""
    builds = dict(load())
    if name not in builds:
        raise unknown_name(name)
    gone = builds.pop(name)
    _save(builds)
    return gone


def unknown_name(name: str) -> HarnessError:
    known = ", ".join(sorted(load())) or f"none yet ({builds_file()} has none: harness build add NAME SPEC...)"
    return HarnessError(f"unknown build {name!r}: expected one of {known}")


def unknown_build(target: str, label: str, kind: str = "runtime") -> HarnessError:
    """The one line for `TARGET@LABEL` naming no build of a known runtime or converter."""
    known = [b.name for b in of_target(target)]
    have = f"expected one of {', '.join(known)}" if known else f"no build of {target} is defined in {builds_file()}"
    return HarnessError(f"unknown build {label!r} of {kind} {target}: {have} (harness build add {target}@{label} SPEC... makes one)")


# --- adding -------------------------------------------------------------------------------------

def check_name(name: str) -> tuple[str, str]:
    target, at, label = name.partition("@")
    if not at or not target or not label or not _NAME.match(label) or "@" in label:
        raise HarnessError(f"build name {name!r} is not valid: expected RUNTIME@NAME or CONVERTER@NAME (e.g. ort@1.30, tf2onnx@1.16), "
                           "the name of letters, digits, '.', '_', '+', '-'")
    return target, label


def parse_specs(kind: str, specs: list[str]) -> dict[str, str]:
    """The named packages and their exact versions; one line for anything that is not an exact pin."""
    if not specs:
        raise HarnessError("harness build add needs what to install: expected one or more exact pins (onnxruntime==1.30.0, @tensorflow/tfjs@4.21.0)")
    pin, example = (_NPM_PIN, "@tensorflow/tfjs@4.21.0") if kind == "node" else (_PY_PIN, "onnxruntime==1.30.0")
    out: dict[str, str] = {}
    for spec in specs:
        m = pin.match(spec.strip())
        if not m:
            raise HarnessError(f"{spec!r} is not an exact pin: expected NAME{'@' if kind == 'node' else '=='}VERSION, e.g. {example} "
                               "(a build records exact versions, so CI rebuilds the same thing)")
        out[_normal(m.group(1)) if kind != "node" else m.group(1)] = m.group(2)
    return out


def _normal(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def add(name: str, kind: str, specs: list[str], verify: list[str] | None = None, say=None) -> Build:
    """Define the build, install its environment (or find it in the cache) and record it in the
    project's file. `verify` is a Python import (Python kinds) or file (node: under node_modules) that
    must be there afterwards. The file is written only once the environment works."""
    versions = parse_specs(kind, specs)
    build = Build(name=name, kind=kind, specs=tuple(s.strip() for s in specs), versions=versions,
                  python=f"{sys.version_info.major}.{sys.version_info.minor}" if kind != "node" else "")
    existing = find(name)
    if existing is not None and existing.specs == build.specs and existing.lock:
        build = existing  # the same definition again: make sure its environment is there
    elif kind in ("converter", "go-ort", "go-tfgo"):
        # Installed with --no-deps: the lock is the pins themselves, so an equal environment may be here already.
        pinned = Build(build.name, kind, build.specs, versions, tuple(sorted(f"{k}=={v}" for k, v in versions.items())), build.python)
        if pinned.ready:
            build = pinned
    built = ensure(build, verify=verify, say=say)
    builds = dict(load())
    builds[name] = built
    _save(builds)
    return built


def ensure(build: Build, verify: list[str] | None = None, say=None) -> Build:
    """The build with its environment in the cache: found, or installed (from the lock when the
    definition has one; resolved from the specs the first time). Returns the build with its lock."""
    if build.lock and build.ready:
        return build
    cache = build_cache()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot create the build cache {cache}: {e.strerror or e} (set HARNESS_BUILD_CACHE to a writable folder)") from None
    lock_file = cache / f".{build.name.replace('/', '_')}.lock"
    with FileLock(str(lock_file)):
        if build.lock and build.ready:  # another process built it meanwhile
            return build
        _sweep(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=cache))
        try:
            if say:
                say(f"building {build.name} ({', '.join(build.specs)}) in {cache}" + (" from its lock" if build.lock else ""))
            lock = _install(build, tmp)
            for check in verify or []:
                _verify(build, tmp, check)
            final = Build(build.name, build.kind, build.specs, _named_versions(build, lock), tuple(lock), build.python)
            if build.lock and sorted(build.lock) != sorted(lock):
                drift = sorted(set(lock) ^ set(build.lock))[:6]
                raise HarnessError(f"build {build.name}: what installed differs from its recorded lock ({', '.join(drift)}): "
                                   f"expected the same packages (remove it and add it again: harness build remove {build.name})")
            (tmp / "build.json").write_text(json.dumps({"name": final.name, "kind": final.kind, "lock": list(final.lock)}, indent=1))
            (tmp / ".complete").write_text("")
            dest = final.root
            if final.ready:
                shutil.rmtree(tmp, ignore_errors=True)  # an equal lock's environment is there already
            else:
                if dest.exists():  # a folder without its completion marker: damaged, replaced whole
                    shutil.rmtree(dest)
                os.rename(tmp, dest)
                _fix_prefix(final, tmp, dest)
            return final
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _sweep(cache: Path) -> None:
    """Remove what an install killed outright (SIGKILL, a power cut) left: `.tmp-<pid>-*` folders whose
    process is gone. A live process's folder is never touched."""
    for tmp in cache.glob(".tmp-*-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _named_versions(build: Build, lock: list[str]) -> dict[str, str]:
    installed = dict(_split_pin(build.kind, p) for p in lock)
    named = parse_specs(build.kind, list(build.specs))
    return {k: installed.get(k, v) for k, v in named.items()}


def _split_pin(kind: str, pin: str) -> tuple[str, str]:
    if kind == "node":
        m = _NPM_PIN.match(pin)
        return (m.group(1), m.group(2)) if m else (pin, "")
    name, _, version = pin.partition("==")
    return _normal(name), version


def _run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> str:
    """Run an installer; on failure one line with its own reason (its last error line)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, cwd=cwd)
    except FileNotFoundError:
        raise HarnessError(f"{what}: {cmd[0]} is not installed (expected it on PATH)") from None
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{what}: the installer did not finish in {INSTALL_TIMEOUT_S} s") from None
    if out.returncode != 0:
        raise HarnessError(f"{what}: {_reason(out.stderr or out.stdout)}")
    return out.stdout


def _reason(text: str) -> str:
    """The installer's own reason: pip's `ERROR:` lines, npm's `npm error` lines, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:") or ln.startswith("npm error") or ln.startswith("npm ERR!")]
    errors = [ln for ln in errors if not re.match(r"^npm (error|ERR!) (A complete log|code|errno|$)", ln)]
    # pip's last ERROR line is its conclusion ("No matching distribution found for ..."); npm's first is its cause.
    picked = (errors[-1:] if errors[-1].startswith("ERROR:") else errors[:1]) if errors else lines[-1:]
    return " ".join(picked) or "the installer failed without saying why"


def _pip(target_python: Path, *args: str) -> list[str]:
    # The harness's own pip drives the build's interpreter (pip >= 22.3): no pip inside each build.
    return [sys.executable, "-m", "pip", "--python", str(target_python), "--disable-pip-version-check", "--no-input", *args]


def _install(build: Build, tmp: Path) -> list[str]:
    """Install `build` into the empty folder `tmp`; returns the lock (every package, exact)."""
    what = f"cannot install build {build.name}"
    if build.kind == "node":
        return _install_node(build, tmp, what)
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp)], what)
    py = tmp / "bin" / "python"
    if build.lock:  # exactly what was recorded, nothing resolved
        req = tmp / "lock.txt"
        req.write_text("\n".join(build.lock) + "\n")
        _run(_pip(py, "install", "-q", "--no-deps", "--only-binary=:all:", "-r", str(req)), what)
    elif build.kind in ("converter", "go-ort", "go-tfgo"):
        # Only the named packages (the harness's environment provides the rest, or nothing else is needed).
        _run(_pip(py, "install", "-q", "--no-deps", "--only-binary=:all:", *build.specs), what)
    else:
        _run(_pip(py, "install", "-q", "--only-binary=:all:", *build.specs), what)
    frozen = _run(_pip(py, "freeze", "--all"), what)
    return sorted(ln.strip() for ln in frozen.splitlines() if "==" in ln and not ln.startswith(("pip==", "setuptools==", "wheel==")))


def _install_node(build: Build, tmp: Path, what: str) -> list[str]:
    # npm resolves from the named packages each time; ensure() refuses a result that differs from the recorded lock.
    deps = parse_specs("node", list(build.specs))
    (tmp / "package.json").write_text(json.dumps({"name": "harness-build", "private": True, "type": "module", "dependencies": deps}, indent=1))
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip", "npm_config_update_notifier": "false"}
    # --ignore-scripts: install scripts download binaries (tfjs-node's libtensorflow, ORT's GPU providers), which fails offline.
    _run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact", "--loglevel=error"], what, env=env, cwd=tmp)
    lock = json.loads((tmp / "package-lock.json").read_text())
    pins = []
    for path, meta in lock.get("packages", {}).items():
        if path and "node_modules/" in path and meta.get("version"):
            pins.append(f"{path.rsplit('node_modules/', 1)[1]}@{meta['version']}")
    return sorted(set(pins))


def _verify(build: Build, tmp: Path, check: str) -> None:
    if build.kind == "node":
        if not list((tmp / "node_modules").glob(check)):
            raise HarnessError(f"build {build.name} installed, but {check} is missing under its node_modules (expected the packages the runtime loads)")
        return
    if build.kind == "go-tfgo":
        if not list(tmp.glob("lib/python*/site-packages/tensorflow/libtensorflow_cc.so.2")):
            raise HarnessError(f"build {build.name} installed, but it holds no libtensorflow_cc.so.2 (expected a tensorflow-cpu wheel, e.g. tensorflow-cpu==2.20.0)")
        return
    if build.kind == "go-ort":
        if not list(tmp.glob("lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*")):
            raise HarnessError(f"build {build.name} installed, but it holds no libonnxruntime.so (expected an onnxruntime wheel, e.g. onnxruntime==1.30.0)")
        return
    # A converter is checked by its distribution's version over the harness's environment (importing
    # tensorflowjs pulls in modules the harness's exporter replaces with placeholders: harness/export/tfjs.py).
    code = (OVERLAY + f"import importlib.metadata as m; m.version({check!r})") if build.kind == "converter" else f"import {check}"
    cmd = [str(tmp / "bin" / "python"), "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_python_env(build))
    if out.returncode != 0:
        last = [ln for ln in (out.stderr or "").splitlines() if ln.strip()][-1:] or ["no message"]
        what = f"{check} is not found over the harness's environment" if build.kind == "converter" else f"`import {check}` fails in it"
        raise HarnessError(f"build {build.name} installed, but {what}: {last[0].strip()}")


def _fix_prefix(build: Build, old: Path, new: Path) -> None:
    """A venv records its own folder in bin/activate and pyvenv.cfg; the interpreter finds its
    site-packages relative to itself, so only the scripts' shebangs need no care (none are run)."""
    cfg = new / "pyvenv.cfg"
    if cfg.exists():
        cfg.write_text(cfg.read_text().replace(str(old), str(new)))


# --- starting a worker or a converter in a build -----------------------------------------------

MAIN_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# Laid over the harness's environment: the build's site-packages first, then the harness's (its .pth
# files too, so the harness itself is importable).
OVERLAY = f"import site; site.addsitedir({str(MAIN_SITE)!r}); "


def _bootstrap(module: str, folders: dict[str, Path]) -> str:
    """Code for `python -c` that maps the harness's worker packages onto this checkout's folders and
    runs `module` as __main__ (as `python -m` does): the build holds no copy of them, so the worker
    code is the same as the main environment's."""
    # A folder the worker cannot see (a sandbox shows it runners/ only) is left unmapped, as in the main venv.
    maps = "\n".join(
        f"if _os.path.exists({str(path / '__init__.py')!r}):\n"
        f" _s = _u.spec_from_file_location({pkg!r}, {str(path / '__init__.py')!r}, submodule_search_locations=[{str(path)!r}])\n"
        f" _m = _u.module_from_spec(_s); _sys.modules[{pkg!r}] = _m; _s.loader.exec_module(_m)"
        for pkg, path in folders.items())
    return f"import os as _os, sys as _sys, importlib.util as _u, runpy as _r\n{maps}\n_r.run_module({module!r}, run_name='__main__', alter_sys=True)"


def worker_folders() -> dict[str, Path]:
    return {"harness_runners": REPO / "runners", "harness_fixtures": REPO / "fixtures"}


def python_command(build: Build, module: str) -> list[str]:
    """How to start the Python worker `module` in a build's interpreter."""
    code = (OVERLAY + "\n" if build.kind == "converter" else "") + _bootstrap(module, worker_folders())
    return [str(build.python_exe), "-c", code]


def _python_env(build: Build) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # nothing of the harness's environment leaks into an isolated build
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def node_view(build: Build) -> Path:
    """A per-checkout folder for a Node build's worker: js/src and the build's node_modules side by
    side (links), started with --preserve-symlinks so the worker's imports resolve in the build."""
    view = REPO / ".harness" / "node-builds" / build.env_id
    want = {"src": REPO / "js" / "src", "node_modules": build.root / "node_modules"}
    if all((view / k).is_symlink() and os.readlink(view / k) == str(v) for k, v in want.items()) and (view / "package.json").exists():
        return view
    view.mkdir(parents=True, exist_ok=True)
    (view / "package.json").write_text(json.dumps({"name": "harness-build-view", "private": True, "type": "module"}))
    for k, v in want.items():
        tmp = view / f".{k}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(v, tmp)
        os.replace(tmp, view / k)
    return view


def describe(build: Build) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(build.versions.items())) or ", ".join(build.specs)


GO_DIR = REPO / "go"
GO_TIMEOUT_S = 900


def _go_sources_digest() -> str:
    """What the Go worker is compiled from (go/build.sh's staleness check, as a digest)."""
    h = hashlib.sha256()
    for path in sorted(p for p in GO_DIR.rglob("*") if p.is_file() and ".build" not in p.parts
                       and (p.suffix == ".go" and not p.name.endswith("_test.go") or p.name in ("go.mod", "go.sum"))):
        h.update(str(path.relative_to(GO_DIR)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def go_worker_path(build: Build) -> Path:
    """Where the go-tfgo worker of this checkout's Go sources lives in a build (compiled or not)."""
    return build.root / "go" / _go_sources_digest() / "harness-worker"


def go_worker(build: Build) -> Path:
    """The go-tfgo worker compiled against a build's TensorFlow C library: from this checkout's Go
    sources, once per version of them (cgo flags as go/env.sh sets them; the run path relative to the
    binary, so the environment can move). One line with the compiler's reason when it fails."""
    tf = next(iter(sorted(build.root.glob("lib/python*/site-packages/tensorflow"))), None)
    if tf is None:
        raise HarnessError(f"build {build.name}: no TensorFlow in {build.root} (harness build sync {build.name})")
    out = go_worker_path(build)
    if out.exists():
        return out
    go = shutil.which("go")
    if go is None:
        raise HarnessError(f"build {build.name}: go is not on PATH (expected Go, to compile the worker against the build's TensorFlow)")
    with FileLock(str(build.root / "go.lock")):
        if out.exists():
            return out
        links = build.root / "go" / "lib"
        links.mkdir(parents=True, exist_ok=True)
        for name, target in (("libtensorflow.so", "libtensorflow_cc.so.2"), ("libtensorflow_framework.so", "libtensorflow_framework.so.2")):
            (links / name).unlink(missing_ok=True)
            os.symlink(tf / target, links / name)
        rel = os.path.relpath(tf, out.parent)
        env = {**os.environ, "CGO_ENABLED": "1", "CGO_CFLAGS": f"-I{tf}/include",
               "CGO_LDFLAGS": f"-L{links} -ltensorflow_framework -Wl,-rpath,$ORIGIN/{rel}"}
        tmp = out.with_name(f".harness-worker.{os.getpid()}.tmp")
        try:
            _run([go, "build", "-o", str(tmp), "./cmd/harness-worker"], f"cannot compile the go-tfgo worker for build {build.name}", env=env, cwd=GO_DIR)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def converter_starts(build: Build) -> tuple[bool, str]:
    """Whether a converter build's converter imports over the harness's environment, and its version."""
    dist = CONVERTERS.get(build.target, build.target)
    code = OVERLAY + f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(build.python_exe), "-c", code], capture_output=True, text=True, timeout=120, env=_python_env(build))
    if out.returncode != 0:
        last = [ln for ln in out.stderr.splitlines() if ln.strip()][-1:] or ["no message"]
        return False, last[0].strip()
    return True, f"{dist} {out.stdout.strip()}"
