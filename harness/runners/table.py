"""The table of runtimes: how each worker starts, which formats it takes, and whether it can run here.

Availability is decided without starting a worker or importing a framework (package metadata, files
on disk, one request on the Docker socket), so `harness doctor` stays fast."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from harness import builds as project_builds
from harness.availability import Availability
from harness.builds import Build
from harness.errors import HarnessError, unknown

REPO = Path(__file__).resolve().parents[2]
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
DOCKER_SOCKET = Path(os.environ.get("HARNESS_DOCKER_SOCKET", "/run/harness-docker/docker.sock"))
GO_IMAGE = os.environ.get("HARNESS_GO_IMAGE", "harness-go-worker:latest")



@dataclass(frozen=True)
class WorkerContext:
    """What a worker's command may depend on: the folders it must see (containers mount them). Held
    absolute, the scratch folder made: workers start in the repository, not where the harness was
    started, and a container or sandbox can only mount a folder that exists."""

    artifacts: Path
    scratch: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifacts", Path(self.artifacts).resolve())
        object.__setattr__(self, "scratch", Path(self.scratch).resolve())
        self.scratch.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Launch:
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cleanup: list[str] | None = None  # run after a kill (a container outlives its client)


@dataclass(frozen=True)
class Variant:
    """Another kernel back-end or configuration of a runtime on this machine, named `RUNTIME@NAME`
    (`tf@onednn-off`, `ort@noopt`): the base runtime's worker started with `env` added. A worker reads
    its variant's settings from that environment and reports what it really ran with in `info`.
    `missing` says why the variant cannot run here (None when it can): a library or device absent."""

    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    missing: Callable[[], str | None] | None = None
    fix: str = ""
    emulated: bool = False  # timings recorded but never compared or charted beside native ones
    # What `missing` names is beyond `make setup` on this machine — hardware it lacks (a GPU, bf16
    # arithmetic) or another build of the runtime: its cases are `unsupported` here, not skipped as an
    # install step would be, and `harness doctor --strict` does not count it.
    beyond_setup: bool = False
    # Another way to start the worker (the arm64 root under emulation) instead of the base runtime's
    # command: given the worker folders, the command line. Added for variants that run elsewhere than
    # this interpreter; the environment still applies.
    command: Callable[[WorkerContext], list[str]] | None = None
    precision: str | None = None  # what the variant computes in, where not the base runtime's (openvino@bf16)


def shade(colour: str, name: str) -> str:
    """A variant's or build's colour: its base runtime's, lighter or darker by an amount its name picks,
    so it keeps its family's hue and stays apart from the base on a chart, run after run."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
        return colour
    step = 0.12 + sum((i + 1) * ord(c) for i, c in enumerate(name)) % 9 * 0.06  # 0.12 .. 0.60
    toward = 255 if sum(int(colour[i:i + 2], 16) for i in (1, 3, 5)) < 384 else 0  # a dark colour gets lighter
    return "#" + "".join(f"{round(c + (toward - c) * step):02x}" for c in (int(colour[i:i + 2], 16) for i in (1, 3, 5)))


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    language: str
    formats: tuple[str, ...]
    description: str
    devices: tuple[str, ...] = ("cpu",)
    # In CI (CI=true) an unavailable runtime that is required on this machine kind fails its cases
    # instead of skipping them (make setup and .ci/run install every one of them here).
    required_in_ci: bool = True
    variants: tuple[Variant, ...] = ()  # what `RUNTIME@NAME` may name on this runtime
    # Set on a qualified runtime (`resolve("ort@noopt")`): the runtime it derives from, the variant it
    # runs, and the environment its worker gets on top of the base's.
    base: str | None = None
    variant: Variant | None = None
    build: Build | None = None  # `RUNTIME@BUILD`: another version, in its own environment (harness/builds.py)
    # The kind of build this runtime takes (harness/builds.py KINDS), or None when it cannot take one.
    build_kind: str | None = None
    # How reports show it, recorded with each run (run.json `runtimes`), so a report reads them from the
    # store: the terminal's column code (five characters at most: eleven columns fit 100 columns) and the
    # colour of its series on every chart. A variant or build derives both from its base entry.
    code: str = ""
    colour: str = ""
    container: bool = False  # its worker runs in a container, a sandbox of its own (harness/sandbox.py)
    precision: str = "float32"  # what it computes in unless its worker says otherwise (info.precision)
    # The protocol kit (tests/test_protocol_kit.py) runs this entry's worker: one entry for each worker
    # program (RuntimeSpec.program) at least, so every language and binding is checked on the protocol.
    protocol_kit: bool = False

    @property
    def program(self) -> str:
        """The worker program this entry starts (entries of one program share the protocol's code)."""
        return self.name

    @property
    def root(self) -> str:
        """The table entry this runtime derives from (itself for a base runtime)."""
        return self.base or self.name

    @property
    def env(self) -> dict[str, str]:
        return dict(self.variant.env) if self.variant else {}

    @property
    def emulated(self) -> bool:
        return bool(self.variant and self.variant.emulated)

    def qualified(self, variant: Variant) -> RuntimeSpec:
        """This runtime running `variant`: same worker, formats and tolerances; its own name and environment."""
        return replace(self, name=f"{self.name}@{variant.name}", base=self.name, variant=variant, required_in_ci=False,
                       code=f"{self.code}@{variant.name}", colour=shade(self.colour, variant.name),
                       precision=variant.precision or self.precision, protocol_kit=False)

    def built(self, build: Build) -> RuntimeSpec:
        """This runtime as another build: the same worker code started in the build's environment."""
        label = build.name.partition("@")[2]
        return replace(self, name=build.name, base=self.name, build=build, required_in_ci=False,
                       code=f"{self.code}@{label}", colour=shade(self.colour, label), protocol_kit=False)

    @property
    def legend(self) -> dict[str, str]:
        """What a report shows of the runtime, recorded in run.json's `runtimes` beside its versions."""
        return {"code": self.code, "colour": self.colour}

    def prepare(self) -> Availability | None:
        """Make what the runtime needs before its first worker starts: a build's environment, rebuilt
        from its recorded lock when missing from the cache. None when ready; else why not."""
        if self.build is None or self.build.ready:
            return None
        try:
            object.__setattr__(self, "build", project_builds.ensure(self.build))
        except HarnessError as e:
            return Availability(False, project_builds.describe(self.build), str(e), f"harness build add {self.build.name} {' '.join(self.build.specs)}")
        return None

    def _build_missing(self) -> Availability | None:
        if self.build is None:
            return None
        if not self.build.lock:
            return Availability(False, None, f"build {self.build.name} has no lock in {project_builds.builds_file()}",
                                f"harness build add {self.build.name} {' '.join(self.build.specs)}")
        return None

    def launch(self, ctx: WorkerContext) -> Launch:
        """How to start the worker: the base runtime's command, a variant's, or a build's (its interpreter,
        node_modules or binary and libraries, harness/builds.py)."""
        raise NotImplementedError

    def installed(self) -> Availability:
        """Whether the runtime's own toolchain is here (each kind of runtime says how it knows)."""
        raise NotImplementedError

    def availability(self) -> Availability:
        """installed(), then whatever a variant needs on this machine (a library, a device, an emulator)."""
        a = self.installed()
        if not a.ok or self.variant is None or self.variant.missing is None:
            return a
        why = self.variant.missing()
        return a if why is None else Availability(False, a.version, why, self.variant.fix)


