"""Exports: one module per format family, a content-addressed cache, written atomically under a lock.

Every format but `keras`/`h5` is derived from the fixture's SavedModel, so the SavedModel artifact is
exported (or found in the cache) first. Exports run in this process: one TensorFlow import for all of
them, instead of one per converter CLI call.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from filelock import FileLock, Timeout

from harness import builds as project_builds
from harness import machine
from harness.artifact import Artifact, damage, manifest
from harness.builds import Build
from harness.errors import HarnessError, unknown
from harness.export import validate
from harness.export.locks import LockTimeout, entry_lock
from harness.fixtures import Fixture, TensorSpec, generator_for


@dataclass(frozen=True)
class FormatSpec:
    name: str
    family: str  # module in harness.export
    # The model's path inside its artifact folder (a file, or a folder for a SavedModel or a checkpoint):
    # the exporter writes it there and records it as the artifact's `path`, which validation checks and
    # every worker loads (workers read the path from artifact.json, never a layout of their own).
    layout: str
    keras_only: bool = False
    options: tuple[tuple[str, object], ...] = ()
    # A converter option users reach for only when they need it (Select TF ops): in the matrix of the
    # fixtures that list it in `extra_formats`, and of any fixture when the selection names it.
    opt_in: bool = False
    # Whether the format carries a SavedModel's assets (a vocabulary file behind a lookup table);
    # a derived format that cannot is `unsupported` for a model that has them, with the reason.
    holds_assets: bool = False
    # Which tolerances judge it (harness.comparator.DEFAULT_TOLERANCES, read by format_class below):
    # float32, float16, dynamic-range or int8 (design: conformance policy).
    tolerance_class: str = "float32"
    # `FORMAT@BUILD` (`onnx13@1.16`): made by a build of the format's converter (harness/builds.py), in
    # that build's environment. Out of repr: the cache key of the registry's own formats stays as it was.
    build: Build | None = field(default=None, repr=False, compare=False)
    # What a valid artifact of the format is (harness/export/validate.py), checked at export: the model at
    # its layout in the artifact folder. Out of repr too: how an artifact is checked is not what it is.
    check: Callable[[Path, str], None] | None = field(default=None, repr=False, compare=False)

    @property
    def base(self) -> str:
        return self.name.partition("@")[0]


FORMATS: dict[str, FormatSpec] = {
    f.name: f
    for f in [
        FormatSpec("savedmodel", "savedmodel", "saved_model", holds_assets=True, check=validate.check_savedmodel),
        FormatSpec("keras", "keras", "model.keras", keras_only=True, check=validate.check_keras),
        FormatSpec("h5", "keras", "model.h5", keras_only=True, check=validate.check_h5),
        FormatSpec("frozen_graph", "frozen", "model.pb", check=validate.check_frozen),
        FormatSpec("tflite", "tflite", "model.tflite", check=validate.check_tflite),
        FormatSpec("tflite_fp16", "tflite", "model.tflite", tolerance_class="float16", check=validate.check_tflite),
        FormatSpec("tflite_dynamic", "tflite", "model.tflite", tolerance_class="dynamic-range", check=validate.check_tflite),
        FormatSpec("tflite_int8", "tflite", "model.tflite", tolerance_class="int8", check=validate.check_tflite),
        FormatSpec("tflite_select", "tflite", "model.tflite", opt_in=True, check=validate.check_tflite),
        FormatSpec("onnx13", "onnx", "model.onnx", options=(("opset", 13),), check=validate.check_onnx),
        FormatSpec("onnx18", "onnx", "model.onnx", options=(("opset", 18),), check=validate.check_onnx),
        FormatSpec("tfjs_graph", "tfjs", "tfjs/model.json", check=validate.check_tfjs),
        FormatSpec("tfjs_layers", "tfjs", "tfjs_layers/model.json", keras_only=True, check=validate.check_tfjs),
        # The fixture's variables as a TF2 tf.train.Checkpoint or a TF1 Saver checkpoint, restored by
        # the tf worker into the fixture's code (harness/export/checkpoint.py); run by TF, so judged at
        # the SavedModel's precision (float32).
        FormatSpec("checkpoint", "checkpoint", "checkpoint", opt_in=True, check=validate.check_checkpoint),
    ]
}


def format_class(fmt: str, precision: str | None = None) -> str:
    """The tolerance class of a format, run by a runtime that computes in `precision` (its worker's
    `info.precision`, when it says): a float32 format computed in float16 (TF.js WebGL without float32
    render targets, openvino@f16) is judged as float16, one computed in bfloat16 (openvino@bf16) as bfloat16."""
    spec = FORMATS.get(fmt.partition("@")[0])  # `onnx13@1.16`: onnx13 made by a converter build
    cls = spec.tolerance_class if spec is not None else "float32"
    return precision if precision in ("float16", "bfloat16") and cls == "float32" else cls


# Distributions whose versions decide what a conversion produces; they go into the cache key.
CONVERTER_DISTS = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "tensorflowjs", "numpy", "protobuf")


def check_format(name: str) -> FormatSpec:
    """A format of the registry, or `FORMAT@BUILD`: that format made by a build of its converter
    (`onnx13@1.16` by build `tf2onnx@1.16`; harness build add tf2onnx@1.16 tf2onnx==1.16.1)."""
    if name in FORMATS:
        return FORMATS[name]
    base, at, label = name.partition("@")
    if base not in FORMATS:
        raise unknown("format", name, list(FORMATS))
    spec = FORMATS[base]
    converter = project_builds.CONVERTER_OF_FAMILY[spec.family]
    build = project_builds.find(f"{converter}@{label}") if at else None
    if build is None or build.kind != "converter":
        raise project_builds.unknown_build(converter, label, "converter")
    return replace(spec, name=name, build=build)


def base_format(name: str) -> str:
    """The registry's format a name stands for (`onnx13@1.16` is onnx13 made by another converter)."""
    return name.partition("@")[0]


