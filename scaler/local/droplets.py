"""Real local droplets: each one a Linux host of its own on this machine (the local cloud's runner).

A droplet is a set of namespaces, not a directory on the host:

- network: its own namespace with its public and private 127.N.x.k addresses, reached over a
  veth pair (netns.py); nothing outside the local cloud is reachable from it but the package
  mirror (mirror.py);
- PID, mount, UTS, IPC and cgroup namespaces with the image's own systemd as PID 1
  (droplet_boot.py mounts its root and starts it, as a container manager does), which runs
  cloud-init with the droplet's user data (NoCloud seed) and the services the image enables;
- its root: an overlay of its image's layers (a base tree built with mmdebstrap, images.py, and
  the layer of the snapshot it was made from) under a writable layer of its own.

SSH to a droplet's address reaches the droplet's own sshd inside its namespaces (port 22), HTTP
its own web server (port 80): provisioning a droplet can never reach this host. Droplets reach
each other's addresses (routed by this host between their veths), a reserved IP reaches the
droplet it is assigned to, and cloud firewalls filter in each droplet's namespace (set_policies,
firewall.py).

On disk, under state_dir/machines:

    droplets/<id>/machine.json   addresses, hostname, image layers, the keys it was created with
    droplets/<id>/upper, work    its writable layer (overlayfs upper and work dirs)
    droplets/<id>/console.log    what its init and the namespace tools print
    images/<id>/layer            a snapshot: the droplet's writable layer when it was taken
    images/<id>/image.json       the layers below it (its droplet's image layers)

A snapshot leaves out what must differ per droplet: SSH host keys, the machine-id, cloud-init's
instance data (the user data, which may hold secrets such as a build's host key) and the keys the
droplet was created with (the bake's temporary key). A droplet from the snapshot gets new ones on
first boot, as a DigitalOcean droplet does.

Real droplets need root, the `ip`, `nsenter`, `unshare`, `mount` and `nft` tools, overlayfs,
apt-cacher-ng, and mmdebstrap (or an already built base image); `unavailable()` says what is
missing. Where they cannot run, the local cloud uses directory droplets (machines.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scaler.events import Say
from scaler.fsutil import write_atomic
from scaler.local import firewall, images, mirror, netns
from scaler.local.machines import MachineError, tree_size

DropletKind = Literal["real", "directory", "auto"]
"""Which droplets a local cloud runs; auto: real ones where unavailable() finds nothing missing."""

_TOOLS = ("ip", "nsenter", "unshare", "mount", "cp")
_STOP_TIMEOUT = 30.0


def unavailable() -> str | None:
    """Why real droplets cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "real droplets need root (namespaces, veths, mounts)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"real droplets need {', '.join(missing)} (Debian packages iproute2, util-linux)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if shutil.which("nft") is None and not Path("/usr/sbin/nft").exists():
        return "real droplets need nft (Debian package nftables) for their cloud firewalls"
    if "overlay" not in filesystems:
        return "real droplets need overlayfs, which this kernel does not offer"
    if shutil.which("apt-cacher-ng") is None and not Path("/usr/sbin/apt-cacher-ng").exists():
        return "real droplets need apt-cacher-ng (Debian package apt-cacher-ng) as their mirror"
    if shutil.which("mmdebstrap") is None and not any(images.cache_dir().glob("debian-12-x64-*")):
        return "real droplets need mmdebstrap (Debian package mmdebstrap) to build their image"
    return None


def prepare_base_image(progress: Say) -> Path:
    """Build the default base image now if it is not cached (with the mirror up meanwhile)."""
    use = mirror.Mirror()
    proxy = use.acquire()
    try:
        return images.ensure_base_image(
            images.FALLBACK_IMAGE, mirror_proxy=proxy, progress=progress
        )
    finally:
        use.release()