@dataclass(frozen=True)
class PythonRuntime(RuntimeSpec):
    python_module: str = ""  # worker module, `python -m <module>`
    import_name: str = ""  # the framework module the worker imports
    dist: str = ""  # the distribution that provides it

    @property
    def program(self) -> str:
        return self.python_module

    def launch(self, ctx: WorkerContext) -> Launch:
        if self.variant is not None and self.variant.command is not None:
            return Launch(self.variant.command(ctx))
        if self.build is not None:
            self.prepare()
            # PYTHONPATH only the checkout (the sandbox binds runners/ from it); nothing of the harness's venv.
            return Launch(project_builds.python_command(self.build, self.python_module), env={"PYTHONPATH": str(REPO)})
        return Launch([sys.executable, "-m", self.python_module])

    def installed(self) -> Availability:
        fix = "make setup   (installs the pinned requirements into .venv)"
        if self.build is not None:
            missing = self._build_missing()
            if missing:
                return missing
            # Told from the definition; an environment missing from the cache is rebuilt from the lock at first use.
            return Availability(True, self.build.versions.get(self.dist) or project_builds.describe(self.build))
        try:
            version = metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            return Availability(False, None, f"Python package {self.dist} is not installed in {sys.prefix}", fix)
        if importlib.util.find_spec(self.import_name.split(".")[0]) is None:
            return Availability(False, version, f"module {self.import_name} cannot be found", fix)
        if importlib.util.find_spec(self.python_module) is None:
            return Availability(False, version, f"worker module {self.python_module} is missing", "pip install -e .")
        return Availability(True, version)


def _prepend(folder: str) -> str:
    return os.pathsep.join([folder, *[p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]])


def _missing(paths: list[str]) -> str | None:
    """The first required path (glob patterns allowed) that does not exist."""
    for pattern in paths:
        if not glob.glob(pattern):
            return pattern
    return None