def formats_for(fixture: Fixture, named: list[str] | None = None) -> list[str]:
    """The formats a fixture is exported to: every format its kind allows, opt-in ones only where the
    fixture lists them or `named` (the selection's formats) does. A given model has its own format only."""
    if fixture.formats is not None:
        return list(fixture.formats)
    return [f for f, spec in FORMATS.items()
            if (not spec.keras_only or fixture.kind == "keras") and (not spec.opt_in or f in fixture.extra_formats or f in (named or []))]


def converter_versions() -> dict[str, str]:
    out = {}
    for dist in CONVERTER_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


# The CPU features for which TensorFlow turns its oneDNN path on by default on Linux, as TF 2.21 decides
# it (tensorflow/core/util/util.cc, DefaultOneDnnPolicy), and Arm's Neoverse V1 (implementer, part).
ONEDNN_DEFAULT_X86 = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
ONEDNN_DEFAULT_ARM = (("0x41", "0xd40"),)


def tf_settings() -> dict[str, object]:
    """What of the exporting TensorFlow's configuration changes what a conversion writes, so it is part
    of the cache key: whether TF's oneDNN path is on (its graph rewrites differ: a tfjs_graph of the same
    SavedModel has other nodes with it on) and, with it on, the instruction set oneDNN is capped at."""
    onednn = _onednn_on()
    return {"onednn": onednn, **({"onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")} if onednn else {})}


def _onednn_on() -> bool:
    """Whether TensorFlow runs (or, imported now, would run) its oneDNN path. TF decides once, when it
    starts: where it is imported, it is asked; otherwise its rule is applied, without the seconds an
    import costs: TF_ENABLE_ONEDNN_OPTS when it is 0/1/true/false (any case), else the CPU's features."""
    if "tensorflow" in sys.modules:
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").lower()
    if value in ("0", "false", "1", "true"):
        return value in ("1", "true")
    return _onednn_default()


@functools.cache
def _onednn_default() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    info = machine.cpu_fields()
    flags = set((info.get("flags") or "").split())
    arm = (info.get("CPU implementer", ""), info.get("CPU part", ""))
    return bool(flags & set(ONEDNN_DEFAULT_X86)) or arm in ONEDNN_DEFAULT_ARM


def cache_root() -> Path:
    """The export cache: HARNESS_CACHE, else a per-user cache folder shared by every project (Linux:
    $XDG_CACHE_HOME/harness/exports, ~/.cache/harness/exports). Artifacts are content-addressed (the
    model's digest, the converters' versions), so projects can share them safely. Resolved: workers,
    sandboxes and containers get the real path, not a link."""
    given = os.environ.get("HARNESS_CACHE")
    if given:
        return Path(given).expanduser().resolve()
    import platformdirs

    return (platformdirs.user_cache_path("harness", appauthor=False) / "exports").resolve()


