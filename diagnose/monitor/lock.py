"""One writer per run: an exclusive lock file beside each store file.

Why a lock file and not SQLite's own locks: SQLite locks a database per transaction, so two
processes appending to one run take turns and both "succeed" while interleaving or replacing each
other's steps. ``flock`` holds for the writer's whole life, is released by the kernel when the
process dies (SIGKILL included, so there are no stale locks to clean up), and is per open file,
so a second writer inside the same process is refused too. The holder writes who it is into the
file, so the refused writer's error names the live process.

Limits: ``flock`` is advisory and local; on network file systems (NFS) it may not exclude a writer
on another machine (documented in the README).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

# A reader tests for a live writer by taking a shared lock for a few microseconds; a writer
# that starts at that moment retries this long before it concludes another writer holds the run.
ACQUIRE_SECONDS = 2.0
_POLL_SECONDS = 0.01


class RunLockedError(OSError):
    """Another live process (or another watch in this one) is writing this run."""


def lock_path(store_path: Path) -> Path:
    """The lock file of a store file: ``run.sqlite`` -> ``run.lock``."""
    return store_path.with_suffix(".lock")


def _try_lock(fd: int, exclusive: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    try:  # pragma: no cover - Windows: byte-range lock on the first byte
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def describe(holder: dict[str, Any] | None) -> str:
    """A holder record as words: ``process 1234 on host (python train.py), since 12:00:01``."""
    if not holder:
        return "another process (it has not said which yet)"
    return (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('command')}), "
            f"since {holder.get('since')}")


class RunLock:
    """An exclusive, process-lifetime lock on one store file. ``release()`` is safe to call twice."""

    def __init__(self, store_path: Path) -> None:
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the live writer."""
        deadline = time.monotonic() + ACQUIRE_SECONDS
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if _try_lock(fd, exclusive=True):
                # The previous holder may have unlinked the file between our open and our lock:
                # then we hold a lock on a file nobody else can see. Retry on the new file.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                _unlock(fd)
                os.close(fd)
                continue
            os.close(fd)
            if time.monotonic() >= deadline:
                raise RunLockedError(describe(_holder(self.path)))
            time.sleep(_POLL_SECONDS)
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "command": " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
                                       *sys.argv[1:3]]).strip(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        return self

    def release(self) -> None:
        """Unlink, then unlock: a waiting writer that opened the old file sees it is gone and retries."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that became read-only: the stale file is harmless (flock is gone)
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None


def live_writer(store_path: Path) -> dict[str, Any] | None:
    """Who holds the write lock of a store file now (its holder record, ``{}`` if it has not
    said), or None when no live process writes it. Takes a shared lock for a moment; works on
    read-only folders."""
    path = lock_path(store_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody is writing
    try:
        if _try_lock(fd, exclusive=False):
            _unlock(fd)
            return None
        return _holder(path) or {}
    finally:
        os.close(fd)
