"""One scaler operation at a time per Terraform directory: a file lock beside the state.

`.scaler/rollout.lock` is held with fcntl.flock and names its holder (pid, host, start time, what
it does) as JSON. The kernel drops a flock when its process dies, so a lock left behind by a dead
process is simply taken over (and reported as stale); a live holder is refused, naming it.
Terraform's own state lock (-lock-timeout) still guards the state against other tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scaler.errors import ScalerError
from scaler.fsutil import bookkeeping_dir

LOCK_NAME = ".scaler/rollout.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    started: float
    operation: str

    def describe(self) -> str:
        """`pid 123 on host, since 2024-01-02 03:04:05 UTC (rollout)`."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on {self.host}, since {when} ({self.operation})"


class LockHeld(ScalerError):
    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder
        who = holder.describe() if holder else "another process"
        super().__init__(
            f"another scaler operation holds {path}: {who}; wait for it to finish, "
            "or stop that process (a dead holder's lock is taken over automatically)"
        )


@dataclass(frozen=True)
class Acquired:
    """A lock we hold, and the stale holder we took it over from, if any."""

    path: Path
    holder: Holder
    stale: Holder | None


def _read_holder(handle: IO[str]) -> Holder | None:
    handle.seek(0)
    text = handle.read()
    try:
        raw = json.loads(text)
        return Holder(int(raw["pid"]), str(raw["host"]), float(raw["started"]), str(raw["op"]))
    except (ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def hold(directory: Path, operation: str = "rollout") -> Iterator[Acquired]:
    """Hold the scaler lock of `directory` for the block; LockHeld when someone alive has it."""
    path = Path(directory) / LOCK_NAME
    bookkeeping_dir(Path(directory))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _read_holder(handle)) from None
        try:
            # We hold the flock, so whoever wrote the file is gone (or never unlocked cleanly).
            stale = _read_holder(handle)
            me = Holder(os.getpid(), socket.gethostname(), time.time(), operation)
            record = {"pid": me.pid, "host": me.host, "started": me.started, "op": operation}
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            yield Acquired(path, me, stale)
        finally:
            # Emptied, not removed: unlinking a flocked file lets two processes lock two inodes.
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def holder(directory: Path) -> Holder | None:
    """Who holds the lock of `directory` right now (None: nobody alive)."""
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return None
    with path.open("r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None