class Exporter:
    """Finds artifacts in the cache or exports them into it. Every artifact handed out is verified
    against the sizes and digests its export recorded; a damaged one is exported again (and listed in
    `repairs`). A failed export is retried when what it was made from has changed, when the failure
    came from the environment (a full disk, a missing file), and with `refresh`."""

    def __init__(self, root: Path | None = None, refresh: bool = False):
        self.root = root or cache_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HarnessError(f"cannot create the export cache {self.root}: {e.strerror or e} (expected a writable folder; set HARNESS_CACHE to move it)") from None
        self.cleaned = clean_stale(self.root)  # what exports killed mid-way (SIGKILL, power loss) left behind
        self.versions = converter_versions()
        self.refresh = refresh
        self.repairs: list[dict] = []  # artifacts found damaged and exported again in this process
        self._family_hash: dict[str, str] = {}
        self._fresh: set[Path] = set()  # folders exported or found by this process (refresh exports each once)
        # Entries whose lock this process gave up waiting for (a stuck holder): later cases that need them
        # try the lock once and fail at once with the same words, instead of waiting the whole time again.
        self._stuck: dict[Path, str] = {}

    def key(self, fixture: Fixture, fmt: str) -> str:
        spec = check_format(fmt)
        h = hashlib.sha256()
        for part in (
            fixture.name,  # members of a family (gemm64, gemm256) share one source file
            fixture.digest(),
            fixture.signature,  # a user SavedModel: the function exported, and the tag set it lives in
            fixture.tag,
            fmt,
            repr(spec),  # the registry's entry: converter options and layout
            self._family_source_hash("given" if fixture.kind == "given" else spec.family),
            json.dumps(self.versions_for(spec), sort_keys=True),
            json.dumps(tf_settings(), sort_keys=True),  # the same converters write other graphs with oneDNN on
        ):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:20]

    def versions_for(self, spec: FormatSpec) -> dict[str, str]:
        """The converters' versions an export of `spec` is made with: this environment's, with a converter
        build's own packages over them (their exact versions, from its lock)."""
        if spec.build is None:
            return self.versions
        locked = dict(p.split("==", 1) for p in spec.build.lock if "==" in p)
        norm = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in locked.items()}
        return {dist: norm.get(dist, version) for dist, version in self.versions.items()}

    def _family_source_hash(self, family: str) -> str:
        if family not in self._family_hash:
            here = Path(__file__).parent
            data = b"".join((here / f"{name}.py").read_bytes() for name in (family, "common", "validate"))
            self._family_hash[family] = hashlib.sha256(data).hexdigest()
        return self._family_hash[family]

    def folder(self, fixture: Fixture, fmt: str) -> Path:
        return self.root / f"{fixture.name}-{fmt}-{self.key(fixture, fmt)}"

    def cached(self, fixture: Fixture, fmt: str) -> Artifact | None:
        """The cache entry as it is (not verified), or None."""
        folder = self.folder(fixture, fmt)
        if (folder / "artifact.json").exists():
            try:
                return Artifact.load(folder)
            except HarnessError:
                return None  # unreadable record: treated as absent, re-exported under the lock
        return None

    def _usable(self, fixture: Fixture, fmt: str, art: Artifact | None) -> tuple[bool, str | None]:
        """Whether a cache entry may be handed out, and if not, why (None: it is simply absent)."""
        if art is None:
            return False, None
        if self.refresh and art.dir not in self._fresh:
            return False, REFRESHED
        recorded = art.extra.get("tf_settings")
        if recorded is not None and recorded != tf_settings():
            # The key holds TF's settings as foreseen before TF starts; what the export really ran with is
            # recorded: an entry whose export ran otherwise is never handed out (made again, not a repair).
            return False, OTHER_SETTINGS
        if art.status == "ok":
            problems = damage(art)
            return (False, "; ".join(problems)) if problems else (True, None)
        if art.extra.get("transient"):
            return False, f"the last export failed for a reason of the environment ({art.error_summary}): tried again"
        source = self._source_digest(fixture, fmt)
        if source != art.source_digest:
            return False, "what it is exported from has changed since the export failed: tried again"
        return True, None

    def _source_digest(self, fixture: Fixture, fmt: str) -> str:
        spec = check_format(fmt)
        if spec.base == "savedmodel" or spec.keras_only or fixture.kind == "given":
            return fixture.digest()
        return _digest_of(self.get(fixture, "savedmodel"))

    def verify_fully(self, fixture: Fixture, fmt: str) -> str | None:
        """Hash every file of a cached artifact; a damaged one is removed (the next `get` exports it
        again) and recorded in `repairs`. Returns what was wrong, or None."""
        art = self.cached(fixture, fmt)
        if art is None or art.status != "ok":
            return None
        problems = damage(art, full=True)
        if not problems:
            return None
        why = "; ".join(problems)
        folder = self.folder(fixture, fmt)
        with self._lock(folder):
            shutil.rmtree(folder, ignore_errors=True)
        self._fresh.discard(folder)
        self.repairs.append({"artifact": folder.name, "fixture": fixture.name, "format": fmt, "problem": why})
        return why

    def get(self, fixture: Fixture, fmt: str) -> Artifact:
        """The artifact, from the cache (verified) or freshly exported. A failed conversion is an
        artifact too (status `error` with the converter's whole message, its stage and culprit)."""
        spec = check_format(fmt)
        art = self.cached(fixture, fmt)
        ok, _ = self._usable(fixture, fmt, art)
        if ok:
            assert art is not None
            self._fresh.add(art.folder_path)
            return art
        folder = self.folder(fixture, fmt)
        with self._lock(folder):
            art = self.cached(fixture, fmt)  # another process may have written it meanwhile
            ok, why = self._usable(fixture, fmt, art)
            if ok:
                assert art is not None
                self._fresh.add(folder)
                return art
            if why and why not in (REFRESHED, OTHER_SETTINGS) and art is not None and art.status == "ok":
                self.repairs.append({"artifact": folder.name, "fixture": fixture.name, "format": fmt, "problem": why})
            # A damaged, stale or refreshed entry stays where it is until its replacement is complete:
            # a reader (another run) sees the old artifact or the new one, never a hole (_install).
            source = None
            if spec.base != "savedmodel" and not spec.keras_only and fixture.kind != "given":  # a given model is handed out as it is
                source = self.get(fixture, "savedmodel")
            fresh = self._export(fixture, spec, folder, source)
            self._fresh.add(folder)
            return fresh

    @contextlib.contextmanager
    def _lock(self, folder: Path) -> Iterator[None]:
        """The entry's lock (harness/export/locks.py): a bounded wait, said when long; an entry given up
        on before in this process is tried once more without waiting."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(entry_lock(folder, 0 if folder in self._stuck else None))
        except LockTimeout as e:  # only the wait for this entry's lock, not what is done holding it
            self._stuck.setdefault(folder, str(e))
            raise LockTimeout(self._stuck[folder]) from None
        with held:
            self._stuck.pop(folder, None)
            yield

    def _export(self, fixture: Fixture, spec: FormatSpec, folder: Path, source: Artifact | None) -> Artifact:
        art = Artifact(
            fixture=fixture.name,
            format=spec.base,  # what workers are told they load; a converter build's name is in the folder's
            key=self.key(fixture, spec.name),
            status="ok",
            signature=fixture.signature,
            converters=dict(self.versions_for(spec)),
            source_hash=fixture.digest(),
            source_digest=fixture.digest() if source is None else _digest_of(source),
        )
        art.extra["tag"] = fixture.tag
        if spec.build is not None:
            art.extra["converter_build"] = spec.build.name
        try:
            # Named after its entry, so a later run can tell from the entry's lock whether its writer is gone.
            tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}-", dir=self.root))
        except OSError as e:
            raise HarnessError(f"cannot write to the export cache {self.root}: {e.strerror or e} (expected a writable folder with free space)") from None
        start = time.perf_counter()
        try:
            if spec.build is not None:
                art = _convert_in_build(spec.build, fixture, spec, tmp, source, art)
            else:
                convert(fixture, spec, tmp, source, art)
            art.export_s = round(time.perf_counter() - start, 3)
            if art.status == "ok":
                art.files = manifest(tmp)
            (tmp / "artifact.json").write_text(art.to_json())
        except BaseException as e:  # a full disk, a signal: no half-written .tmp-* folder stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise HarnessError(f"cannot write to the export cache {self.root}: {e.strerror or e} (expected a writable folder with free space)") from None
            raise
        try:
            # mkdtemp made the folder for its writer alone (0700): an entry is for every user the umask lets
            # read it (a cache shared by a group, a CI cache restored by another uid, a sandboxed worker).
            os.chmod(tmp, 0o777 & ~_umask())
            _install(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return Artifact.load(folder)


REFRESHED = "--refresh/--force: exported again"  # why an intact entry was exported again: not a repair
OTHER_SETTINGS = "exported by a TensorFlow with other settings (oneDNN) than the key foresaw: exported again"
TMP_PREFIX = ".tmp-"  # an export being written: .tmp-<entry>-<random>
STALE_TMP_S = 600.0  # a temporary folder this old whose entry's lock is free was left by a killed export
_ENTRY = re.compile(r"(?P<entry>.+-[0-9a-f]{20})-[a-z0-9_]+")


def clean_stale(root: Path, min_age_s: float = STALE_TMP_S) -> list[str]:
    """Remove the temporary folders of exports that died mid-way (SIGKILL, power loss): older than
    `min_age_s` and with their entry's lock free (the lock is held from before the folder is made until
    it is renamed into place, and the kernel lets go of it when its process dies). A folder whose entry
    cannot be told is removed only when a day old. Returns the names removed."""
    removed = []
    now = time.time()
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        try:
            age = now - tmp.lstat().st_mtime
        except OSError:
            continue
        match = _ENTRY.fullmatch(tmp.name[len(TMP_PREFIX):])
        if age < (min_age_s if match else max(min_age_s, 86400.0)):
            continue
        try:
            if match:
                with FileLock(str(root / match["entry"]) + ".lock", timeout=0):
                    shutil.rmtree(tmp)
            else:
                shutil.rmtree(tmp)
        except (Timeout, OSError):
            continue  # being written after all, or not ours to remove (another user's)
        removed.append(tmp.name)
    return removed


def _umask() -> int:
    """This process's umask, read without changing it (Linux says it in /proc; elsewhere set and put back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _install(tmp: Path, folder: Path) -> None:
    """Put a finished export in place, atomically: renamed to the entry's name, or, where an entry is
    there (refreshed, stale, damaged), swapped with it in one step (renameat2 RENAME_EXCHANGE) and the
    old one removed, so a concurrent reader finds the old artifact or the new one and never nothing.
    Where the file system cannot swap, the old entry is moved aside first (a hole of one rename)."""
    try:
        os.rename(tmp, folder)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _renameat2 is not None and _renameat2(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(folder), _RENAME_EXCHANGE) == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old entry
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def convert(fixture: Fixture, spec: FormatSpec, tmp: Path, source: Artifact | None, art: Artifact) -> None:
    """Convert `fixture` (or its SavedModel `source`) to `spec` into `tmp` and validate it, in this
    process; a converter's failure is recorded in `art` with its whole message (a result, not a raise)."""
    try:
        if source is not None and source.status != "ok":
            art.extra.update(stage=source.stage, culprit=source.culprit)
            raise _SourceFailed(f"the SavedModel it is converted from failed ({source.stage}, {source.culprit}): {source.error}")
        if source is not None and not spec.holds_assets:
            assets = _assets(source)
            if assets:
                raise FormatLimit(f"the format cannot hold the SavedModel's assets ({', '.join(assets)}): it keeps no files beside "
                                  "the graph, so the lookup tables they initialise would be empty")
        module = importlib.import_module(f"harness.export.{'given' if fixture.kind == 'given' else spec.family}")
        export: Callable = module.export
        said = _ConverterLog()
        try:
            with said, contextlib.redirect_stdout(said.printed):
                export(fixture, spec, tmp, source, art)
                if fixture.custom_objects and spec.family == "keras":  # for the tf worker (harness_runners.custom)
                    art.extra["custom_objects"] = fixture.custom_objects.stage(tmp)
        finally:
            if said.lines:
                art.extra["converter_log"] = said.lines
        art.extra["tf_settings"] = tf_settings()  # TensorFlow has started by now: its own word
        if fixture.kind != "given":  # a given model was validated as the user's (harness/export/given.py)
            validate.validate(spec, tmp, art)
    except Exception as e:  # a converter's failure is a result, recorded with its whole message
        if _disk_full(e):
            code = errno.EROFS if "Read-only" in str(e) else errno.ENOSPC
            raise OSError(code, os.strerror(code)) from e
        _record_failure(art, e, fixture)
        if art.extra.get("converter_log"):
            # The converter's own warnings often name the real cause ("loop rewrite failed: ...").
            art.error = f"{art.error}\n--- what the converter logged ---\n" + "\n".join(art.extra["converter_log"])


