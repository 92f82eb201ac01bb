"""Real Ansible provisions local-cloud droplets, both documented ways: the local connection
confined to the droplet's root by the role's path variable (welp_root), and SSH through the
droplet's own loopback sshd with its ssh_keys as authorized keys. A droplet that was not baked
fails the HTTP health check; after packer-build.yml it passes."""

from __future__ import annotations

import getpass
import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import cloud_api as _api
from conftest import need

from scaler.local.api import LocalCloud
from scaler.provision import (
    PLAYBOOK,
    LocalConnection,
    ProvisionFailed,
    SshConnection,
    run_playbook,
)

pytestmark = pytest.mark.slow

WORDPRESS = Path("/usr/share/wordpress")
DOCROOT = "var/www/wordpress"


def _health(ip: str, port: int) -> tuple[int, bytes]:
    """The load balancer's check: GET / on the droplet's address."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _droplet(cloud: LocalCloud, name: str, ssh_keys: list[int] | None = None) -> dict[str, Any]:
    body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
    droplet: dict[str, Any] = _api(cloud, "POST", "droplets", body | {"ssh_keys": ssh_keys or []})[
        "droplet"
    ]
    deadline = time.monotonic() + 10
    while droplet["status"] != "active":
        assert time.monotonic() < deadline, droplet
        time.sleep(0.05)
        droplet = _api(cloud, "GET", f"droplets/{droplet['id']}")["droplet"]
    return droplet


def _public_ip(droplet: dict[str, Any]) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")


def _inventory(cloud: LocalCloud, build_ip: str) -> dict[str, Any]:
    """The bake's inventory: the build host packerbox, and ha_db_fip as a real floating IP."""
    fip = _api(cloud, "POST", "floating_ips", {"region": "nyc3"})["floating_ip"]["ip"]
    return {
        "all": {"hosts": ["packerbox", "fip-0"]},
        "wp_node": {"hosts": ["packerbox"]},
        "ha_db_fip": {"hosts": ["fip-0"]},
        "_meta": {
            "hostvars": {"packerbox": {"ansible_host": build_ip}, "fip-0": {"ip_address": fip}}
        },
    }


def _confined(**more: Any) -> dict[str, Any]:
    """A run that writes only under welp_root: no become, no packages, no services."""
    return {
        "welp_become": False,
        "welp_install_packages": False,
        "welp_manage_services": False,
        "welp_owner": pwd.getpwuid(os.getuid()).pw_name,
        "welp_group": grp.getgrgid(os.getgid()).gr_name,
        "welp_db_password": "local-secret",
        "welp_wordpress_src_dir": str(WORDPRESS),
        **more,
    }


def _assert_baked(cloud: LocalCloud, droplet: dict[str, Any], db_host: str) -> None:
    root = cloud.machines.root(droplet["id"])
    assert (root / "etc/scaler/webroot").read_text().strip() == "/var/www/wordpress"
    config = (root / DOCROOT / "wp-config.php").read_text()
    assert f"define('DB_HOST', '{db_host}');" in config
    status, body = _health(_public_ip(droplet), cloud.machines.web_port())
    assert (status, body) == (200, (WORDPRESS / "index.php").read_bytes())


def test_local_connection_confined_to_the_droplet_root(fresh_cloud: LocalCloud) -> None:
    need(WORDPRESS.is_dir(), f"{WORDPRESS} is absent (Debian package wordpress)")
    droplet = _droplet(fresh_cloud, "packerbox-local")
    ip, port = _public_ip(droplet), fresh_cloud.machines.web_port()
    assert _health(ip, port)[0] == 404  # not baked: the health check fails
    root = fresh_cloud.machines.root(droplet["id"])
    before = sorted(p.name for p in root.parent.iterdir())
    host_marker = Path("/etc/scaler/webroot")  # the role's marker, were it written unconfined
    host_had_marker = host_marker.exists()
    inventory = _inventory(fresh_cloud, ip)

    result = run_playbook(
        inventory,
        playbook=PLAYBOOK,
        connection=LocalConnection(),
        extravars=_confined(welp_root=str(root)),
    )

    assert result.ok and result.stats["packerbox"].changed > 0
    _assert_baked(fresh_cloud, droplet, inventory["_meta"]["hostvars"]["fip-0"]["ip_address"])
    # everything the role wrote went inside the droplet's root
    assert sorted(p.name for p in root.parent.iterdir()) == before
    assert host_marker.exists() == host_had_marker
    # and a snapshot of it starts a droplet that passes the check at once
    action = _api(
        fresh_cloud, "POST", f"droplets/{droplet['id']}/actions", {"type": "snapshot", "name": "wp"}
    )["action"]
    deadline = time.monotonic() + 20
    while _api(fresh_cloud, "GET", f"actions/{action['id']}")["action"]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (image,) = _api(fresh_cloud, "GET", f"droplets/{droplet['id']}/snapshots")["snapshots"]
    body = {"name": "wp-node-1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": int(image["id"])}
    clone = _api(fresh_cloud, "POST", "droplets", body)["droplet"]
    deadline = time.monotonic() + 10
    while clone["status"] != "active":
        assert time.monotonic() < deadline, clone
        time.sleep(0.05)
        clone = _api(fresh_cloud, "GET", f"droplets/{clone['id']}")["droplet"]
    assert _health(_public_ip(clone), port) == (200, (WORDPRESS / "index.php").read_bytes())


