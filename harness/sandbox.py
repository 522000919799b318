"""Sandboxes for workers that run models from outside the project (docs/sandbox.md).

A SavedModel is a program: `tf.io.write_file` writes where it likes, `tf.io.read_file` reads where it
likes, and a `gs://` path makes TensorFlow open TCP connections (to the metadata server and to
storage.googleapis.com). So a model the harness did not write runs in a worker that cannot do harm:

- `bwrap` (bubblewrap, the default for `harness check`): the worker sees a minimal read-only file
  system (the system's /usr, a few files of /etc, the interpreters and libraries it runs on, the
  artifacts), a fresh /tmp of bounded size, and one writable folder, the run's scratch folder; its own
  network namespace (a loopback with nothing behind it), pid, ipc and uts namespaces; no capabilities
  and no new privileges; rlimits on memory (RLIMIT_DATA: an allocation past it fails cleanly and the
  runtime says so) and file size (RLIMIT_FSIZE); a process limit, as a pids cgroup of its own where
  the harness may make one (root; the kernel does not apply RLIMIT_NPROC to uid 0), else RLIMIT_NPROC.
  As root the worker keeps uid 0 without a single capability: it reads what root owns (the cache's
  folders are mode 0700) only where the sandbox shows it, and writes only its scratch folder and /tmp.
- `docker`: the runtimes that have a container (go-tfgo@docker, which always runs so) run as uid
  65534 with every capability dropped, no new privileges, a read-only root, no network, pid and memory
  limits; every other worker (the TF reference among them) in bwrap.
- `none`: the worker runs as the harness does (the harness's own fixtures: trusted, fastest).

The limits come from the environment (HARNESS_SANDBOX_MEMORY, HARNESS_SANDBOX_PROCS,
HARNESS_SANDBOX_FILESIZE, HARNESS_SANDBOX_TMP: sizes like 4G or 512M). This module is the mechanism and
knows no runtime: which sandbox can run here and which runtimes are a container already is
harness/runners/sandboxes.py's; what the sandbox costs, `harness selftest sandbox` (harness/fidelity.py)."""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.availability import Availability
from harness.errors import HarnessError

KINDS = ("bwrap", "docker", "none")