CONVERT_TIMEOUT_S = 900


def _convert_in_build(build: Build, fixture: Fixture, spec: FormatSpec, tmp: Path, source: Artifact | None, art: Artifact) -> Artifact:
    """`convert` in a converter build's interpreter (its packages over this environment's): the child
    reads the fixture from the registry, writes the artifact into `tmp` and its record as artifact.json.
    What the child could not do (the build will not start, a fixture from outside the registry) is an
    error of the environment with the child's last words."""
    from harness.fixtures import all_fixtures

    def failed(message: str) -> Artifact:
        art.status, art.error = "error", message
        art.extra.update(stage="export", culprit="environment")
        return art

    if fixture.name not in all_fixtures():
        return failed(f"converter build {build.name} exports the registry's fixtures only: {fixture.name} is not one")
    try:
        project_builds.ensure(build)
    except HarnessError as e:
        return failed(str(e))
    (tmp / "artifact.json").write_text(art.to_json())
    request = json.dumps({"fixture": fixture.name, "format": spec.base, "tmp": str(tmp), "source": str(source.dir) if source else None})
    code = project_builds.OVERLAY + "import harness.export as _e; _e._child_convert()"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run([str(build.python_exe), "-c", code, request], capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return failed(f"converter build {build.name} did not finish the export in {CONVERT_TIMEOUT_S} s")
    try:
        made = Artifact.load(tmp)
    except HarnessError:
        made = None
    if done.returncode != 0 or made is None or made.extra.get("child") != "done":
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-15:])
        return failed(f"converter build {build.name} could not export (exit {done.returncode}): {tail or 'no message'}")
    made.extra.pop("child", None)
    made.key, made.converters = art.key, {**art.converters, **made.converters}
    return made