@dataclass(frozen=True)
class NodeRuntime(RuntimeSpec):
    requires: tuple[str, ...] = ()  # files relative to js/node_modules
    package: str = ""  # the npm package whose version is reported

    @property
    def program(self) -> str:
        return "js/src/worker.js"

    def launch(self, ctx: WorkerContext) -> Launch:
        if self.build is not None:
            self.prepare()
            view = project_builds.node_view(self.build)
            # The worker's imports resolve beside the link, in the build's node_modules, not in js/.
            # LD_LIBRARY_PATH names the build's node_modules so a sandbox binds it (harness/sandbox.py binds its
            # folders); it holds no shared library itself, so nothing else loads from it.
            return Launch([shutil.which("node") or "node", "--preserve-symlinks", "--preserve-symlinks-main", str(view / "src" / "worker.js"),
                           "--runtime", self.root], env={"LD_LIBRARY_PATH": _prepend(str(self.build.root / "node_modules"))})
        return Launch([shutil.which("node") or "node", str(REPO / "js" / "src" / "worker.js"), "--runtime", self.root])

    def installed(self) -> Availability:
        fix = "make setup   (runs js/setup.sh: npm ci --ignore-scripts and the tfjs-node build against the wheel)"
        if not shutil.which("node"):
            return Availability(False, None, "node is not on PATH", "install Node.js 20")
        modules = REPO / "js" / "node_modules"
        if self.build is not None:
            missing = self._build_missing()
            if missing:
                return missing
            if not self.build.ready:  # rebuilt from the lock at first use; its files are checked then
                return Availability(True, self.build.versions.get(self.package) or project_builds.describe(self.build))
            modules = self.build.root / "node_modules"
            fix = f"harness build add {self.build.name} {' '.join(self.build.specs)}   (with every package the runtime loads)"
        gone = _missing([str(modules / r) for r in self.requires])
        if gone:
            return Availability(False, None, f"{gone} is missing", fix)
        return Availability(True, _npm_version(modules / self.package))


def _npm_version(folder: Path) -> str | None:
    import json

    try:
        return json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


GO_BUILD = Path(os.environ.get("HARNESS_GO_BUILD") or REPO / "go" / ".build")  # go/build.sh's output (moved by tests)
TF_LIBS = [str(VENV_SITE / "tensorflow" / "libtensorflow_cc.so.2"), str(VENV_SITE / "tensorflow" / "libtensorflow_framework.so.2")]
ORT_LIB = [str(VENV_SITE / "onnxruntime" / "capi" / "libonnxruntime.so.1.*")]


@dataclass(frozen=True)
class GoRuntime(RuntimeSpec):
    binary: str = "harness-worker"
    libraries: tuple[str, ...] = ()
    module: str = "github.com/galeone/tfgo"  # the Go binding whose version is reported

    @property
    def program(self) -> str:
        return self.binary

    def launch(self, ctx: WorkerContext) -> Launch:
        if self.build is not None and self.build.kind == "go-tfgo":
            self.prepare()
            binary = project_builds.go_worker(self.build)  # compiled against the build's TensorFlow at first use
            tf = str(next(iter(sorted(self.build.root.glob("lib/python*/site-packages/tensorflow")))))
            return Launch([str(binary), "--runtime", self.root], env={"LD_LIBRARY_PATH": _prepend(tf)})  # bound by a sandbox
        if self.build is not None:
            self.prepare()
            lib = self.build.ort_lib
            # The worker opens libonnxruntime at start: the build's, not the one build.sh recorded (its folder
            # on LD_LIBRARY_PATH too, which a sandbox binds).
            return Launch([str(GO_BUILD / self.binary), "--runtime", self.root],
                          env={"HARNESS_ORT_LIB": str(lib) if lib else "", **({"LD_LIBRARY_PATH": _prepend(str(lib.parent))} if lib else {})})
        return Launch([str(GO_BUILD / self.binary), "--runtime", self.root])

    def installed(self) -> Availability:
        if not shutil.which("go") and not (GO_BUILD / self.binary).exists():
            return Availability(False, None, "go is not on PATH and the worker is not built", "install Go, then make setup")
        if self.build is not None and self.build.kind == "go-tfgo":
            if not shutil.which("go"):
                return Availability(False, None, "go is not on PATH (a go-tfgo build compiles the worker against its TensorFlow)", "install Go")
            return self._build_missing() or Availability(True, f"{_go_version(self.module)}, TensorFlow C library {self.build.versions.get('tensorflow-cpu')}")
        if self.build is not None:
            missing = self._build_missing() or (None if (GO_BUILD / self.binary).exists() else
                                                Availability(False, None, f"{GO_BUILD / self.binary} is missing", "make setup   (runs go/build.sh)"))
            return missing or Availability(True, f"{_go_version(self.module)}, libonnxruntime {self.build.versions.get('onnxruntime')}")
        gone = _missing([str(GO_BUILD / self.binary), *self.libraries])
        if gone:
            return Availability(False, None, f"{gone} is missing", "make setup   (runs go/build.sh)")
        stale = _stale_link(self.libraries)
        if stale:
            return Availability(False, None, stale, "make setup   (go/build.sh links the worker again against the installed wheels)")
        return Availability(True, _go_version(self.module))


