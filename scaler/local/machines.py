"""Directory droplets: a filesystem root and a static web server each, fast API stand-ins.

Everything lives in files under ``state_dir/machines`` (nothing else is persisted)::

    droplets/<id>/root             the droplet's filesystem, from a base tree or a snapshot
    droplets/<id>/machine.json     its addresses, so boot() can restart listeners after a restart
    images/<image_id>              a snapshot: a copy of a droplet's root

Base images (see BASE_IMAGES) are small trees made here: /etc/os-release, /etc/hostname, an empty
web root /var/www/html, and cloud-init's copy of the user data in
/var/lib/cloud/instance/user-data.txt.

Web: each droplet serves its web root statically on its public and its private address. The
droplet's port 80 is served on web_port(): 80 when running as root, else 8080. The web root is
root/var/www/html, or the path inside root named in root/etc/scaler/webroot (so a role installing
WordPress to /var/www/wordpress can point at it). A directory answers with its index.php or
index.html, else 404; PHP is not executed, a .php file is sent as text/html. So a droplet from a
base image, whose web root is empty, fails a health check on "/" until a bake puts WordPress there.

SSH: none. A directory droplet is no host of its own, so nothing may log in to it or provision
it (an sshd here would land on this machine). Provisioning needs real droplets (droplets.py).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import mimetypes
import os
import shutil
import tempfile
import threading
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic

# slug -> (ID, VERSION_ID, PRETTY_NAME, VERSION_CODENAME) for /etc/os-release
_BASE_OS: dict[str, tuple[str, str, str, str]] = {
    "debian-12-x64": ("debian", "12", "Debian GNU/Linux 12 (bookworm)", "bookworm"),
    "ubuntu-22-04-x64": ("ubuntu", "22.04", "Ubuntu 22.04.5 LTS", "jammy"),
    "ubuntu-24-04-x64": ("ubuntu", "24.04", "Ubuntu 24.04.1 LTS", "noble"),
    "debian-9-x64": ("debian", "9", "Debian GNU/Linux 9 (stretch)", "stretch"),
    "debian-11-x64": ("debian", "11", "Debian GNU/Linux 11 (bullseye)", "bullseye"),
}
BASE_IMAGES: tuple[str, ...] = tuple(_BASE_OS)
"""Slugs of the base images every local cloud has."""

INDEX_FILES = ("index.php", "index.html")
"""What a directory request answers with, in order; neither present means 404."""


class MachineError(ScalerError):
    """A local droplet cannot be laid out, booted or snapshotted."""


@dataclass(frozen=True)
class _Machine:
    droplet_id: int
    public_ip: str
    private_ip: str


class _DropletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], web_root: Callable[[], Path]) -> None:
        self.web_root = web_root
        super().__init__(address, _WebHandler)


class _WebHandler(BaseHTTPRequestHandler):
    server: _DropletServer
    server_version = "scaler-local-droplet"
    # HTTP/1.0 (one request per connection), so a halted droplet has no kept-alive connection left
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # health checks poll often; the API's request log is the place for traffic

    def _serve(self, *, body: bool) -> None:
        target = self._resolve()
        if target is None:
            data, status, ctype = b"404 not found\n", 404, "text/plain; charset=utf-8"
        else:
            try:
                data = target.read_bytes()
            except OSError:
                data, status, ctype = b"403 forbidden\n", 403, "text/plain; charset=utf-8"
            else:
                status, ctype = 200, _content_type(target)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a health check that gave up (its timeout) is not the droplet's error

    def _resolve(self) -> Path | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            return None
        target = self.server.web_root().joinpath(*parts)
        if target.is_dir():
            return next((target / n for n in INDEX_FILES if (target / n).is_file()), None)
        return target if target.is_file() else None


def _content_type(path: Path) -> str:
    if path.suffix == ".php":
        return "text/html; charset=utf-8"
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype


@dataclass
class _Listeners:
    servers: list[tuple[_DropletServer, threading.Thread]]


_LIVE: weakref.WeakSet[Machines] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # An API that was never stopped must not leave listeners behind when Python exits.
    for machines in list(_LIVE):
        machines.close()


class Machines:
    """The droplets' filesystems and listeners of one local cloud, kept under state_dir/machines.

    These are directory droplets: fast stand-ins for the API's tests, which nothing provisions.
    Real droplets (Linux hosts of their own) are in droplets.py.
    """

    kind = "directory"

    def __init__(self, state_dir: Path, *, web_port: int | None = None) -> None:
        # Absolute: listeners outlive the working directory they were made in.
        self.base = Path(state_dir).resolve() / "machines"
        (self.base / "droplets").mkdir(parents=True, exist_ok=True)
        (self.base / "images").mkdir(parents=True, exist_ok=True)
        as_root = os.geteuid() == 0
        self._web_port = web_port if web_port is not None else (80 if as_root else 8080)
        self._lock = threading.RLock()
        self._running: dict[int, _Listeners] = {}
        _LIVE.add(self)

    def prepare(self) -> None:
        """Nothing to get ready for directory droplets."""

    def web_port(self) -> int:
        """The port serving every droplet's port 80."""
        return self._web_port

    def ssh_port(self) -> int | None:
        """None: directory droplets offer no SSH."""
        return None

    def root(self, droplet_id: int) -> Path:
        """The droplet's filesystem root."""
        return self._dir(droplet_id) / "root"

    def web_root(self, droplet_id: int) -> Path:
        """The directory the droplet serves on port 80 (see the module docstring for the rule)."""
        root = self.root(droplet_id)
        marker = root / "etc" / "scaler" / "webroot"
        if marker.is_file():
            inside = marker.read_text().strip().strip("/")
            if inside and ".." not in inside.split("/"):
                return root / inside
        return root / "var" / "www" / "html"

    def image_root(self, image_id: int) -> Path:
        """The tree a snapshot holds."""
        return self.base / "images" / str(image_id)

    def create(
        self,
        droplet_id: int,
        public_ip: str,
        private_ip: str,
        image: str | int,
        authorized_keys: list[str],
        user_data: str | None,
        hostname: str | None = None,
    ) -> None:
        """Lay out the droplet's root from a base image slug or a snapshot id, then boot it."""
        folder = self._dir(droplet_id)
        if folder.exists():
            raise MachineError(
                f"droplet {droplet_id} already has a root at {folder}; destroy it first"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".new-{droplet_id}-", dir=folder.parent))
        try:
            root = staging / "root"
            if isinstance(image, int):
                source = self.image_root(image)
                if not source.is_dir():
                    raise MachineError(
                        f"no snapshot {image} in {source.parent}; create the droplet from a "
                        f"snapshot that exists or from a base image ({', '.join(BASE_IMAGES)})"
                    )
                shutil.copytree(source, root, symlinks=True)
            else:
                _lay_out_base(root, image)
            _write(root / "etc" / "hostname", f"droplet-{droplet_id}\n")
            keys = "".join(k.strip() + "\n" for k in authorized_keys if k.strip())
            # cloud-init adds the droplet's keys to root's, in the tree as on a real droplet
            rooted = root / "root" / ".ssh" / "authorized_keys"
            old = rooted.read_text() if rooted.is_file() else ""
            _write(rooted, old + "".join(k for k in keys.splitlines(True) if k not in old))
            cloud = root / "var" / "lib" / "cloud" / "instance"
            cloud.mkdir(parents=True, exist_ok=True)
            if user_data is not None:
                _write(cloud / "user-data.txt", user_data)
            info = {"droplet_id": droplet_id, "public_ip": public_ip, "private_ip": private_ip}
            _write(staging / "machine.json", json.dumps(info, indent=2) + "\n")
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.boot(droplet_id)

    def boot(self, droplet_id: int) -> None:
        """Start the droplet's web listeners; a no-op when running."""
        machine = self._machine(droplet_id)
        with self._lock:
            if droplet_id in self._running:
                return
            listeners = _Listeners(servers=[])
            try:
                for ip in dict.fromkeys((machine.public_ip, machine.private_ip)):
                    listeners.servers.append(self._serve(droplet_id, ip))
            except BaseException:
                _stop(listeners)
                raise
            self._running[droplet_id] = listeners

    def halt(self, droplet_id: int) -> None:
        """Stop the droplet's listeners; its root stays."""
        with self._lock:
            listeners = self._running.pop(droplet_id, None)
        if listeners is not None:
            _stop(listeners)

    def is_running(self, droplet_id: int) -> bool:
        """Whether the droplet's listeners are up."""
        with self._lock:
            return droplet_id in self._running

    def snapshot(self, droplet_id: int, image_id: int) -> int:
        """Copy the droplet's root to images/<image_id>; returns the bytes the snapshot holds."""
        root = self.root(droplet_id)
        if not root.is_dir():
            raise MachineError(f"droplet {droplet_id} has no root at {root}; cannot snapshot it")
        target = self.image_root(image_id)
        staging = Path(tempfile.mkdtemp(prefix=f".new-{image_id}-", dir=target.parent))
        try:
            # a real copy, not hardlinks: a droplet editing a file in place must not touch the image
            shutil.copytree(root, staging / "tree", symlinks=True)
            shutil.rmtree(target, ignore_errors=True)
            (staging / "tree").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return tree_size(target)

    def delete_image(self, image_id: int) -> None:
        """Remove a snapshot's tree; a no-op when it is gone already."""
        shutil.rmtree(self.image_root(image_id), ignore_errors=True)

    def destroy(self, droplet_id: int) -> None:
        """Stop the droplet's listeners and remove everything it had."""
        self.halt(droplet_id)
        shutil.rmtree(self._dir(droplet_id), ignore_errors=True)

    def close(self) -> None:
        """Stop every droplet's listeners; files stay, so boot() brings them back."""
        with self._lock:
            running, self._running = self._running, {}
        for listeners in running.values():
            _stop(listeners)

    def _dir(self, droplet_id: int) -> Path:
        return self.base / "droplets" / str(droplet_id)

    def _machine(self, droplet_id: int) -> _Machine:
        path = self._dir(droplet_id) / "machine.json"
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise MachineError(
                f"no droplet {droplet_id} in {path.parent.parent}; create it first"
            ) from None
        return _Machine(droplet_id, info["public_ip"], info["private_ip"])

    def _serve(self, droplet_id: int, ip: str) -> tuple[_DropletServer, threading.Thread]:
        try:
            server = _DropletServer((ip, self._web_port), lambda: self.web_root(droplet_id))
        except OSError as err:
            raise MachineError(
                f"droplet {droplet_id} cannot serve {ip}:{self._web_port} ({err.strerror}); "
                "stop whatever holds that address or use another network number"
            ) from err
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"droplet-{droplet_id}-web-{ip}",
            daemon=True,
        )
        thread.start()
        return server, thread