def _parent_death_kill() -> None:
    # The namespace tools die with the local cloud, even on kill -9 (then init dies with them).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class RealMachines:
    """The real droplets of one local cloud, kept under state_dir/machines."""

    kind = "real"

    def __init__(self, state_dir: Path, network: int, *, warn: Say | None = None) -> None:
        self.base = Path(state_dir).resolve() / "machines"
        (self.base / "droplets").mkdir(parents=True, exist_ok=True)
        (self.base / "images").mkdir(parents=True, exist_ok=True)
        self.network = network
        self._warn = warn or (lambda message: print(f"scaler local: {message}", file=sys.stderr))
        self._lock = threading.RLock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._mirror = mirror.Mirror()
        # What each droplet's network must hold (reserved IPs, firewall), and what the running
        # ones hold now: set_policies applies the difference, boot applies it all.
        self._wanted: dict[int, firewall.Policy] = {}
        self._applied: dict[int, firewall.Policy] = {}
        # This cloud holds network number `network` now: any namespace or veth of that number
        # is what a killed cloud left behind.
        for name in netns.sweep(network):
            self._warn(f"removed {name}, left by a local cloud that was killed")
        # The namespace tools get SIGKILL when the thread that started them ends (parent-death
        # signal), so one long-lived thread starts them all: they end with the local cloud.
        self._spawns: queue.Queue[tuple[list[str], Path, Future[subprocess.Popen[bytes]]]]
        self._spawns = queue.Queue()
        threading.Thread(target=self._spawner, name="droplet-spawner", daemon=True).start()

    def prepare(self) -> None:
        """Start the mirror and build the default base image now (not on a first create)."""
        self._layers_of(images.FALLBACK_IMAGE)

    # -- what the API reports

    def web_port(self) -> int:
        """A droplet's port 80 is its own: every droplet has its own address and namespace."""
        return 80

    def ssh_port(self) -> int:
        """Every droplet runs its own sshd on port 22."""
        return 22

    # -- lifecycle

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
        """Lay out the droplet (its layers, its cloud-init seed), then boot it."""
        folder = self._dir(droplet_id)
        if folder.exists():
            raise MachineError(f"droplet {droplet_id} already exists at {folder}; destroy it first")
        lower = self._layers_of(image)
        staging = Path(tempfile.mkdtemp(prefix=f".new-{droplet_id}-", dir=folder.parent))
        try:
            upper = staging / "upper"
            for sub in ("upper", "work", "merged"):
                (staging / sub).mkdir()
            seed = upper / "var" / "lib" / "cloud" / "seed" / "nocloud"
            seed.mkdir(parents=True, mode=0o700)
            name = hostname or f"droplet-{droplet_id}"
            keys = [k.strip() for k in authorized_keys if k.strip()]
            meta = {
                "instance-id": f"i-{droplet_id}-{os.urandom(4).hex()}",
                "local-hostname": name,
                "public-keys": keys,
            }
            _write_private(seed / "meta-data", json.dumps(meta, indent=1) + "\n")
            _write_private(seed / "user-data", user_data or "")
            info = {
                "droplet_id": droplet_id,
                "public_ip": public_ip,
                "private_ip": private_ip,
                "hostname": name,
                "lower": [str(p) for p in lower],
                "keys": keys,
            }
            write_atomic(staging / "machine.json", json.dumps(info, indent=1) + "\n")
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.boot(droplet_id)

    def boot(self, droplet_id: int) -> None:
        """Start the droplet's namespaces and init; a no-op when it runs."""
        info = self._info(droplet_id)
        with self._lock:
            if droplet_id in self._running and self._running[droplet_id].poll() is None:
                return
            self._mirror.acquire()
            net = self._net(info)
            netns.attach(net, extra_routes=(f"{mirror.ADDRESS}/32",))
            # Its reserved IPs and firewall before its init starts: no service runs unfiltered.
            self._applied.pop(droplet_id, None)  # a fresh veth and namespace hold nothing yet
            try:
                self._apply_policy(droplet_id, net)
            except (netns.NetnsError, firewall.FirewallError) as err:
                netns.detach(net)
                raise MachineError(f"droplet {droplet_id} cannot start: {err}") from err
            folder = self._dir(droplet_id)
            spec = {
                "merged": str(folder / "merged"),
                "upper": str(folder / "upper"),
                "work": str(folder / "work"),
                "lower": list(info.lower),
                "hostname": info.hostname,
            }
            write_atomic(folder / "boot.json", json.dumps(spec) + "\n")
            argv = [
                "nsenter",
                f"--net={net.netns_path}",
                "--",
                "unshare",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--cgroup",
                "--fork",
                "--kill-child",
                sys.executable,
                "-I",
                str(Path(__file__).with_name("droplet_boot.py")),
                str(folder / "boot.json"),
            ]
            started: Future[subprocess.Popen[bytes]] = Future()
            self._spawns.put((argv, folder / "console.log", started))
            try:
                proc = started.result(timeout=30)
            except OSError as err:
                netns.detach(net)
                raise MachineError(f"droplet {droplet_id} cannot start: {err}") from err
            self._running[droplet_id] = proc

    def set_policies(self, policies: dict[int, firewall.Policy]) -> None:
        """Make every running droplet's reserved IPs and firewall what `policies` says."""
        with self._lock:
            self._wanted = dict(policies)
            # Addresses leave the droplets losing them before they reach the ones gaining them.
            order = sorted(
                self._running,
                key=lambda i: (
                    len(self._wanted.get(i, firewall.OPEN).reserved_ips)
                    - len(self._applied.get(i, firewall.OPEN).reserved_ips)
                ),
            )
            for droplet_id in order:
                if self._running[droplet_id].poll() is not None:
                    continue
                try:
                    self._apply_policy(droplet_id, self._net(self._info(droplet_id)))
                except (MachineError, OSError, netns.NetnsError, firewall.FirewallError) as err:
                    self._warn(f"droplet {droplet_id}: network not updated: {err}")

    def _apply_policy(self, droplet_id: int, net: netns.DropletNet) -> None:
        want = self._wanted.get(droplet_id, firewall.OPEN)
        have = self._applied.get(droplet_id, firewall.OPEN)
        if want == have:
            return
        if want.reserved_ips != have.reserved_ips:
            netns.set_reserved_ips(net, have.reserved_ips, want.reserved_ips)
        if (want.firewalled, want.inbound, want.outbound) != (
            have.firewalled,
            have.inbound,
            have.outbound,
        ):
            firewall.apply(net.namespace, want)
        self._applied[droplet_id] = want

    def halt(self, droplet_id: int) -> None:
        """Shut the droplet down cleanly (its init stops its services), then its network."""
        with self._lock:
            proc = self._running.pop(droplet_id, None)
            self._applied.pop(droplet_id, None)
        if proc is not None:
            _stop(proc)
        with contextlib.suppress(MachineError):
            netns.detach(self._net(self._info(droplet_id)))

    def is_running(self, droplet_id: int) -> bool:
        """Whether the droplet's init runs."""
        with self._lock:
            proc = self._running.get(droplet_id)
            return proc is not None and proc.poll() is None

    def init_pid(self, droplet_id: int) -> int | None:
        """The host's pid of the droplet's init (PID 1 inside), or None when it is not running."""
        with self._lock:
            proc = self._running.get(droplet_id)
        if proc is None or proc.poll() is not None:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            return int(children[0])
        return None

    def root(self, droplet_id: int) -> Path:
        """The running droplet's root as this host sees it (/proc/<init>/root)."""
        pid = self.init_pid(droplet_id)
        if pid is None:
            raise MachineError(f"droplet {droplet_id} is not running; its root is not mounted")
        return Path(f"/proc/{pid}/root")

    def state(self, droplet_id: int) -> str:
        """What its systemd says of itself (`systemctl is-system-running`); "" when not running."""
        pid = self.init_pid(droplet_id)
        if pid is None:
            return ""
        argv = ["nsenter", "-t", str(pid), "-m", "-p", "-u", "-i", "-r", "-w"]
        done = subprocess.run(
            [*argv, "systemctl", "is-system-running"], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    def snapshot(self, droplet_id: int, image_id: int) -> int:
        """Keep the droplet's writable layer as image image_id; returns the bytes it holds."""
        info = self._info(droplet_id)
        target = self.image_root(image_id)
        staging = Path(tempfile.mkdtemp(prefix=f".new-{image_id}-", dir=self.base / "images"))
        try:
            layer = staging / "layer"
            done = subprocess.run(
                ["cp", "-a", str(self._dir(droplet_id) / "upper"), str(layer)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise MachineError(
                    f"cannot snapshot droplet {droplet_id}: {done.stderr.strip()[:200]}"
                )
            _generalize(layer, info.keys)
            write_atomic(
                staging / "image.json", json.dumps({"lower": list(info.lower)}, indent=1) + "\n"
            )
            shutil.rmtree(target.parent, ignore_errors=True)
            staging.rename(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return tree_size(target) + sum(tree_size(Path(p)) for p in info.lower)

    def image_root(self, image_id: int) -> Path:
        """The layer a snapshot holds (the files its droplet changed or added)."""
        return self.base / "images" / str(image_id) / "layer"

    def delete_image(self, image_id: int) -> None:
        """Remove a snapshot; its layer stays while a droplet or snapshot still builds on it."""
        folder = self.base / "images" / str(image_id)
        if folder.is_dir():
            (folder / "deleted").touch()
        self._collect()

    def destroy(self, droplet_id: int) -> None:
        """Stop the droplet and remove everything it had: processes, network, layers."""
        with contextlib.suppress(MachineError):
            self.halt(droplet_id)
        shutil.rmtree(self._dir(droplet_id), ignore_errors=True)
        self._collect()

    def close(self) -> None:
        """Shut every droplet down (in parallel); files stay, so boot() brings them back."""
        with self._lock:
            running, self._running = self._running, {}
            self._applied.clear()
        for proc in running.values():
            _signal_init(proc, _POWEROFF)
        for droplet_id, proc in running.items():
            _stop(proc)
            with contextlib.suppress(MachineError):
                netns.detach(self._net(self._info(droplet_id)))
        self._mirror.release()

    # -- internals

    def _spawner(self) -> None:
        while True:
            argv, log, started = self._spawns.get()
            try:
                with open(log, "ab") as console:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=console,
                        stderr=console,
                        preexec_fn=_parent_death_kill,
                    )
            except OSError as err:
                started.set_exception(err)
            else:
                started.set_result(proc)

    def _dir(self, droplet_id: int) -> Path:
        return self.base / "droplets" / str(droplet_id)

    def _info(self, droplet_id: int) -> _Info:
        path = self._dir(droplet_id) / "machine.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise MachineError(f"no droplet {droplet_id} in {path.parent.parent}") from None
        return _Info(
            droplet_id=int(raw["droplet_id"]),
            public_ip=str(raw["public_ip"]),
            private_ip=str(raw["private_ip"]),
            hostname=str(raw["hostname"]),
            lower=tuple(str(p) for p in raw["lower"]),
            keys=tuple(str(k) for k in raw["keys"]),
        )

    def _net(self, info: _Info) -> netns.DropletNet:
        return netns.DropletNet(self.network, info.droplet_id, info.public_ip, info.private_ip)

    def _layers_of(self, image: str | int) -> list[Path]:
        if isinstance(image, int):
            folder = self.base / "images" / str(image)
            try:
                lower = json.loads((folder / "image.json").read_text())["lower"]
            except (OSError, ValueError, KeyError):
                raise MachineError(f"no snapshot {image} in {folder.parent}") from None
            return [folder / "layer", *(Path(p) for p in lower)]
        slug = images.real_slug(image, self._warn)
        proxy = self._mirror.acquire()  # the build fetches its packages through it, too
        return [images.ensure_base_image(slug, mirror_proxy=proxy, progress=self._warn)]

    def _collect(self) -> None:
        # Layers of deleted snapshots go once nothing builds on them.
        used: set[str] = set()
        for path in (self.base / "droplets").glob("*/machine.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                used.update(json.loads(path.read_text())["lower"])
        folders = [p for p in (self.base / "images").iterdir() if p.is_dir()]
        for folder in folders:
            if not (folder / "deleted").exists():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used.update(json.loads((folder / "image.json").read_text())["lower"])
        for folder in folders:
            if (folder / "deleted").exists() and str(folder / "layer") not in used:
                shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class _Info:
    """What machine.json holds for one droplet."""

    droplet_id: int
    public_ip: str
    private_ip: str
    hostname: str
    lower: tuple[str, ...]
    keys: tuple[str, ...]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _generalize(layer: Path, created_with: tuple[str, ...]) -> None:
    """Strip what must be new on each droplet from a snapshot's layer (see the module doc)."""
    for key in (layer / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(layer / "var" / "lib" / "cloud", ignore_errors=True)
    (layer / "var" / "log" / "scaler-init.log").unlink(missing_ok=True)
    machine_id = layer / "etc" / "machine-id"
    if machine_id.exists():
        machine_id.write_text("")
    keys = {_key(k) for k in created_with}
    homes = [layer / "root", *(layer / "home").glob("*")]
    for home in homes:
        path = home / ".ssh" / "authorized_keys"
        if keys and path.is_file():
            kept = [line for line in path.read_text().splitlines(True) if _key(line) not in keys]
            path.write_text("".join(kept))


def _key(line: str) -> str:
    # "[options] ssh-ed25519 AAAA... [comment]" -> "ssh-ed25519 AAAA...": the key itself
    parts = line.strip().split()
    for i, part in enumerate(parts):
        if part.startswith(("ssh-", "ecdsa-", "sk-")):
            return " ".join(parts[i : i + 2])
    return line.strip()


def _signal_init(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(children[0]), sig)


# systemd as a container's init powers off on SIGRTMIN+4: it stops every unit, then exits.
_POWEROFF = signal.SIGRTMIN + 4


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    _signal_init(proc, _POWEROFF)
    try:
        proc.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()  # unshare --kill-child then kills init, and the kernel the rest
        proc.wait(timeout=10)