def _stale_link(libraries: tuple[str, ...]) -> str | None:
    """Whether the Go worker was built for a libonnxruntime that is no longer the wheel's: go/build.sh
    records the library it baked in (go/.build/config); after an onnxruntime upgrade that file is gone
    (or another is the wheel's) and the worker fails at start, whatever doctor would otherwise say."""
    if ORT_LIB[0] not in libraries:
        return None
    try:
        config = (GO_BUILD / "config").read_text()
    except OSError:
        return None
    lib = dict(part.split("=", 1) for part in config.split() if "=" in part).get("ort")
    if not lib:
        return None
    now = sorted(glob.glob(ORT_LIB[0]))
    holds = f" (the onnxruntime wheel now holds {Path(now[-1]).name})" if now else ""
    if not Path(lib).exists():
        return f"the worker was built for {lib}, which is gone{holds}"
    if now and Path(now[-1]).resolve() != Path(lib).resolve():
        return f"the worker was built for {lib}{holds}"
    return None


def _go_version(module: str) -> str | None:
    try:
        for line in (REPO / "go" / "go.mod").read_text().splitlines():
            if line.strip().startswith(module + " "):
                return module.split("/")[-1] + " " + line.split()[-1]
    except OSError:
        pass
    return None


def _docker_get(path: str) -> int | None:
    """Status of one HTTP GET on the engine's socket (about a millisecond), or None when no engine answers."""
    if not DOCKER_SOCKET.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(DOCKER_SOCKET))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            head = s.recv(64).decode(errors="replace")
        return int(head.split()[1])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class DockerRuntime(GoRuntime):
    """The Go worker inside a container, a sandbox of its own (go/docker.sh run): uid 65534, every
    capability dropped, no new privileges, read-only root, no network, memory and pid limits;
    artifacts mounted read-only, scratch read-write (given to uid 65534 here). HARNESS_SANDBOX_MEMORY
    and HARNESS_SANDBOX_PROCS, when set, are its limits too."""

    inner: str = "go-tfgo"
    container: bool = True

    def launch(self, ctx: WorkerContext) -> Launch:
        from harness.sandbox import Limits, Sandbox

        name = f"harness-{self.inner}-{os.getpid()}-{secrets.token_hex(3)}"
        script = str(REPO / "go" / "docker.sh")
        Sandbox("docker").prepare_docker(ctx.scratch)
        env = {"HARNESS_CONTAINER_NAME": name, "DOCKER_HOST": f"unix://{DOCKER_SOCKET}"}
        if os.environ.get("HARNESS_SANDBOX_MEMORY") or os.environ.get("HARNESS_SANDBOX_PROCS"):
            limits = Limits.from_env()
            env.update(HARNESS_DOCKER_MEMORY=f"{limits.memory_bytes // (1 << 20)}m", HARNESS_DOCKER_PIDS=str(limits.processes))
        return Launch(["bash", script, "run", self.inner, str(ctx.artifacts), str(ctx.scratch)], env=env,
                      cleanup=["bash", script, "kill", name])

    def installed(self) -> Availability:
        fix = "make docker   (installs docker.io, starts dockerd, builds the base and worker images; .ci/run does it)"
        if not Path("/usr/bin/docker").exists() and not shutil.which("docker"):
            return Availability(False, None, "no Docker client is installed", fix)
        if _docker_get("/_ping") != 200:
            return Availability(False, None, f"no Docker engine answers on {DOCKER_SOCKET}", fix)
        if _docker_get(f"/images/{GO_IMAGE}/json") != 200:
            return Availability(False, None, f"image {GO_IMAGE} is not built", fix)
        return Availability(True, GO_IMAGE)


# --- what variants need on this machine ------------------------------------------------------------

def _features() -> set[str]:
    from harness.machine import identify

    return set(identify()["features"])


def _x86_only() -> str | None:
    import platform

    return None if platform.machine() in ("x86_64", "AMD64") else f"oneDNN's x86 kernels and ISA cap: this machine is {platform.machine()}"