def _child_convert() -> None:
    """The child side of _convert_in_build (run in a converter build): one conversion, recorded."""
    from harness.fixtures import get_fixture

    request = json.loads(sys.argv[1])
    tmp = Path(request["tmp"])
    art = Artifact.load(tmp)
    art.converters = converter_versions()  # this interpreter's: the build's converter over the harness's environment
    source = Artifact.load(Path(request["source"])) if request["source"] else None
    convert(get_fixture(request["fixture"]), FORMATS[request["format"]], tmp, source, art)
    art.extra["child"] = "done"
    (tmp / "artifact.json").write_text(art.to_json())


def _disk_full(e: BaseException) -> bool:
    """A converter's way of saying the disk is full or read-only (TensorFlow wraps ENOSPC in its own errors)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "Read-only file system" in text


def _digest_of(source: Artifact) -> str:
    """What a derived artifact records as its source: the content digest, or the source's failure."""
    return source.content_digest if source.status == "ok" else f"error:{source.source_digest}:{source.error}"


class _ConverterLog(logging.Handler):
    """Collects what converters log at WARNING and above (tf2onnx, tensorflowjs, TensorFlow's Python
    logging) and what they print to stdout during one export: the evidence kept with the artifact.
    Printed lines never reach the terminal, where they would break the verdict table."""

    def __init__(self, limit: int = 60):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.limit = limit

        self.printed = io.StringIO()  # what converters print() (tensorflowjs does) instead of logging

    def keep_printed(self) -> None:
        for line in self.printed.getvalue().splitlines():
            if line.strip() and len(self.lines) < self.limit:
                self.lines.append(f"stdout: {line.strip()}")

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < self.limit:
            try:
                self.lines.append(f"{record.name}: {record.levelname}: {record.getMessage()}")
            except Exception:  # a record that cannot format itself is not evidence
                pass

    def __enter__(self) -> _ConverterLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)
        self.keep_printed()


