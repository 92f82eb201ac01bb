"""Start a real local droplet: run inside its new namespaces, mount its root, exec its systemd.

Started by RealMachines (droplets.py) as
`nsenter --net=NETNS -- unshare --pid --mount --uts --ipc --cgroup --fork --kill-child
 <this python> droplet_boot.py SPEC.json`, so this process is PID 1 of the droplet's PID namespace
with mount and cgroup namespaces of its own. It mounts the droplet's overlay root (its image's
layers under its own upper layer) and the kernel filesystems inside it (the cgroup hierarchies
too, which systemd manages from the droplet's own cgroup namespace root), chroots and executes
the image's systemd as the droplet's init, as a container manager does (`container=`). Mounts
live in the droplet's mount namespace only: they vanish with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_DEVICES = {  # name: (major, minor, mode)
    "null": (1, 3, 0o666),
    "zero": (1, 5, 0o666),
    "full": (1, 7, 0o666),
    "random": (1, 8, 0o666),
    "urandom": (1, 9, 0o666),
    "tty": (5, 0, 0o666),
}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, stdin=subprocess.DEVNULL)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    root = Path(spec["merged"])
    _mount("--make-rprivate", "/")
    lower = ":".join(spec["lower"])
    _mount(
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={spec['upper']},workdir={spec['work']}",
        str(root),
    )
    for sub in ("proc", "sys", "dev", "run", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(root / "sys"))
    _mount("--rbind", "/sys/fs/cgroup", str(root / "sys" / "fs" / "cgroup"))
    _mount("-t", "tmpfs", "-o", "nosuid,mode=755,size=16m", "dev", str(root / "dev"))
    dev = root / "dev"
    for name, (major, minor, mode) in _DEVICES.items():
        os.mknod(dev / name, mode | 0o020000, os.makedev(major, minor))
        os.chmod(dev / name, mode)
    for sub in ("pts", "shm"):
        (dev / sub).mkdir()
    _mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620,gid=5", "devpts",
           str(dev / "pts"))  # fmt: skip
    os.symlink("pts/ptmx", dev / "ptmx")
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "shm", str(dev / "shm"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, dev / name)
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=755,size=64m", "run", str(root / "run"))
    (root / "run" / "lock").mkdir(mode=0o1777)
    os.chmod(root / "run" / "lock", 0o1777)
    os.chroot(root)
    os.chdir("/")
    init = "/lib/systemd/systemd"
    env = {"PATH": _PATH, "container": "scaler-local", "TERM": "linux"}
    os.execve(init, [init, "--system"], env)


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

if __name__ == "__main__":
    main()