def _lay_out_base(root: Path, slug: str) -> None:
    os_id, version, pretty, codename = _BASE_OS.get(slug) or _guess_os(slug)
    for sub in ("tmp", "root", "home", "var/log", "var/www/html", "var/lib/cloud/instance"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    release = (
        f'PRETTY_NAME="{pretty}"\nNAME="{pretty.split(" ")[0]}"\nID={os_id}\n'
        f'VERSION_ID="{version}"\nVERSION_CODENAME={codename}\n'
        f"SCALER_LOCAL_IMAGE={slug}\n"
    )
    _write(root / "etc" / "os-release", release)
    _write(root / "etc" / "hosts", "127.0.0.1 localhost\n")


def _guess_os(slug: str) -> tuple[str, str, str, str]:
    # an image this table does not know still boots, as a plain Linux named after its slug
    os_id = slug.split("-", 1)[0] or "linux"
    return os_id, "", slug, ""


def _write(path: Path, text: str) -> None:
    """Write text atomically, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def tree_size(root: Path) -> int:
    """Bytes of the regular files under root (a snapshot's size)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _stop(listeners: _Listeners) -> None:
    for server, _thread in listeners.servers:
        server.shutdown()
        server.server_close()
    for _server, thread in listeners.servers:
        thread.join(timeout=5)