# Only these of /etc: the dynamic loader's cache, TLS certificates, time zone, user names, and what
# Chromium reads (the browser workers). Not the host's name, its network configuration, its secrets.
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates", "ca-certificates.conf",
       "localtime", "timezone", "nsswitch.conf", "passwd", "group", "chromium", "chromium.d", "fonts")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """`4G`, `512M`, `1048576` → bytes; anything else is a one-line error naming the variable."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise HarnessError(f"{what}={text!r} is not a size: expected a number of bytes or one like 512M, 4G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _memory_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # per process (RLIMIT_DATA); the container's memory limit for docker
    processes: int  # tasks (processes and threads): the worker's pids cgroup, else RLIMIT_NPROC; pids limit for docker
    file_bytes: int  # largest file a worker may write (RLIMIT_FSIZE)
    tmp_bytes: int  # size of the sandbox's fresh /tmp

    @classmethod
    def from_env(cls) -> Limits:
        env = os.environ
        memory = min(_memory_total() // 2, 16 << 30)
        procs = max(1024, 64 * (os.cpu_count() or 1))

        def size(name: str, default: int) -> int:
            return parse_size(env[name], name) if env.get(name) else default

        try:
            procs = int(env.get("HARNESS_SANDBOX_PROCS") or procs)
        except ValueError:
            raise HarnessError(f"HARNESS_SANDBOX_PROCS={env['HARNESS_SANDBOX_PROCS']!r} is not a count: expected an integer like 1024") from None
        return cls(size("HARNESS_SANDBOX_MEMORY", memory), procs, size("HARNESS_SANDBOX_FILESIZE", 2 << 30),
                   size("HARNESS_SANDBOX_TMP", 256 << 20))


DOCKER_UID = 65534  # the container's user (go/docker.sh run)
CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")


@functools.lru_cache(maxsize=1)
def pids_cgroup_root() -> tuple[Path | None, str]:
    """Where this harness may make a pids cgroup per sandboxed worker, and why not when it may not.
    cgroup v1 (a pids hierarchy) or v2 (the pids controller, below our own cgroup)."""
    if os.geteuid() != 0:
        return None, "not root: the process limit is RLIMIT_NPROC in the worker's user namespace"
    candidates = []
    if (CGROUP_V1_PIDS / "cgroup.procs").exists():
        candidates.append(CGROUP_V1_PIDS / "harness-sandbox")
    v2 = Path("/sys/fs/cgroup")
    if "pids" in _read(v2 / "cgroup.controllers").split():
        own = next((line.split("::", 1)[1] for line in _read(Path("/proc/self/cgroup")).splitlines() if line.startswith("0::")), "/")
        candidates.append(v2 / own.strip("/") / "harness-sandbox")
    why = "no pids cgroup controller is mounted"
    for base in candidates:
        try:
            base.mkdir(exist_ok=True)
            if base.parent != CGROUP_V1_PIDS:  # v2: hand the pids controller down to our groups
                (base / "cgroup.subtree_control").write_text("+pids")
            _sweep(base)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            (probe / "pids.max").write_text("1")
            probe.rmdir()
            return base, ""
        except OSError as e:
            why = f"cannot make a pids cgroup under {base.parent}: {e.strerror or e}"
    return None, why


def _sweep(base: Path) -> None:
    """Remove the groups of harness processes that died without removing theirs (SIGKILL)."""
    for group in base.glob("w*-*"):
        try:
            pid = int(group.name[1:].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            release_cgroup(group)
        except (ValueError, PermissionError):
            pass


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


INSTALL_BWRAP = "apt-get install bubblewrap   (make setup does it)"


@functools.lru_cache(maxsize=1)
def bwrap_availability() -> Availability:
    """Whether bwrap can make the namespaces the sandbox needs here: one real start (~20 ms)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return Availability(False, None, "bubblewrap (bwrap) is not installed", INSTALL_BWRAP)
    for tool in ("prlimit",):
        if not shutil.which(tool):
            return Availability(False, None, f"{tool} (util-linux) is not on PATH", "apt-get install util-linux")
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip().split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = None
    try:
        probe = Sandbox("bwrap", Limits.from_env()).bwrap_command(["true"], ro=[], rw=[])
    except (OSError, HarnessError) as e:
        return Availability(False, version, f"cannot prepare the sandbox: {e}", "see the message")
    try:
        proc = subprocess.run(probe.command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return Availability(False, version, f"bwrap did not start: {e}", INSTALL_BWRAP)
    finally:
        probe.release()
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        fix = ("allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or run the harness as root)"
               if "namespace" in why or "Operation not permitted" in why else "see bwrap's message")
        return Availability(False, version, f"bwrap cannot make its namespaces here: {why}", fix)
    base, why = pids_cgroup_root()
    if base is not None:
        limit = "process limit: a pids cgroup per worker"
    elif os.geteuid() != 0:
        limit = "process limit: RLIMIT_NPROC"
    else:  # the kernel does not apply RLIMIT_NPROC to uid 0
        limit = f"NO process limit ({why})"
    return Availability(True, f"{version}; {limit}")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise HarnessError(f"--sandbox {kind!r} is not known: expected one of {', '.join(KINDS)}")
    return kind


def _existing(paths) -> list[Path]:
    return [Path(p) for p in paths if p and Path(p).exists()]


def _program_roots(command: list[str]) -> list[Path]:
    """What a worker's command runs on: for every absolute file named on it (the interpreter, the
    worker script or binary), the folder above the one holding it (a venv, a prefix, js/, go/), both
    as named and with links resolved (a venv's python links into its base interpreter's prefix)."""
    roots: list[Path] = []
    for arg in command:
        if not arg.startswith("/") or not Path(arg).is_file():
            continue
        for p in (Path(os.path.abspath(arg)), Path(os.path.realpath(arg))):
            roots.append(p.parent.parent if p.parent.parent != Path("/") else p.parent)
    return roots


def _outermost(paths: list[Path]) -> list[Path]:
    """Distinct paths, none inside another, shortest first."""
    out: list[Path] = []
    for p in sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


@dataclass(frozen=True)
class Wrapped:
    """A worker command inside the sandbox, and what to remove after it exits (its pids cgroup)."""

    command: list[str]
    cgroup: Path | None = None

    def release(self) -> None:
        if self.cgroup is not None:
            release_cgroup(self.cgroup)


def release_cgroup(group: Path) -> None:
    """Kill what is left in a worker's pids cgroup and remove it (a few tries: the kernel empties it
    as the killed tasks are reaped)."""
    import time

    for _ in range(50):
        try:
            for pid in _read(group / "cgroup.procs").split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


@dataclass(frozen=True)
class Sandbox:
    kind: str = "none"
    limits: Limits | None = None

    @classmethod
    def of(cls, kind: str) -> Sandbox:
        return cls(check_kind(kind), Limits.from_env() if kind != "none" else None)

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        if not self.active or self.limits is None:
            return "none"
        mib = 1 << 20
        return (f"{self.kind} (memory {self.limits.memory_bytes // mib} MiB a process, {self.limits.processes} processes, "
                f"files up to {self.limits.file_bytes // mib} MiB, no network)")

    def wrap(self, command: list[str], *, artifacts: Path, scratch: Path, env: dict[str, str]) -> Wrapped:
        """The worker's command inside the bwrap sandbox: it sees its programs, the artifacts (read-only)
        and the scratch folder (read-write)."""
        scratch.mkdir(parents=True, exist_ok=True)
        ro = [*_program_roots(command), Path(sys.prefix), artifacts]
        ro += [Path(p) for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p.startswith("/")]
        ro += [Path(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p.startswith("/")]
        # `python -m harness_runners.x` (the folder runners/): of it only runners/ (not reports/, .harness/logs, .git).
        repo = Path(__file__).resolve().parents[1]
        ro = [repo / "runners" if Path(os.path.abspath(p)) == repo else p for p in ro]
        return self.bwrap_command(command, ro=ro, rw=[scratch], cwd=repo)

    def bwrap_command(self, command: list[str], *, ro: list[Path], rw: list[Path], cwd: Path | None = None) -> Wrapped:
        assert self.limits is not None
        lim = self.limits
        root = os.geteuid() == 0
        base, _ = pids_cgroup_root()
        group = None
        out: list[str] = []
        if base is not None:
            group = base / f"w{os.getpid()}-{secrets.token_hex(4)}"
            group.mkdir()
            (group / "pids.max").write_text(str(lim.processes))
            # The shell joins the cgroup and becomes prlimit, then bwrap: all it starts stays inside.
            out += ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group)]
        out += ["prlimit", f"--data={lim.memory_bytes}", f"--fsize={lim.file_bytes}", "--core=0"]
        if group is None:
            out.append(f"--nproc={lim.processes}")
        out += ["--", shutil.which("bwrap") or "bwrap", "--die-with-parent",
                "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        if root:
            out += ["--cap-drop", "ALL"]  # uid 0 without a capability: no DAC override, no mounts, no raw sockets
        out += ["--ro-bind", "/usr", "/usr"]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = Path("/") / top
            if p.is_symlink():
                out += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                out += ["--ro-bind", str(p), str(p)]
        out += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(lim.tmp_bytes), "--tmpfs", "/tmp",
                "--perms", "0755", "--dir", "/etc"]
        for name in ETC:
            p = Path("/etc") / name
            if p.exists():
                out += ["--ro-bind", str(p), str(p)]
        ro_paths = _outermost([p for p in _existing(ro) if not str(p).startswith(("/usr/", "/proc", "/dev"))])
        rw_paths = _outermost(_existing(rw))
        # bwrap makes missing parents mode 0700 when it runs as root: make them 0755 first, so a
        # non-root worker can walk to what is bound below them (e.g. a Python under /root/.pyenv).
        made: set[Path] = {Path("/"), Path("/tmp"), Path("/etc"), Path("/usr")}
        bound: list[Path] = []
        for p in sorted(ro_paths + rw_paths, key=lambda p: len(p.parts)):
            for parent in reversed(p.parents):
                if parent in made or any(parent == q or q in parent.parents for q in bound):
                    continue
                made.add(parent)
                out += ["--perms", "0755", "--dir", str(parent)]
            out += ["--bind" if p in rw_paths else "--ro-bind", str(p), str(p)]
            bound.append(p)
        # The root bwrap builds is a tmpfs: once everything is in place it becomes read-only too, so a
        # write anywhere but the scratch folder and /tmp fails (EROFS) instead of landing in it.
        out += ["--remount-ro", "/"]
        out += ["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
        if cwd is not None:
            out += ["--chdir", str(cwd)]
        return Wrapped(out + ["--", *command], group)

    def prepare_docker(self, scratch: Path) -> None:
        """The container runs as uid 65534: it must be able to make its output folders in the scratch
        folder, as must the other (uid 0, capability-free) sandboxed workers of the same run: 1777."""
        scratch.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and scratch.stat().st_mode & 0o7777 != 0o1777:
            try:
                os.chmod(scratch, 0o1777)
            except OSError as e:
                raise HarnessError(f"cannot open the scratch folder {scratch} to the container's uid {DOCKER_UID}: {e.strerror or e}") from None


def grant_container_read(artifact: str) -> None:
    """The exporter makes artifact folders mode 0700 (root's, when the harness runs as root); the
    container's uid 65534 needs to walk into the one it is about to load (its files are 0644)."""
    if os.geteuid() != 0:
        return
    top = Path(artifact)
    for folder, dirs, _files in os.walk(top):
        for d in [folder, *(os.path.join(folder, x) for x in dirs)]:
            try:
                mode = os.stat(d).st_mode
                if mode & 0o005 != 0o005:
                    os.chmod(d, mode | 0o055)
            except OSError:
                pass


# What a sandboxed worker's error says when the sandbox (or a worker's containment check) stopped the
# model, in the words of the runtimes (TensorFlow, libcurl, ONNX Runtime, Node, Go): the model is the
# culprit, and the result says what was blocked.
_BLOCKED = [
    (re.compile(r"outside the artifact folder|escapes model directory|Absolute path not allowed for external data", re.I),
     "a path that leaves the artifact folder", False),
    (re.compile(r"Read-only file system|EROFS", re.I), "a write outside the scratch folder (read-only file system)", True),
    (re.compile(r"libcurl|Could not resolve host|Couldn't connect|Connection refused|Network is unreachable|ENETUNREACH|ECONNREFUSED", re.I),
     "a network connection (the sandbox has no network)", True),
    # Unsandboxed, the same read fails on the network or the credentials of this machine: still the
    # model's doing (a file it names outside its artifact), never the runtime's.
    # (http(s):// is left out: upstream messages link their documentation.)
    (re.compile(r"\b(?:gs|s3|hdfs)://\S", re.I), "a remote file the model reads (a gs://, s3:// or hdfs:// path)", False),
    (re.compile(r"OOM when allocating|ResourceExhausted|Cannot allocate memory|bad_alloc|out of memory|ENOMEM|Failed to allocate", re.I),
     "memory beyond the sandbox's limit", True),
    (re.compile(r"Resource temporarily unavailable|EAGAIN", re.I), "processes beyond the sandbox's limit", True),
    (re.compile(r"File too large|EFBIG", re.I), "a file beyond the sandbox's size limit", True),
    (re.compile(r"Permission denied|EACCES|Operation not permitted|EPERM", re.I), "a file access the sandbox forbids", True),
    (re.compile(r"No such file or directory|ENOENT", re.I), "a path the sandbox does not show (outside its view)", True),
]


def blocked(message: str, sandboxed: bool) -> str | None:
    """What the sandbox or a containment check stopped, read from a worker's error; None when the error
    is not one of those (or, for what only a sandbox stops, when the worker was not sandboxed)."""
    for pattern, what, needs_sandbox in _BLOCKED:
        if pattern.search(message) and (sandboxed or not needs_sandbox):
            return what
    return None
