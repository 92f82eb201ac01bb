"""The local cloud's package mirror: Debian's apt-cacher-ng on a fixed loopback address.

Droplets cannot reach anything outside this machine, so their apt goes through a caching proxy on
the host, as DigitalOcean's droplets go to DigitalOcean's mirrors. One apt-cacher-ng serves every
local cloud on this machine: each cloud holds a shared lock on `mirror.users` while it runs; the
last one to stop ends the proxy. Its cache persists in `cache_root()/apt-cacher-ng`, so a package
is fetched from upstream once. The upstream is whatever this machine's own apt sources name
(the droplets' sources are a copy of them); nothing here names a mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from scaler.errors import ScalerError

ADDRESS = "127.0.42.1"
"""Where droplets reach the mirror: routed into every droplet's namespace (no cloud is 127.0.x)."""
PORT = 3142
PROXY = f"http://{ADDRESS}:{PORT}"


class MirrorError(ScalerError):
    """The package mirror cannot be started."""


def cache_root() -> Path:
    """The persistent folder for the mirror's cache and files (beside the base images)."""
    found = os.environ.get("SCALER_MIRROR_CACHE")
    if found:
        return Path(found)
    return Path("/var/cache/scaler") if os.geteuid() == 0 else Path.home() / ".cache" / "scaler"


def _listening() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((ADDRESS, PORT), timeout=1):
        return True
    return False


class Mirror:
    """One local cloud's use of the shared mirror: `acquire()` starts it if needed."""

    def __init__(self) -> None:
        self._users: int | None = None
        self.folder = cache_root() / "apt-mirror"

    def acquire(self) -> str:
        """Start (or join) the mirror; returns the proxy URL droplets use."""
        if self._users is not None:
            return PROXY
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / "mirror.users", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._users = fd
        try:
            with open(self.folder / "mirror.start", "w") as start:
                fcntl.flock(start, fcntl.LOCK_EX)
                if not _listening():
                    self._start()
        except BaseException:
            self.release()
            raise
        return PROXY

    def release(self) -> None:
        """Leave the mirror; the last user stops it."""
        fd, self._users = self._users, None
        if fd is None:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another local cloud still uses it
            self._stop()
        finally:
            os.close(fd)

    def _start(self) -> None:
        binary = shutil.which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng"
        if not os.access(binary, os.X_OK):
            raise MirrorError(
                "real droplets install packages through apt-cacher-ng (Debian package "
                "apt-cacher-ng), which is not installed"
            )
        for sub in ("cache", "log", "run"):
            (self.folder / sub).mkdir(exist_ok=True)
        # A configuration of its own, without Debian's Remap rules: those send Debian's archive to
        # a mirror picked from a built-in list, which need not be reachable from here. Without
        # them it fetches each URL from the host the droplet's apt sources name (this machine's).
        conf = self.folder / "conf"
        conf.mkdir(exist_ok=True)
        settings = {
            "CacheDir": self.folder / "cache",
            "LogDir": self.folder / "log",
            "SupportDir": "/usr/lib/apt-cacher-ng",
            "PidFile": self.folder / "run" / "pid",
            "SocketPath": self.folder / "run" / "socket",
            "BindAddress": ADDRESS,
            "Port": PORT,
            "ExThreshold": 4,
            "ReportPage": "acng-report.html",
        }
        (conf / "acng.conf").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
        argv = [binary, "-c", str(conf), "ForeGround=1"]
        with open(self.folder / "log" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        (self.folder / "run" / "spawned").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 15
        while not _listening():
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise MirrorError(
                    f"apt-cacher-ng did not start on {ADDRESS}:{PORT}; "
                    f"see {self.folder / 'log' / 'stdout.log'}"
                )
            time.sleep(0.05)

    def _stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.folder / "run" / "spawned").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"apt-cacher-ng" in cmdline:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                        break
                    time.sleep(0.05)
                else:
                    os.kill(pid, signal.SIGKILL)
            (self.folder / "run" / "spawned").unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
