"""`scaler bake` against `packer build` (Debian packer 1.6.6), both on real local droplets.

Every row builds from debian-12-x64 on one local cloud with real droplets (Linux hosts of their
own) and its default delays (boot 2 s, actions 1 s, snapshot 2 s, transfer 1 s), runs
packer-build.yml (role ansible-welp: apt installs nginx, PHP-FPM and Debian's wordpress in the
build droplet through the local cloud's mirror; the same extra vars) over SSH with the
Terraform-state inventory, snapshots, copies to one extra region (ams3) and cleans up:

  scaler (ssh)      `scaler bake`: waits for cloud-init's first boot, then Ansible over SSH
  packer (ansible)  Packer's own ansible provisioner, over its SSH proxy adapter, after a shell
                    provisioner that waits for cloud-init (else apt's lock is taken by
                    cloud-init's package install). It works only with two workarounds, both
                    applied here: Packer 1.6.6's adapter offers only an ssh-rsa host key, which
                    OpenSSH 8.8+ refuses ("no matching host key type found"), so
                    ANSIBLE_SSH_ARGS re-enables ssh-rsa; and the provisioner no longer passes
                    inventory_directory (1.3.3+), so the Terraform inventory goes in as a second
                    `-i` through extra_arguments (else groups['ha_db_fip'] is undefined).

Prints the median wall time and API requests per tool over --runs rounds (the tools take
turns within a round), and every run's figures. The first round also fills the package cache.

    .venv/bin/python bench/bake.py [--runs N] [--timing realistic] [--tools scaler]

--timing realistic runs the cloud at DigitalOcean's pace (`scaler local up --timing realistic`:
boot ~35 s, snapshots minutes per GB, transfers a minute and more, lags after actions); --tools
scaler keeps the scaler rows only (Packer's take as long again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scaler.inventory import build_inventory, list_json
from scaler.local.api import Delays, LocalCloud
from scaler.provision import to_static_inventory
from scaler.state import read_state

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "examples" / "terraform.tfstate"
TEMPLATE = ROOT.parent / "shared" / "data" / "packer" / "wp-node.json"
EXTRA = {"welp_db_password": "bench", "welp_wordpress_package": "wordpress"}


def run_scaler(cloud: LocalCloud, work: Path) -> float:
    env = {**os.environ, **cloud.env()}
    args = [str(Path(sys.executable).parent / "scaler"), "bake", "--state", str(STATE)]
    args += ["--snapshot-region", "ams3", "--image", "debian-12-x64", "--region", "nyc3"]
    args += ["--manifest", str(work / "manifest.json"), "--project", "bench"]
    for key, value in EXTRA.items():
        args += ["-e", f"{key}={value}"]
    started = time.monotonic()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def run_packer(cloud: LocalCloud, work: Path) -> float:
    inventory = to_static_inventory(list_json(build_inventory(read_state(STATE))))
    (work / "inventory.json").write_text(json.dumps(inventory))
    (work / "vars.json").write_text(json.dumps(EXTRA))
    template = json.loads(TEMPLATE.read_text())
    (builder,) = template["builders"]
    builder.update(
        api_url=cloud.url,
        api_token="bench-token",
        image="debian-12-x64",
        region="nyc3",
        snapshot_name="packer-bench-{{timestamp}}",
        snapshot_regions=["ams3"],
        user_data_file=str(ROOT / "config" / "cloud-config.yaml"),
    )
    template["variables"] = {}
    template["provisioners"] = [
        {
            "type": "shell",
            "inline": ["while [ ! -e /var/lib/cloud/instance/boot-finished ]; do sleep 1; done"],
        },
        {
            "type": "ansible",
            "playbook_file": str(ROOT / "packer-build.yml"),
            "host_alias": "packerbox",
            "groups": ["all", "wp_node"],
            "user": "root",
            "extra_arguments": [
                *("-i", str(work / "inventory.json"), "-e", f"@{work / 'vars.json'}"),
                *("-e", "ansible_python_interpreter=/usr/bin/python3"),
            ],
            "ansible_env_vars": [
                f"ANSIBLE_ROLES_PATH={ROOT / 'roles'}",
                "ANSIBLE_HOST_KEY_CHECKING=False",
                "ANSIBLE_PIPELINING=True",
                "ANSIBLE_SSH_ARGS=-o HostKeyAlgorithms=+ssh-rsa"
                " -o PubkeyAcceptedAlgorithms=+ssh-rsa",
            ],
        },
    ]
    template["post-processors"] = [{"type": "manifest", "output": str(work / "packer.json")}]
    (work / "wp-node.json").write_text(json.dumps(template))
    env = {
        **os.environ,
        # the ansible provisioner runs ansible-playbook from PATH: the venv's
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "HOME": str(work),
        "PACKER_CONFIG_DIR": str(work),
        "PACKER_CACHE_DIR": str(work / "cache"),
        "CHECKPOINT_DISABLE": "1",
    }
    started = time.monotonic()
    subprocess.run(
        ["packer", "build", "wp-node.json"],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timing", choices=("default", "realistic"), default="default")
    parser.add_argument("--tools", choices=("all", "scaler"), default="all")
    args = parser.parse_args()
    if args.tools == "all" and shutil.which("packer") is None:
        sys.exit("packer is not installed (Debian package packer)")
    delays = Delays.realistic() if args.timing == "realistic" else None
    with tempfile.TemporaryDirectory(prefix="bench-bake-") as tmp:
        base = Path(tmp)
        with LocalCloud(base / "cloud", droplets="real", delays=delays) as cloud:
            runners: dict[str, Callable[[LocalCloud, Path], float]] = {
                "scaler (ssh)": run_scaler,
                "packer (ansible)": run_packer,
            }
            if args.tools == "scaler":
                runners = {k: v for k, v in runners.items() if k.startswith("scaler")}
            results: dict[str, list[tuple[float, int]]] = {name: [] for name in runners}
            for run in range(args.runs):
                for i, (name, runner) in enumerate(runners.items()):
                    work = base / f"{i}-{run}"
                    work.mkdir()
                    cloud.reset_log()
                    took = runner(cloud, work)
                    requests = sum(cloud.counters().values())
                    results[name].append((took, requests))
                    left = cloud.summary()
                    deadline = time.monotonic() + 60  # a deleted droplet lingers (realistic)
                    while left["droplets"] and time.monotonic() < deadline:
                        time.sleep(1)
                        cloud.settle()
                        left = cloud.summary()
                    assert left["droplets"] == 0 and left["ssh_keys"] == 0, left
            head = f"{'tool':<16}{'wall s (median)':>16}{'API requests (median)':>23}"
            print(head + "  runs (s/requests)")
            for name, rows in results.items():
                wall = statistics.median(t for t, _ in rows)
                reqs = statistics.median(n for _, n in rows)
                each = ", ".join(f"{t:.1f}/{n}" for t, n in rows)
                print(f"{name:<16}{wall:>16.1f}{reqs:>23g}  {each}")


if __name__ == "__main__":
    main()
