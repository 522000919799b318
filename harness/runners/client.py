"""Protocol client: starts one worker process and talks JSON-RPC to it over stdin/stdout.

The harness owns timeouts and crashes: a worker that dies or does not answer in time is killed, and
the error carries the tail of its stderr so the case can be recorded as `crash` or `timeout`."""

from __future__ import annotations

import collections
import ctypes
import functools
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from harness.runners.errors import ErrorData
from harness.runners.messages import PARSERS, InfoReply, LoadReply, Malformed, Reply, RunReply


class WorkerError(Exception):
    def __init__(self, message: str, stderr_tail: str = ""):
        super().__init__(message)
        self.stderr_tail = stderr_tail


class WorkerCrash(WorkerError):
    """The worker exited (or could not start)."""


class WorkerTimeout(WorkerError):
    """The worker did not answer in time and was killed."""


class ProtocolViolation(WorkerCrash):
    """The worker answered, but not as the protocol says (a result without its fields): the runtime's
    worker is at fault, and it is killed like a crashed one, so the next case gets a fresh worker."""


LOG_LIMIT_BYTES = 32 << 20  # of one worker's stderr kept in its log file; a model that floods it does not fill the disk


class RpcError(Exception):
    """A JSON-RPC error the worker answered: `kind` is the protocol's data.kind, `data` its facts (None for
    an error made on the harness side or answered by a worker that gives none), and the message the
    sentence formed from them (harness/runners/errors.py)."""

    def __init__(self, kind: str, message: str, data: ErrorData | None = None):
        super().__init__(message)
        self.kind = kind
        self.data = data

    @property
    def code(self) -> str | None:
        return self.data.code if self.data is not None else None

    @classmethod
    def from_answer(cls, error: dict, runtime: str) -> RpcError:
        """The error object of a response; `runtime` is the worker's runtime name, for the sentence."""
        raw = error.get("data")
        data: dict = raw if isinstance(raw, dict) else {}
        if "code" not in data:  # a worker older than structured errors: its own message
            return cls(str(data.get("kind", "run_failed")), str(error.get("message", "unknown error")))
        facts = ErrorData.from_json(data)
        return cls(facts.kind, facts.sentence(runtime), facts)


_EOF = object()

_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # looked up here: nothing is resolved after fork


