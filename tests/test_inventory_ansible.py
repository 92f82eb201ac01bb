"""The tutorial's check through real Ansible: `ansible -i inventory/` sees ha_db_fip's address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need

EXAMPLE = ROOT / "examples" / "terraform.tfstate"
BIN = Path(sys.executable).parent

# The role computes wp_db_host exactly like this.
PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: the database address the ansible-welp role would use
      debug:
        msg: "wp_db_host={{ hostvars[groups['ha_db_fip'][0]]['ip_address'] }}"
"""

# A Terraform 0.11 (version 3) state: the floating IP inside module galera, count droplets.
V3_STATE: dict[str, Any] = {
    "version": 3,
    "terraform_version": "0.11.14",
    "serial": 7,
    "lineage": "0d7c3a52-1f4e-4b8e-9c55-3a2f0e7b9d10",
    "modules": [
        {
            "path": ["root"],
            "outputs": {"lb_ip": {"sensitive": False, "type": "string", "value": "192.0.2.80"}},
            "resources": {
                f"digitalocean_droplet.wp_node.{i}": {
                    "type": "digitalocean_droplet",
                    "primary": {
                        "id": str(1000 + i),
                        "attributes": {
                            "id": str(1000 + i),
                            "ipv4_address": f"192.0.2.{10 + i}",
                            "name": f"wp-node-{i}",
                            "tags.#": "1",
                            "tags.0": "wordpress",
                        },
                        "tainted": False,
                    },
                }
                for i in range(2)
            },
        },
        {
            "path": ["root", "galera"],
            "outputs": {},
            "resources": {
                "digitalocean_floating_ip.ha_db_fip": {
                    "type": "digitalocean_floating_ip",
                    "primary": {
                        "id": "192.0.2.50",
                        "attributes": {
                            "droplet_id": "2000",
                            "id": "192.0.2.50",
                            "ip_address": "192.0.2.50",
                            "region": "nyc3",
                        },
                    },
                }
            },
        },
    ],
}


def _ansible_env(tmp_path: Path, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SCALER_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TF_STATE=str(state),
        HOME=str(tmp_path),
        ANSIBLE_HOME=str(tmp_path / ".ansible"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible" / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


@pytest.fixture(params=["v4-example", "v3-module"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    if request.param == "v4-example":
        return EXAMPLE, "203.0.113.50"
    path = tmp_path / "terraform.tfstate"
    path.write_text(json.dumps(V3_STATE))
    return path, "192.0.2.50"


@pytest.mark.slow
def test_ansible_inventory_list(tmp_path: Path, state: tuple[Path, str]) -> None:
    tool = BIN / "ansible-inventory"
    need(tool.is_file(), "ansible-core is not installed in this environment")
    path, fip = state
    done = subprocess.run(
        [str(tool), "-i", f"{ROOT}/inventory/", "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_ansible_env(tmp_path, path),
    )
    assert done.returncode == 0, done.stderr
    # No warnings: no reserved variable names, no invalid group names.
    assert "WARNING" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    (host,) = doc["ha_db_fip"]["hosts"]
    hostvars = doc["_meta"]["hostvars"][host]
    assert hostvars["ip_address"] == fip
    assert hostvars["ansible_host"] == fip
    assert isinstance(hostvars["droplet_id"], int)
    assert hostvars["terraform_module"] == "module.galera"
    assert len(doc["wp_node"]["hosts"]) in (2, 3)


@pytest.mark.slow
def test_playbook_reads_the_floating_ip(tmp_path: Path, state: tuple[Path, str]) -> None:
    tool = BIN / "ansible-playbook"
    need(tool.is_file(), "ansible-core is not installed in this environment")
    path, fip = state
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    done = subprocess.run(
        [str(tool), "-i", f"{ROOT}/inventory/", "play.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_ansible_env(tmp_path, path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'"msg": "wp_db_host={fip}"' in done.stdout
    assert "WARNING" not in done.stderr, done.stderr


# for_each keys with every kind of character Ansible patterns, INI files or YAML could trip on.
ODD_KEYS = [
    'say "hi"',
    "[0]",
    "*",
    "ünï",
    "tab\tx",
    "host!&",
    "",
    "0x",
    "web-1",
    "www.example.com",
    "eu west",
    "x:y,z",
    "~re",
    "!neg",
    "&and",
    "back\\slash",
]


@pytest.mark.slow
def test_odd_for_each_keys_are_valid_ansible_hosts(tmp_path: Path) -> None:
    inventory_tool, ansible = BIN / "ansible-inventory", BIN / "ansible"
    need(inventory_tool.is_file(), "ansible-core is not installed in this environment")
    path = tmp_path / "terraform.tfstate"
    instances = [
        {"index_key": key, "attributes": {"ipv4_address": f"192.0.2.{n + 1}", "name": key}}
        for n, key in enumerate(ODD_KEYS)
    ]
    resource = {
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": "site",
        "module": 'module.shop["eu west"]',
        "instances": instances,
    }
    path.write_text(json.dumps({"version": 4, "resources": [resource]}))
    env = _ansible_env(tmp_path, path)
    done = subprocess.run(
        [str(inventory_tool), "-i", f"{ROOT}/inventory/", "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    # Nothing on stderr: Ansible shows a script's stderr as [ERROR], and warns about bad names.
    assert done.stderr == ""
    hostvars = json.loads(done.stdout)["_meta"]["hostvars"]
    assert sorted(v["terraform_index"] for v in hostvars.values()) == sorted(ODD_KEYS)
    assert {v["ansible_host"] for v in hostvars.values()} == {
        f"192.0.2.{n + 1}" for n in range(len(ODD_KEYS))
    }
    # Every name works as a host pattern: all of them at once select exactly these hosts.
    listed = subprocess.run(
        [str(ansible), "-i", f"{ROOT}/inventory/", ",".join(hostvars), "--list-hosts"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert listed.returncode == 0, listed.stderr
    words = listed.stdout.split()
    assert words[:2] == ["hosts", f"({len(ODD_KEYS)}):"]
    assert sorted(words[2:]) == sorted(hostvars)
    assert listed.stderr == ""