# Over SSH the login lands on this machine; the droplet's session carries SCALER_DROPLET_ROOT,
# which the play turns into welp_root before the role runs.
_OVER_SSH = """
- name: Find the droplet's root from its SSH session
  hosts: packerbox
  gather_facts: false
  tasks:
    - name: Read SCALER_DROPLET_ROOT
      ansible.builtin.command: printenv SCALER_DROPLET_ROOT
      register: droplet_root
      changed_when: false
    - name: Confine the role to it
      ansible.builtin.set_fact:
        welp_root: "{{ droplet_root.stdout }}"

- name: The bake's play
  ansible.builtin.import_playbook: PLAYBOOK
"""


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def test_ssh_through_the_droplet_sshd_with_its_keys(
    fresh_cloud: LocalCloud, tmp_path: Path
) -> None:
    need(WORDPRESS.is_dir(), f"{WORDPRESS} is absent (Debian package wordpress)")
    need(shutil.which("ssh") is not None, "the ssh client is not installed")
    need(fresh_cloud.machines.ssh_port() is not None, "sshd is not installed (openssh-server)")
    port = fresh_cloud.machines.ssh_port()
    assert port is not None
    good, wrong = _keygen(tmp_path / "deploy"), _keygen(tmp_path / "stranger")
    key = {"name": "deploy", "public_key": good.with_name("deploy.pub").read_text()}
    key_id = _api(fresh_cloud, "POST", "account/keys", key)["ssh_key"]["id"]
    droplet = _droplet(fresh_cloud, "packerbox-ssh", ssh_keys=[key_id])
    ip = _public_ip(droplet)
    assert _health(ip, fresh_cloud.machines.web_port())[0] == 404
    inventory = _inventory(fresh_cloud, ip)
    # No shared ControlMaster: each run must log in with its own key (a master left by an
    # earlier connection to this address would let any key through).
    inventory["_meta"]["hostvars"]["packerbox"]["ansible_ssh_args"] = (
        "-o ControlMaster=no -o ControlPath=none"
    )
    playbook = tmp_path / "bake-over-ssh.yml"
    playbook.write_text(_OVER_SSH.replace("PLAYBOOK", str(PLAYBOOK)))
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable

    def over_ssh(private_key: Path) -> SshConnection:
        return SshConnection(ip, getpass.getuser(), private_key, port=port, python=python)

    # a key that is not among the droplet's ssh_keys does not get in
    with pytest.raises(ProvisionFailed) as refused:
        run_playbook(
            inventory, playbook=playbook, connection=over_ssh(wrong), extravars=_confined()
        )
    assert "Permission denied (publickey" in str(refused.value)
    assert not (fresh_cloud.machines.root(droplet["id"]) / DOCROOT).exists()

    result = run_playbook(
        inventory, playbook=playbook, connection=over_ssh(good), extravars=_confined()
    )

    assert result.ok and result.stats["packerbox"].changed > 0
    _assert_baked(fresh_cloud, droplet, inventory["_meta"]["hostvars"]["fip-0"]["ip_address"])
    sshd_log = (fresh_cloud.machines.root(droplet["id"]).parent / "sshd.log").read_text()
    assert "Accepted publickey for" in sshd_log
