"""The lock of an export cache entry: who holds it, a word while waiting on it, and a bounded wait.

A lock is filelock's flock on `<entry>.lock`: the kernel lets go of it when its holder's process ends
(killed, crashed), so a dead holder never blocks. A live one that never finishes does (a harness
stopped with SIGSTOP or Ctrl-Z mid-export, a process hung in a converter): the waiter says, after a
few seconds, on one line what it waits for and who holds it, and gives up after a bounded time
(HARNESS_EXPORT_LOCK_TIMEOUT) with an error of the environment naming the holder.

The holder's pid comes from the kernel (/proc/locks lists every flock with its process and the lock
file's inode); the time it took the lock from the stamp each holder writes into the file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from harness.errors import HarnessError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "HARNESS_EXPORT_LOCK_TIMEOUT"
# Longer than a converter build's whole export (CONVERT_TIMEOUT_S, 900 s) plus the SavedModel it is
# made from: a holder that works is never given up on; one that is stopped or hung is, within the hour.
TIMEOUT_S = 1800.0
SAY_AFTER_S = 5.0  # a wait this long is said (most waits are another process finishing the same export)
POLL_S = 0.25


class LockTimeout(HarnessError):
    """Gave up waiting for an entry's lock: the cases that need the entry are errors of the environment."""


def timeout_s() -> float:
    """How long to wait for an entry's lock: HARNESS_EXPORT_LOCK_TIMEOUT seconds, else TIMEOUT_S."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise HarnessError(f"{TIMEOUT_ENV}={raw!r} is not valid: expected a number of seconds above 0 (default {TIMEOUT_S:.0f})")
    return value


def _stamp(fd: int) -> None:
    """Written into the lock file by its holder once it holds it: pid and since when."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.time():.3f}\n".encode(), 0)


def _kernel_holder(path: Path) -> int | None:
    """The pid that holds a flock on `path`, as the kernel lists it (Linux), or None."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 7882 fe:00:926044 0 EOF" (a waiter's line starts "1: ->")
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None


def holder(path: Path) -> str:
    """Who holds the lock at `path`, in words: pid, what it runs, whether it is stopped, since when."""
    pid = _kernel_holder(path)
    since = None
    try:
        stamped_pid, stamped_at = path.read_text().split()[:2]
        if pid is None or int(stamped_pid) == pid:  # a stamp of an earlier holder says nothing of this one
            pid, since = int(stamped_pid), float(stamped_at)
    except (OSError, ValueError):
        pass
    if pid is None:
        return "held by a process this machine cannot see (another host or container sharing the cache)"
    words = [f"held by pid {pid}"]
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        cmd, state = "", ""
    if cmd:
        words.append(f"({cmd[:120]})")
    if state in ("T", "t"):
        words.append("which is stopped (SIGSTOP or Ctrl-Z: `kill -CONT` it, or end it)")
    if since is not None:
        words.append(f"since {time.strftime('%H:%M:%S', time.localtime(since))} ({time.time() - since:.0f} s ago)")
    return " ".join(words)


@contextlib.contextmanager
def entry_lock(folder: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the lock of the cache entry `folder`, waiting at most `wait_s` (HARNESS_EXPORT_LOCK_TIMEOUT):
    a wait of more than a few seconds is said on one line (logger harness.export.locks), one that runs
    out raises LockTimeout naming the holder. A lock file this user may not create or write is one line
    naming the folder and the permission missing (HarnessError), never an OSError."""
    path = Path(str(folder) + ".lock")
    limit = timeout_s() if wait_s is None else wait_s
    start = time.monotonic()
    said = False
    say_after = min(SAY_AFTER_S, limit / 2)

    def waited_enough() -> bool:  # asked by filelock at every poll: the place to say that we wait
        nonlocal said
        if not said and limit > 0 and time.monotonic() - start >= say_after:
            said = True
            log.warning(f"waiting for the export cache entry {folder.name}: its lock {path} is {holder(path)}; "
                        f"giving up after {limit:.0f} s ({TIMEOUT_ENV})")
        return False

    lock = FileLock(str(path), on_acquired=_stamp)
    try:
        lock.acquire(timeout=limit, poll_interval=POLL_S, cancel_check=waited_enough)
    except Timeout:
        raise LockTimeout(f"gave up after {time.monotonic() - start:.0f} s waiting for the export cache entry {folder.name}: "
                          f"its lock {path} is {holder(path)} (expected it to be let go; end that process, or wait longer "
                          f"with {TIMEOUT_ENV})") from None
    except PermissionError as e:
        raise not_writable(path, e) from None
    try:
        yield
    finally:
        lock.release()


def not_writable(path: Path, e: OSError) -> HarnessError:
    """The one line for a cache path this user may not write: whose it is, its mode, what is missing."""
    where = path if path.exists() else path.parent
    try:
        st = where.stat()
        owner = f"owned by uid {st.st_uid}, mode {st.st_mode & 0o777:o}"
    except OSError:
        owner = "unreadable"
    what = "write to the file" if where == path else "create files in the folder"
    return HarnessError(f"cannot write to the export cache: {where} ({owner}) does not let uid {os.getuid()} {what} "
                        f"({e.strerror or e}); expected a cache this user can write: ask its owner for group write "
                        f"permission, or set HARNESS_CACHE to a folder of your own")