def _die_with(parent: int) -> None:
    """Run in the worker process between fork and exec: the kernel sends it SIGKILL when the harness
    dies, however it dies (a SIGKILL of the harness runs no cleanup of ours). The setting survives exec
    and is bound to the forking thread, so workers are started from the thread that uses them. A harness
    already gone by now (the signal would never come) ends the child at once."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class WorkerClient:
    def __init__(self, name: str, command: list[str], cwd: Path | None = None, env: dict | None = None, stderr_lines: int = 200,
                 cleanup: list[str] | None = None, log: Path | None = None, on_exit: Callable[[], None] | None = None):
        self.name = name
        # The runtime's name as its worker says it in `info` (`name` is the pool's key, which may carry a
        # thread setting or a variant): the sentences of some errors name it.
        self.runtime = name
        self._on_exit = on_exit  # once the process is gone, however it ended (e.g. remove its sandbox's cgroup)
        # Called with the artifact folder before each `load` (a container's uid must be able to read it).
        self.before_load: Callable[[str], None] | None = None
        # Everything the worker says on stderr (framework logs included) also goes to this file, whole;
        # the terminal never sees it, and a failing case keeps the tail.
        self._log = None
        if log is not None:
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(log, "a", encoding="utf-8", errors="replace")
            except OSError:
                self._log = None
        self.command = command
        self.cleanup = cleanup  # e.g. `docker kill NAME`: a container outlives the client process we kill
        self._env = env
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._lines: queue.Queue = queue.Queue()
        self._next_id = 0
        try:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                text=True,
                bufsize=1,
                start_new_session=True,  # its own process group: a kill takes its children too
                # ... and it dies with the harness (a container, which outlives its client, has its own
                # watchdog in go/docker.sh; bwrap passes the signal on with --die-with-parent).
                preexec_fn=functools.partial(_die_with, os.getpid()),
            )
        except OSError as e:
            if on_exit is not None:
                on_exit()
            raise WorkerCrash(f"worker {name} could not start: {' '.join(command)}: {e}") from None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        written = 0
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))
            if self._log is not None:
                try:
                    if written + len(line) > LOG_LIMIT_BYTES:
                        self._log.write(f"[harness] log cut here at {LOG_LIMIT_BYTES >> 20} MiB: the worker goes on saying more "
                                        "(the last lines are kept with a failing case)\n")
                        self._log.close()
                        self._log = None
                        continue
                    self._log.write(line)
                    self._log.flush()
                    written += len(line)
                except (OSError, ValueError):
                    self._log = None

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def load(self, params: dict, timeout: float = 60.0) -> LoadReply:
        """`load`, its answer typed (a worker that answers without the fields is killed: ProtocolViolation)."""
        message = self._exchange("load", params, timeout)[1]
        assert isinstance(message, LoadReply)
        return message

    def run(self, params: dict, timeout: float = 60.0) -> RunReply:
        """`run`, its answer typed."""
        message = self._exchange("run", params, timeout)[1]
        assert isinstance(message, RunReply)
        return message

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0):
        """One request and its answer as the worker sent it (the protocol kit checks it against the
        schema), checked as load() and run() check theirs."""
        return self._exchange(method, params, timeout)[0]

    def _exchange(self, method: str, params: dict | None, timeout: float) -> tuple[object, Reply | None]:
        """The answer, and its typed message where the harness reads one (harness/runners/messages.py): an
        answer that message cannot be read from kills the worker (ProtocolViolation)."""
        self._next_id += 1
        req_id = self._next_id
        if method == "load" and self.before_load is not None and params and isinstance(params.get("artifact"), str):
            self.before_load(params["artifact"])
        message = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or {}})
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(message + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed(f"while sending {method}") from None
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise WorkerTimeout(f"worker {self.name} did not answer {method} within {timeout:g} s; killed", self.stderr_tail()) from None
            if line is _EOF:
                raise self._crashed(f"during {method}")
            try:
                response = json.loads(line)
            except ValueError:
                response = None
            if not isinstance(response, dict):  # a banner, a stray print, a bare JSON number: not a message of ours
                self._stderr.append(f"[harness] not a protocol line on stdout: {line.rstrip()[:200]}")
                continue
            if response.get("id") != req_id:
                continue  # a late answer to a request we gave up on
            if "error" in response:
                error = response["error"] if isinstance(response["error"], dict) else {"message": str(response["error"])}
                raise RpcError.from_answer(error, self.runtime)
            result = response.get("result")
            parse = PARSERS.get(method)
            try:
                typed = parse(result) if parse is not None else None
            except Malformed as wrong:
                self.kill()
                raise ProtocolViolation(f"worker {self.name} broke the protocol answering {method}: {wrong}; killed", self.stderr_tail()) from None
            if isinstance(typed, InfoReply) and typed.runtime is not None:
                self.runtime = typed.runtime
            return result, typed

    def _crashed(self, when: str) -> WorkerCrash:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        how = f"signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else f"exit code {code}"
        # Give the stderr reader a moment to drain what the process said before dying.
        threading.Event().wait(0.05)
        return WorkerCrash(f"worker {self.name} died {when}: {how}", self.stderr_tail())

    def kill(self) -> None:
        was_running = self.proc.poll() is None
        if was_running:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if was_running and self.cleanup:
            try:
                subprocess.run(self.cleanup, env=self._env, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass
        if self._on_exit is not None and self.proc.poll() is not None:
            on_exit, self._on_exit = self._on_exit, None
            on_exit()

    def close(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                self.call("shutdown", timeout=timeout)
                self.proc.wait(timeout=timeout)
            except (WorkerError, RpcError, subprocess.TimeoutExpired):
                pass
        self.kill()