def _cpu_lacks(precision: str) -> Callable[[], str | None]:
    """OpenVINO's CPU plugin honours a bf16 hint with AVX-512 (avx512_core) or AMX, an f16 hint with
    AVX512-FP16 or AMX-FP16; elsewhere it computes in f32 (the worker refuses that too, at load)."""
    needs = {"bf16": ({"avx512bw", "avx512vl", "avx512dq"}, {"amx_bf16"}), "f16": ({"avx512_fp16"}, {"amx_fp16"})}[precision]

    def missing() -> str | None:
        have = _features()
        if needs[0] <= have or needs[1] <= have:
            return None
        from harness.machine import identify

        return (f"this CPU ({identify()['cpu']}; {', '.join(sorted(have)) or 'no listed features'}) has neither "
                f"{' + '.join(sorted(needs[0]))} nor {' + '.join(sorted(needs[1]))}: OpenVINO would compute in f32, not {precision}")
    return missing


def _gpu_missing() -> str | None:
    from harness.machine import identify

    if any(a["vendor"] == "nvidia" for a in identify()["accelerators"]):
        return None
    return "no NVIDIA GPU here (no /proc/driver/nvidia, no NVIDIA render node)"


_ORT_PROVIDERS: list[str] = []


def _ort_providers() -> list[str]:
    """The execution providers of the installed onnxruntime build, asked once (a subprocess: availability
    never imports a framework into the harness)."""
    if not _ORT_PROVIDERS:
        import subprocess

        try:
            out = subprocess.run([sys.executable, "-c", "import onnxruntime; print(','.join(onnxruntime.get_available_providers()))"],
                                 capture_output=True, text=True, timeout=60)
            _ORT_PROVIDERS.extend(out.stdout.strip().split(",") if out.returncode == 0 else ["?"])
        except (OSError, subprocess.SubprocessError):
            _ORT_PROVIDERS.append("?")
    return _ORT_PROVIDERS


def _ort_provider_missing(provider: str, gpu: bool = False) -> Callable[[], str | None]:
    def missing() -> str | None:
        why = [w for w in [_gpu_missing() if gpu else None] if w]
        have = _ort_providers()
        if provider not in have:
            why.append(f"the onnxruntime build here has {', '.join(have)}, not {provider}")
        return "; ".join(why) or None
    return missing


def _tf_gpu_missing() -> str | None:
    why = [w for w in [_gpu_missing()] if w]
    try:
        metadata.version("tensorflow-cpu")
        why.append("tensorflow-cpu is installed: it has no CUDA kernels (a tensorflow[and-cuda] build has)")
    except metadata.PackageNotFoundError:
        pass
    return "; ".join(why) or None


ARM64 = REPO / "arm64" / "arm64.sh"