class FormatLimit(Exception):
    """The format cannot hold what the model needs (its assets): the case is `unsupported`, with the
    reason, before any converter runs."""


def _assets(source: Artifact) -> list[str]:
    folder = source.model_path / "assets"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


class _SourceFailed(Exception):
    """The artifact this one is converted from failed: the failure is the source's, stage and culprit too."""


HARNESS_DIR = Path(__file__).resolve().parents[1]


def _raised_in(e: BaseException, fn) -> bool:
    """Whether the traceback of `e` passes through `fn` (the fixture's or user's model builder)."""
    code = getattr(fn, "__code__", None)
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _record_failure(art: Artifact, e: BaseException, fixture: Fixture) -> None:
    """Status, whole message, stage and culprit of a failed export, with the traceback as evidence:
    a ConverterFault from validation is the converter's (or the environment's) at stage `validate`;
    an exception raised while the model is built is the model's; one raised in our own code is the harness's; an OSError is the environment's (and is
    retried next time); anything else raised inside a converter is the converter's."""
    from harness.export.validate import ConverterFault

    art.status = "error"
    art.inputs, art.outputs = [], []
    art.extra["traceback"] = traceback.format_exc()
    if isinstance(e, _SourceFailed):
        art.error = str(e)
        return
    if isinstance(e, FormatLimit):
        art.error = str(e)
        art.extra.update(stage="export", culprit="converter", unsupported=True)
        return
    if isinstance(e, ConverterFault):
        art.error = e.summary + (f"\n{e.detail}" if e.detail and e.detail != e.summary else "")
        art.extra.update(stage="validate", culprit=getattr(e, "culprit", "converter"))
        if e.op:
            art.extra["op"] = e.op
        return
    art.error = f"{type(e).__name__}: {e}"
    frames = traceback.extract_tb(e.__traceback__)
    last = Path(frames[-1].filename).resolve() if frames else None
    if isinstance(e, (OSError, MemoryError)):
        art.extra.update(stage="export", culprit="environment", transient=True)
    elif _raised_in(e, fixture.build):
        art.extra.update(stage="export", culprit="model")  # building (or loading) the model itself failed
    elif last is not None and HARNESS_DIR in last.parents:
        art.extra.update(stage="export", culprit="harness")
    else:
        art.extra.update(stage="export", culprit="converter")


