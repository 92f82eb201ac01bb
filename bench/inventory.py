"""How fast is inventory/scaler-inventory? Ansible runs it at the start of every command.

Generates states of 20, 1,000 and 10,000 droplets (version 4 and version 3), runs
`inventory/scaler-inventory --list` on each as Ansible does (executed through its shebang, with
this interpreter's bin directory first on PATH), and prints the median wall time beside
`python3 -c pass` on the same interpreter (sys.executable).
Targets: 20 droplets within 2x of `python3 -c pass`; 10,000 droplets under 1 second.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "inventory" / "scaler-inventory"
SIZES = (20, 1_000, 10_000)


def _droplet_attributes(i: int) -> dict[str, Any]:
    return {
        "backups": False,
        "created_at": "2024-03-11T09:14:27Z",
        "disk": 25,
        "graceful_shutdown": False,
        "id": str(400000000 + i),
        "image": "151398426",
        "ipv4_address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        "ipv4_address_private": f"172.16.{i // 256 % 256}.{i % 256}",
        "ipv6": False,
        "ipv6_address": "",
        "locked": False,
        "memory": 1024,
        "monitoring": True,
        "name": f"wp-node-{i}",
        "price_hourly": 0.00893,
        "price_monthly": 6,
        "private_networking": True,
        "region": "nyc3",
        "resize_disk": True,
        "size": "s-1vcpu-1gb",
        "ssh_keys": ["41:23:be:0c:9a:55:6e:13:f0:2d:8a:9b:c4:77:01:5e"],
        "status": "active",
        "tags": ["wordpress", "wp_node"],
        "urn": f"do:droplet:{400000000 + i}",
        "user_data": "0b5c0bb0e4a9d1e6a1c9e0f3e5a2b7d4c8f1e2a3",
        "vcpus": 1,
        "volume_ids": [],
        "vpc_uuid": "5a4f3d2e-1c0b-4a9e-8d7c-6b5a4f3e2d1c",
    }


def state_v4(count: int) -> dict[str, Any]:
    """A version-4 state with `count` wp_node droplets."""
    instances = [
        {"index_key": i, "schema_version": 1, "attributes": _droplet_attributes(i)}
        for i in range(count)
    ]
    return {
        "version": 4,
        "terraform_version": "1.5.7",
        "serial": 1,
        "lineage": "bench",
        "outputs": {"lb_ip": {"value": "203.0.113.80", "type": "string"}},
        "resources": [
            {
                "mode": "managed",
                "type": "digitalocean_droplet",
                "name": "wp_node",
                "provider": 'provider["registry.terraform.io/digitalocean/digitalocean"]',
                "instances": instances,
            }
        ],
    }


def _flat(attributes: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in attributes.items():
        if isinstance(value, list):
            flat[f"{key}.#"] = str(len(value))
            for n, item in enumerate(value):
                flat[f"{key}.{n}"] = str(item)
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"
        else:
            flat[key] = str(value)
    return flat


def state_v3(count: int) -> dict[str, Any]:
    """A version-3 state (Terraform 0.11) with `count` wp_node droplets."""
    resources = {
        f"digitalocean_droplet.wp_node.{i}": {
            "type": "digitalocean_droplet",
            "depends_on": [],
            "primary": {
                "id": str(400000000 + i),
                "attributes": _flat(_droplet_attributes(i)),
                "meta": {"schema_version": "1"},
                "tainted": False,
            },
            "deposed": [],
            "provider": "provider.digitalocean",
        }
        for i in range(count)
    }
    return {
        "version": 3,
        "terraform_version": "0.11.14",
        "serial": 1,
        "lineage": "bench",
        "modules": [
            {
                "path": ["root"],
                "outputs": {
                    "lb_ip": {"sensitive": False, "type": "string", "value": "203.0.113.80"}
                },
                "resources": resources,
                "depends_on": [],
            }
        ],
    }


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of `runs` runs of argv (output discarded, failures raise)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Print the figures, one line per state, and whether the targets are met."""
    env = dict(os.environ)
    # As on a user's machine: Python caches bytecode, so scaler's modules compile once, not on
    # every run (some CI images set PYTHONDONTWRITEBYTECODE; that adds about 8 ms a run).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    baseline = median_seconds([sys.executable, "-c", "pass"], env, 30)
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]})")
    print(f"python3 -c pass: {baseline * 1000:7.1f} ms (median of 30)")
    print(f"{'state':<22}{'size':>9}  {'script --list':>14}  {'python3 -c pass':>16}  ratio")
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            for label, make in (("v4", state_v4), ("v3", state_v3)):
                path = Path(tmp) / f"{label}-{size}.tfstate"
                path.write_text(json.dumps(make(size)))
                env["TF_STATE"] = str(path)
                runs = 30 if size <= 1_000 else 7
                subprocess.run(
                    [str(SCRIPT), "--list"], env=env, stdout=subprocess.DEVNULL, check=True
                )
                # Executed directly, as Ansible does: the shebang finds python3 on PATH.
                took = median_seconds([str(SCRIPT), "--list"], env, runs)
                base = median_seconds([sys.executable, "-c", "pass"], env, runs)
                mb = path.stat().st_size / 1e6
                print(
                    f"{label} {size:>6} droplets{mb:>8.1f}MB  {took * 1000:11.1f} ms  "
                    f"{base * 1000:13.1f} ms  {took / base:5.2f}x"
                )
                if size == 20:
                    verdicts.append((f"{label} 20 droplets within 2x", took <= 2 * base))
                if size == 10_000:
                    verdicts.append((f"{label} 10,000 droplets under 1 s", took < 1.0))
    for text, ok in verdicts:
        print(f"target {text}: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