def _arm64_missing() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["bash", str(ARM64), "check"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{ARM64} check could not run: {e}"
    return None if out.returncode == 0 else (out.stdout.strip() or out.stderr.strip() or "the arm64 root is not ready")


def _arm64_variant(module: str) -> Variant:
    """The runtime's aarch64 wheel in the arm64 Debian root, run through qemu-user (arm64/arm64.sh)."""
    return Variant("arm64", "the aarch64 wheel in an arm64 Debian root under qemu-user emulation (arm64/arm64.sh): "
                            "real Arm kernels' numbers, the emulator's timings", missing=_arm64_missing, fix="make arm64   (about 10 minutes, once)",
                   emulated=True, command=lambda ctx: ["bash", str(ARM64), "run", module, str(ctx.artifacts), str(ctx.scratch)])


RUNTIMES: dict[str, RuntimeSpec] = {
    r.name: r
    for r in [
        PythonRuntime("tf", "python", ("savedmodel", "keras", "h5", "frozen_graph", "checkpoint"),
                      "Python TensorFlow: SavedModel signatures, Keras .keras/.h5, frozen graphs, checkpoints restored into the fixture's code", code="tf", colour="#1f77b4", protocol_kit=True,
                      python_module="harness_runners.tf", import_name="tensorflow", dist="tensorflow-cpu", build_kind="python",
                      variants=(Variant("onednn-off", "oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0): TensorFlow's own Eigen kernels",
                                        env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
                                Variant("onednn", "oneDNN kernels forced on (TF_ENABLE_ONEDNN_OPTS=1): TF's default only on CPUs with "
                                        "AVX512_VNNI, AVX512_BF16 or AMX", env={"TF_ENABLE_ONEDNN_OPTS": "1"}, missing=_x86_only, beyond_setup=True),
                                Variant("avx2", "oneDNN on, capped at AVX2 (TF_ENABLE_ONEDNN_OPTS=1, ONEDNN_MAX_CPU_ISA=AVX2): what a "
                                        "machine without AVX-512 or AMX runs", env={"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
                                        missing=_x86_only, beyond_setup=True),
                                Variant("gpu", "TensorFlow on an NVIDIA GPU (a tensorflow[and-cuda] build)", missing=_tf_gpu_missing,
                                        fix="an NVIDIA GPU and a tensorflow[and-cuda] build (harness build add)", beyond_setup=True))),
        PythonRuntime("litert", "python", ("tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_select"),
                      "LiteRT (ai_edge_litert) signature runner", code="lrt", colour="#ff7f0e", protocol_kit=True,
                      python_module="harness_runners.litert", import_name="ai_edge_litert", dist="ai-edge-litert", build_kind="python",
                      variants=(Variant("reference", "the builtin kernels without the default XNNPACK delegate (op resolver "
                                        "BUILTIN_WITHOUT_DEFAULT_DELEGATES)", env={"HARNESS_LITERT_OP_RESOLVER": "builtin-without-default-delegates"}),
                                Variant("builtin-ref", "TFLite's reference kernels (op resolver BUILTIN_REF): what inference_diff compares a delegate to",
                                        env={"HARNESS_LITERT_OP_RESOLVER": "builtin-ref"}),
                                _arm64_variant("litert"))),
        PythonRuntime("ort", "python", ("onnx13", "onnx18"), "ONNX Runtime, CPU execution provider", code="ort", colour="#2ca02c", protocol_kit=True,
                      python_module="harness_runners.ort", import_name="onnxruntime", dist="onnxruntime", build_kind="python",
                      variants=(Variant("noopt", "every graph optimisation off (ORT_DISABLE_ALL): the kernels run the graph as exported",
                                        env={"HARNESS_ORT_GRAPH_OPTIMIZATION": "disabled"}),
                                Variant("xnnpack", "the XNNPACK execution provider (where the onnxruntime build has it)",
                                        env={"HARNESS_ORT_PROVIDERS": "XnnpackExecutionProvider"}, missing=_ort_provider_missing("XnnpackExecutionProvider"),
                                        fix="an onnxruntime build with XNNPACK (harness build add)", beyond_setup=True),
                                Variant("cuda", "the CUDA execution provider (an onnxruntime-gpu build, an NVIDIA GPU)",
                                        env={"HARNESS_ORT_PROVIDERS": "CUDAExecutionProvider"}, beyond_setup=True,
                                        missing=_ort_provider_missing("CUDAExecutionProvider", gpu=True),
                                        fix="an NVIDIA GPU and an onnxruntime-gpu build (harness build add)"),
                                Variant("tensorrt", "the TensorRT execution provider (an onnxruntime-gpu build with TensorRT, an NVIDIA GPU)",
                                        env={"HARNESS_ORT_PROVIDERS": "TensorrtExecutionProvider,CUDAExecutionProvider"}, beyond_setup=True,
                                        missing=_ort_provider_missing("TensorrtExecutionProvider", gpu=True),
                                        fix="an NVIDIA GPU, TensorRT and an onnxruntime-gpu build (harness build add)"),
                                _arm64_variant("ort"))),
        PythonRuntime("openvino", "python", ("onnx13", "onnx18", "tflite", "tflite_fp16", "savedmodel"),
                      "OpenVINO CPU plugin, reading ONNX, TFLite and SavedModel files itself", code="ov", colour="#800000", protocol_kit=True,
                      python_module="harness_runners.openvino", import_name="openvino", dist="openvino", build_kind="python",
                      variants=(Variant("bf16", "INFERENCE_PRECISION_HINT bf16: computed in bfloat16, judged as bfloat16",
                                        env={"HARNESS_OPENVINO_PRECISION": "bf16"}, missing=_cpu_lacks("bf16"), beyond_setup=True, precision="bfloat16",
                                        fix="a CPU with AVX-512 (avx512bw, avx512vl, avx512dq) or AMX"),
                                Variant("f16", "INFERENCE_PRECISION_HINT f16: computed in float16, judged as float16",
                                        env={"HARNESS_OPENVINO_PRECISION": "f16"}, missing=_cpu_lacks("f16"), beyond_setup=True, precision="float16",
                                        fix="a CPU with AVX512-FP16 or AMX-FP16 (Sapphire Rapids or newer)"))),
        NodeRuntime("node-tfjs-cpu", "node", ("tfjs_graph", "tfjs_layers"), "TF.js (@tensorflow/tfjs) cpu backend", code="n.cpu", colour="#d62728", protocol_kit=True,
                    requires=("@tensorflow/tfjs/package.json",), package="@tensorflow/tfjs", build_kind="node"),
        NodeRuntime("node-tfjs-wasm", "node", ("tfjs_graph", "tfjs_layers"), "TF.js wasm backend", code="n.wsm", colour="#9467bd",
                    requires=("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",), package="@tensorflow/tfjs-backend-wasm", build_kind="node"),
        NodeRuntime("node-tfjs-node", "node", ("tfjs_graph", "tfjs_layers", "savedmodel"), "TF.js tfjs-node (native TensorFlow of the wheel)", code="n.tfn", colour="#8c564b",
                    requires=("@tensorflow/tfjs-node/lib/napi-v*/tfjs_binding.node", "@tensorflow/tfjs-node/deps/lib/libtensorflow_cc.so.2",
                              "@tensorflow/tfjs-node/deps/lib/libtensorflow_framework.so.2"), package="@tensorflow/tfjs-node"),
        NodeRuntime("node-ort", "node", ("onnx13", "onnx18"), "onnxruntime-node", code="n.ort", colour="#e377c2", protocol_kit=True,
                    requires=("onnxruntime-node/bin/napi-v*/linux/x64/onnxruntime_binding.node",), package="onnxruntime-node", build_kind="node"),
        NodeRuntime("node-ort-web", "node", ("onnx13", "onnx18"), "onnxruntime-web (wasm) in Node", code="n.web", colour="#7f7f7f",
                    requires=("onnxruntime-web/dist/ort.node.min.mjs", "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"), package="onnxruntime-web", build_kind="node"),
        GoRuntime("go-tfgo", "go", ("savedmodel",), "Go tfgo on the TensorFlow C library of the wheel", code="go.tf", colour="#bcbd22", protocol_kit=True,
                  binary="harness-worker", libraries=tuple(TF_LIBS), build_kind="go-tfgo"),
        GoRuntime("go-ort", "go", ("onnx13", "onnx18"), "Go onnxruntime_go on the wheel's libonnxruntime", code="go.or", colour="#17becf", protocol_kit=True,
                  binary="harness-worker-ort", libraries=tuple(ORT_LIB), module="github.com/yalue/onnxruntime_go", build_kind="go-ort"),
        DockerRuntime("go-tfgo@docker", "go", ("savedmodel",), "the go-tfgo worker in a Docker container", code="go.dk", colour="#393b79",
                      binary="harness-worker", inner="go-tfgo"),
    ]
}


def in_table_order(names) -> list[str]:
    """Runtime names, once each, in the table's order (grouped by language); unknown names last."""
    order = list(RUNTIMES)

    def key(name: str) -> tuple[int, str]:
        root = name if name in order else name.partition("@")[0]  # a variant sorts after its runtime
        return (order.index(root) if root in order else len(order), name)

    return sorted(dict.fromkeys(names), key=key)


def check_runtime(name: str) -> RuntimeSpec:
    """The runtime a name stands for: an entry of the table, or `RUNTIME@NAME` — a variant declared on
    that entry (another back-end here), else a build of it defined in the project (another version, in
    its own environment: harness/builds.py). One line naming what is known when none."""
    if name in RUNTIMES:
        return RUNTIMES[name]
    base, at, qualifier = name.partition("@")
    if not at or base not in RUNTIMES:
        raise unknown("runtime", name, list(RUNTIMES))
    spec = RUNTIMES[base]
    for variant in spec.variants:
        if variant.name == qualifier:
            return spec.qualified(variant)
    build = project_builds.find(name)
    if build is not None:
        if build.kind != spec.build_kind:
            raise HarnessError(f"build {name} in {project_builds.builds_file()} is a {build.kind} build: runtime {base} takes "
                               + (f"{spec.build_kind} builds" if spec.build_kind else "no builds"))
        return spec.built(build)
    known = [v.name for v in spec.variants] + [b.label for b in project_builds.of_target(base)]
    raise HarnessError(f"unknown variant or build {qualifier!r} of runtime {base}: "
                       + (f"expected one of {', '.join(known)}" if known else
                          f"{base} has none (harness doctor lists every RUNTIME@NAME; harness build add {name} SPEC... makes a build)"))


def every_runtime() -> list[RuntimeSpec]:
    """Every runtime the table can name: each entry, then its variants and the project's builds of it
    (harness doctor lists them all)."""
    out = []
    for spec in RUNTIMES.values():
        out += [spec, *(spec.qualified(v) for v in spec.variants)]
        out += [spec.built(b) for b in project_builds.of_target(spec.name) if b.kind == spec.build_kind]
    return out


# --- browser runtimes (headless Chromium driven by js/browser/worker.js) --------------------------------

def _chromium() -> str:
    return os.environ.get("HARNESS_CHROMIUM") or "/usr/bin/chromium"


@dataclass(frozen=True)
class BrowserRuntime(NodeRuntime):
    """A TF.js or ONNX Runtime Web backend in one long-lived headless Chromium page, driven by the
    Node worker js/browser/worker.js through playwright-core (Debian's Chromium, no browser download).
    Availability is told from files (Node, the npm packages, the Chromium binary); whether the browser
    has a WebGPU adapter is found by the worker, which answers `unsupported` with the reason at load,
    and by `harness doctor`, which opens the browser once (harness/browser.py)."""

    # With HARNESS_MATRIX=quick (`make test`), only these formats at each fixture's first batch
    # (harness.cases.matrix); everything in a full run (harness run, nightly, a named runtime).
    quick_formats: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return "js/browser/worker.js"

    def launch(self, ctx: WorkerContext) -> Launch:
        return Launch([shutil.which("node") or "node", str(REPO / "js" / "browser" / "worker.js"), "--runtime", self.name])

    def installed(self) -> Availability:
        base = NodeRuntime.installed(self)
        if not base.ok:
            return base
        chromium = _chromium()
        if not os.access(chromium, os.X_OK):
            return Availability(False, None, f"Chromium is not installed at {chromium}",
                                "make browser   (apt-get install chromium; or set HARNESS_CHROMIUM to a Chromium binary)")
        return base


def _browser_gpu_missing() -> str | None:
    from harness.machine import identify

    gpus = identify()["accelerators"]
    where = "no GPU here (no NVIDIA driver, no /dev/dri render node)" if not gpus else f"GPU {gpus[0]['name']} ({gpus[0]['driver']}) is here"
    # Never claimed: the page would run on SwiftShader whatever the variant says.
    return f"{where}; the browser worker launches Chromium on SwiftShader only (js/browser/chromium.js has no GPU launch yet)"


_BROWSER_GPU = (Variant("gpu", "WebGL/WebGPU on the machine's GPU instead of SwiftShader", missing=_browser_gpu_missing, beyond_setup=True,
                        fix="a machine with a GPU, and a GPU launch in js/browser/chromium.js"),)
_BROWSER_NEEDS = ("playwright-core/package.json", "serve-static/package.json")
_QUICK_TFJS = ("tfjs_graph", "tfjs_layers")
_QUICK_ORT = ("onnx18",)  # the runtime is the same for both opsets; the Node and Python ones cover onnx13
for _r in [
    BrowserRuntime("browser-tfjs-cpu", "browser", ("tfjs_graph", "tfjs_layers"), "TF.js cpu backend in headless Chromium", code="b.cpu", colour="#469990",
                   requires=(*_BROWSER_NEEDS, "@tensorflow/tfjs/dist/tf.js"), package="@tensorflow/tfjs", quick_formats=_QUICK_TFJS),
    BrowserRuntime("browser-tfjs-wasm", "browser", ("tfjs_graph", "tfjs_layers"), "TF.js wasm backend (SIMD, threads) in headless Chromium", code="b.wsm", colour="#e7ba52",
                   requires=(*_BROWSER_NEEDS, "@tensorflow/tfjs/dist/tf.js", "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.js",
                             "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm"), package="@tensorflow/tfjs-backend-wasm",
                   quick_formats=_QUICK_TFJS),
    BrowserRuntime("browser-tfjs-webgl", "browser", ("tfjs_graph", "tfjs_layers"), "TF.js webgl backend (WebGL2 on SwiftShader) in headless Chromium", code="b.gl", colour="#4363d8",
                   requires=(*_BROWSER_NEEDS, "@tensorflow/tfjs/dist/tf.js"), package="@tensorflow/tfjs", quick_formats=_QUICK_TFJS, variants=_BROWSER_GPU),
    BrowserRuntime("browser-tfjs-webgpu", "browser", ("tfjs_graph", "tfjs_layers"), "TF.js webgpu backend in headless Chromium (needs an adapter)", code="b.gpu", colour="#f032e6",
                   requires=(*_BROWSER_NEEDS, "@tensorflow/tfjs/dist/tf.js", "@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.js"),
                   package="@tensorflow/tfjs-backend-webgpu", quick_formats=_QUICK_TFJS, variants=_BROWSER_GPU),
    BrowserRuntime("browser-ort-wasm", "browser", ("onnx13", "onnx18"), "onnxruntime-web, wasm execution provider, in headless Chromium", code="b.ort", colour="#911eb4", protocol_kit=True,
                   requires=(*_BROWSER_NEEDS, "onnxruntime-web/dist/ort.js", "onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.wasm"),
                   package="onnxruntime-web", quick_formats=_QUICK_ORT),
    BrowserRuntime("browser-ort-webgpu", "browser", ("onnx13", "onnx18"), "onnxruntime-web, webgpu execution provider, in headless Chromium (needs an adapter)", code="b.ogp", colour="#000075",
                   requires=(*_BROWSER_NEEDS, "onnxruntime-web/dist/ort.js", "onnxruntime-web/dist/ort-wasm-simd-threaded.jsep.wasm"),
                   package="onnxruntime-web", quick_formats=_QUICK_ORT, variants=_BROWSER_GPU),
]:
    RUNTIMES[_r.name] = _r