def signature_variant(fx: Fixture, saved_model: Path, signature: str, tag: str) -> Fixture:
    """The fixture `fx` run through another signature (and tag set) of its SavedModel `saved_model`:
    inputs and outputs read from that signature, inputs from the fixture's generator for it or from its
    signature, the fixture's oracle for it if it has one. Named `<fixture>.<signature>` (with the tag
    set, `+`-joined, when it is not the fixture's)."""
    from harness.export.common import read_signature, tag_set  # TensorFlow's protos: imported when asked

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
        outputs=tuple(s.name for s in outs), build=lambda: saved_model, generate=generate or generator_for(inputs),
        generate_alt=None if generate else generator_for(inputs, alt=True), oracle=fx.signature_oracles.get(signature),
        classifier_outputs=tuple(o for o in fx.classifier_outputs if o in {s.name for s in outs}), signature=signature, tag=tag,
        source_digest=digest, extra_formats=(), signature_generators={}, signature_oracles={},
    )


def signature_fixtures(names: list[str] | None, signature: str | None, tag: str | None) -> dict[str, Fixture]:
    """The named fixtures run through another signature and/or tag set of their SavedModel (`harness run
    --signature/--tag`): each fixture's SavedModel is exported (or found in the cache) to read it."""
    from harness.fixtures import get_fixture

    if not names:
        raise HarnessError("--signature and --tag apply to named fixtures: expected --fixtures (e.g. -f tf1_flat --signature classify)")
    exporter = Exporter()
    out = {}
    for name in names:
        fx = get_fixture(name)
        saved = exporter.get(fx, "savedmodel")
        if saved.status != "ok":
            raise HarnessError(f"cannot read the signatures of {name}: its SavedModel export failed ({saved.error_summary or saved.error})")
        variant = signature_variant(fx, saved.model_path, signature or fx.signature, tag or fx.tag)
        out[variant.name] = variant
    return out
