"""The doc root setgid step with real Ansible: the tutorial's per-directory loop vs one command.

Copies a WordPress tree (Debian's /usr/share/wordpress by default, symlinks followed) into a real
local droplet, then runs two playbooks through scaler.provision (ansible-runner, over SSH into that
droplet, as a bake runs them) on the build host alias:

  loop: `find -type d` registered, then one `file: mode=g+s` item per directory (the tutorial)
  one:  `find <docroot> -type d ! -perm -2000 -print -exec chmod g+s {} +` (ansible-welp)

Usage: python bench/setgid.py [--src DIR] [--dirs N]
  --dirs N caps the loop at its first N directories (the full loop takes minutes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from scaler.bake import ed25519_key_pair, wait_for_ssh
from scaler.cloud import Cloud, DropletSpec, Pacing
from scaler.local.api import Delays, LocalCloud
from scaler.provision import SshConnection, run_playbook, wait_for_first_boot

INVENTORY: dict[str, Any] = {"all": {"children": {"wp_node": {"hosts": {"packerbox": {}}}}}}
DOCROOT = "/var/www/bench"  # inside the droplet


def boot(cloud: LocalCloud, work: Path) -> tuple[int, SshConnection]:
    """A running debian-12-x64 droplet, reachable as root over SSH once its first boot is done."""
    private, public = ed25519_key_pair(work)
    client = Cloud("bench", cloud.endpoint, pacing=Pacing.fast(0.05))
    key = client.create_key("setgid-bench", public)
    spec = DropletSpec("setgid", "nyc3", "s-1vcpu-1gb", "debian-12-x64", ssh_keys=(key.id,))
    droplet = client.wait_for_droplet_active(client.create_droplet(spec).id, 60)
    assert droplet.public_ip is not None
    connection = SshConnection(droplet.public_ip, "root", private)
    wait_for_ssh(droplet.public_ip, 22, 60)
    wait_for_first_boot(connection, 120)
    return droplet.id, connection


def clear_setgid(root: Path) -> int:
    """Clear the setgid bit on every directory; return how many directories there are."""
    count = 0
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~stat.S_ISGID)
            count += 1
    return count


def count_setgid(root: Path) -> int:
    return sum(
        1 for p in [root, *root.rglob("*")] if p.is_dir() and p.stat().st_mode & stat.S_ISGID
    )


def loop_play(docroot: Path, cap: int | None) -> list[dict[str, Any]]:
    dirs = "dirs.stdout_lines" + (f"[:{cap}]" if cap else "")
    return [
        {
            "hosts": "packerbox",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "List the doc root directories",
                    "ansible.builtin.command": f"find {docroot} -type d",
                    "register": "dirs",
                    "changed_when": False,
                },
                {
                    "name": "Set setgid per directory",
                    "ansible.builtin.file": {"path": "{{ item }}", "mode": "g+s"},
                    "loop": "{{ " + dirs + " }}",
                    "loop_control": {"label": "{{ item | basename }}"},
                },
            ],
        }
    ]


def one_play(docroot: Path) -> list[dict[str, Any]]:
    return [
        {
            "hosts": "packerbox",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Set setgid with one command",
                    "ansible.builtin.command": {
                        "argv": [
                            "find",
                            str(docroot),
                            "-type",
                            "d",
                            "!",
                            "-perm",
                            "-2000",
                            "-print",
                            "-exec",
                            "chmod",
                            "g+s",
                            "{}",
                            "+",
                        ]
                    },
                    "register": "setgid",
                    "changed_when": "setgid.stdout | length > 0",
                }
            ],
        }
    ]


def timed(
    work: Path, name: str, play: list[dict[str, Any]], connection: SshConnection
) -> tuple[float, float]:
    """Run a play; return (whole ansible-playbook run, the setgid task alone) in seconds."""
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    task_seconds: list[float] = []

    def progress(line: str) -> None:
        found = re.search(r"\] Set setgid.* \((\d+(?:\.\d+)?)s\)$", line)
        if found:
            task_seconds.append(float(found.group(1)))

    result = run_playbook(INVENTORY, playbook=path, connection=connection, on_progress=progress)
    return result.duration, sum(task_seconds)


def main(argv: list[str] | None = None) -> int:
    """Print directory count and seconds for the loop and the one command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=Path("/usr/share/wordpress"))
    parser.add_argument("--dirs", type=int, default=None, help="cap the loop at N directories")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(
            f"no WordPress tree at {args.src}; apt-get install wordpress or pass --src",
            file=sys.stderr,
        )
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="scaler-bench-") as tmp,
        LocalCloud(Path(tmp) / "cloud", droplets="real", delays=Delays.uniform(0.2)) as cloud,
    ):
        work = Path(tmp)
        droplet_id, connection = boot(cloud, work)
        # the tree, as this host sees the droplet's root
        docroot = Path(cloud.machines.root(droplet_id)) / DOCROOT.lstrip("/")
        shutil.copytree(args.src, docroot, symlinks=False)
        total = clear_setgid(docroot)
        looped = min(total, args.dirs) if args.dirs else total
        print(f"tree: {args.src} copied into droplet {droplet_id}, {total} directories")

        loop_run, loop_task = timed(work, "loop", loop_play(Path(DOCROOT), args.dirs), connection)
        loop_done = count_setgid(docroot)
        clear_setgid(docroot)
        one_run, one_task = timed(work, "one", one_play(Path(DOCROOT)), connection)
        one_done = count_setgid(docroot)

        print(f"{'variant':<28}{'dirs':>6}{'task s':>10}{'run s':>10}")
        print(f"{'loop (file per directory)':<28}{looped:>6}{loop_task:>10.1f}{loop_run:>10.1f}")
        print(f"{'one find -exec chmod':<28}{total:>6}{one_task:>10.1f}{one_run:>10.1f}")
        if looped < total and looped:
            print(f"loop extrapolated to {total} directories: {loop_task * total / looped:.1f} s")
        if loop_done != looped or one_done != total:
            print(f"setgid count mismatch: loop {loop_done}/{looped}, one {one_done}/{total}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
