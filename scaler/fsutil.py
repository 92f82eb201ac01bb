"""Files scaler writes (tfvars, manifest, state) are replaced atomically and durably."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError


def _umask() -> int:
    # Reading /proc avoids the set-and-restore dance of os.umask, which races with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    target = Path(path)
    # Write through a symlink (a shared terraform.tfvars, say) instead of replacing the link.
    if target.is_symlink():
        target = target.resolve()
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    if mode is None:
        mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~_umask()
    fd, tmp = _locked_temp(target)
    try:
        remove_stale_temps(target, keep=tmp)
        # The handle (and its lock) stays open until the rename: a temp file being renamed
        # must not look stale to another writer.
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                # Keep the owner when root edits someone else's file; not allowed otherwise.
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            os.fsync(handle.fileno())
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # The rename itself lives in the directory; without this a crash can bring the old file back.
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _locked_temp(target: Path) -> tuple[int, Path]:
    """A new temp file beside target, flocked: the lock says "its writer is alive"."""
    while True:
        # Same directory as the target: os.replace is only atomic within one filesystem.
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # another writer may have taken it for stale between mkstemp and flock
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


BOOKKEEPING_DIR = ".scaler"


def bookkeeping_dir(directory: Path) -> Path:
    """`.scaler/` of a Terraform directory (made on first use, with a .gitignore of `*`)."""
    folder = Path(directory) / BOOKKEEPING_DIR
    folder.mkdir(exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        write_atomic(
            ignore, "# scaler's rollout bookkeeping (record, lock, plans): not for git\n*\n"
        )
    return folder


def remove_stale_temps(target: Path, keep: Path | None = None) -> list[Path]:
    """Remove `.<name>.*.tmp` files a killed write_atomic left beside target; returns them.

    A live writer holds an flock on its temp file, so only the dead writers' files go."""
    removed: list[Path] = []
    for tmp in Path(target).parent.glob(f".{glob_escape(Path(target).name)}.*.tmp"):
        if tmp == keep or tmp.is_symlink() or not tmp.is_file():
            continue
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a writer is still at work
        try:
            # still the same file under that name (not replaced meanwhile)
            if os.fstat(fd).st_ino == os.lstat(tmp).st_ino:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def glob_escape(name: str) -> str:
    """`name` with glob's special characters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class UnreadableFile(ScalerError):
    """A file scaler was given cannot be read as text."""


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a regular file; UnreadableFile for a FIFO, device, binary file, ...

    FileNotFoundError passes through (callers say what to do about a missing file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UnreadableFile(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile(f"{what} {path} is not a regular file; pass a file")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise UnreadableFile(f"cannot read {what} {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableFile(
            f"{what} {path} is not UTF-8 text (byte {err.start}); is it the right file?"
        ) from None


def strict_json(text: str) -> Any:
    """json.loads that only returns what JSON can hold: json.JSONDecodeError for NaN,
    Infinity, numbers out of range and nesting too deep for Python."""

    def refuse(name: str) -> Any:
        raise json.JSONDecodeError(f"{name} is not a JSON number", text, 0)

    def finite(token: str) -> float:
        value = float(token)
        if math.isinf(value):
            raise json.JSONDecodeError(f"the number {token[:40]} is out of range", text, 0)
        return value

    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as err:  # Python's 4,300-digit limit on integers
        raise json.JSONDecodeError(str(err).split(":")[0], text, 0) from None
