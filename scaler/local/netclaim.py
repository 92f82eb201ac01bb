"""Network numbers for local clouds: one lock file per number, so two clouds never share one.

A local cloud with network number N hands out 127.N.x.k addresses. Two clouds on one machine (two
test runs, or a test run beside a user's `scaler local up`) must not share N. Each cloud holds an
exclusive `flock` on `<lock dir>/net-N.lock` for its lifetime; the kernel drops the lock when the
process dies, so a killed cloud never keeps its number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from scaler.errors import ScalerError

# 42 is `scaler local up`'s default; automatic claims start above it and skip it.
DEFAULT_NETWORK = 42
AUTO_RANGE = range(43, 255)


class NetworkInUse(ScalerError):
    """The network number asked for is held by another local cloud."""


def lock_dir() -> Path:
    """Where the per-number lock files live (SCALER_LOCAL_LOCK_DIR, else /tmp/scaler-local-nets)."""
    return Path(os.environ.get("SCALER_LOCAL_LOCK_DIR", "/tmp/scaler-local-nets"))


class NetworkClaim:
    """An exclusive hold on one network number, released by `release()` or process exit."""

    def __init__(self, number: int, fd: int) -> None:
        self.number = number
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the number back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.utime(fd)  # starts the cool-down
                os.close(fd)

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> NetworkClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# An automatic claim passes over a number used in the last COOLDOWN seconds, so a cloud that
# stops and starts again on its number (`scaler local down; up`) finds it free.
COOLDOWN = 120.0


def _path(number: int) -> Path:
    folder = lock_dir()
    folder.mkdir(mode=0o1777, parents=True, exist_ok=True)
    return folder / f"net-{number}.lock"


def _try(number: int, *, explicit: bool) -> NetworkClaim | None:
    path = _path(number)
    if not explicit:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime < COOLDOWN:
                return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return NetworkClaim(number, fd)


def reserve_network() -> int:
    """A free number for a child process to claim (`scaler local up --network N`).

    Claimed and given back at once: the cool-down keeps automatic claims off it for a while.
    """
    with claim_network() as claim:
        return claim.number


def holder(number: int) -> str:
    """Who holds `number`, as 'pid N' when the lock file says so."""
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int((lock_dir() / f'net-{number}.lock').read_text().strip())}"
    return "another process"


def _last_used(number: int) -> float:
    try:
        return _path(number).stat().st_mtime
    except FileNotFoundError:
        return 0.0


def claim_network(number: int | None = None, *, prefer: int | None = None) -> NetworkClaim:
    """Claim `number` (error when held), else `prefer` when free, else a free number.

    A free number out of its cool-down comes first; when every free one is cooling down, the one
    used longest ago.
    """
    if number is not None:
        claim = _try(number, explicit=True)
        if claim is None:
            raise NetworkInUse(
                f"network {number} is in use by another local cloud ({holder(number)}); "
                "pick another with --network, or leave it out to get a free one"
            )
        return claim
    if prefer is not None and (claim := _try(prefer, explicit=True)) is not None:
        return claim
    for candidate in AUTO_RANGE:
        if (claim := _try(candidate, explicit=False)) is not None:
            return claim
    for candidate in sorted(AUTO_RANGE, key=_last_used):
        if (claim := _try(candidate, explicit=True)) is not None:
            return claim
    raise NetworkInUse(
        f"every local-cloud network number {AUTO_RANGE.start}-{AUTO_RANGE.stop - 1} is in use"
    )
