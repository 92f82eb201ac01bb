"""Real Ansible on real local droplets: SSH lands inside the droplet (a Linux host of its own,
never this machine), Ansible's service module drives the droplet's own systemd, and a role's
enabled service runs on a droplet made from the baked snapshot with no Ansible run of its own."""

from __future__ import annotations

import ipaddress
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RealDroplet, boot_real_droplet, cloud_api

from scaler.bake import bake_image
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, Timeouts
from scaler.local.api import LocalCloud
from scaler.provision import SshConnection, run_playbook

pytestmark = pytest.mark.slow


def _play(folder: Path, tasks: list[dict[str, Any]], name: str = "play.yml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}]))
    return path


def _run(droplet: RealDroplet, playbook: Path) -> None:
    result = run_playbook(
        {"all": {"hosts": {"packerbox": {}}}},
        playbook=playbook,
        connection=SshConnection(droplet.public_ip, "root", droplet.key),
    )
    assert result.ok


def _ok(droplet: RealDroplet, command: str) -> str:
    done = droplet.ssh(command)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


def test_ssh_lands_inside_the_droplet(real_cloud: LocalCloud, real_droplet: RealDroplet) -> None:
    assert _ok(real_droplet, "hostname").strip() == "shared"
    # its own PID 1: the image's systemd, a process of its own on this host
    assert _ok(real_droplet, "cat /proc/1/comm").strip() == "systemd"
    init = real_cloud.machines.init_pid(real_droplet.id)
    assert init is not None and init != 1
    assert Path(f"/proc/{init}/comm").read_text().strip() == "systemd"
    # its own network: lo and its veth end with its public and private address, nothing else
    listed = json.loads(_ok(real_droplet, "ip -j addr"))
    ipv4 = {
        (link["ifname"], info["local"])
        for link in listed
        for info in link.get("addr_info", [])
        if info["family"] == "inet"
    }
    assert {ip for name, ip in ipv4 if name == "lo"} == {"127.0.0.1"}
    assert {ip for name, ip in ipv4 if name != "lo"} == {
        real_droplet.public_ip,
        real_droplet.private_ip,
    }
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("127.0.0.0/8") for _, ip in ipv4)
    brief = _ok(real_droplet, "ip -br addr")
    assert real_droplet.public_ip in brief and real_droplet.private_ip in brief

    # its own filesystem: this host's /tmp is not the droplet's, and the other way round
    tag = uuid.uuid4().hex
    host_marker = Path(f"/tmp/scaler-host-{tag}")
    host_marker.write_text("host\n")
    try:
        assert real_droplet.ssh(f"test -e {host_marker}").returncode == 1
    finally:
        host_marker.unlink()
    inside = f"/tmp/scaler-droplet-{tag}"
    try:
        _ok(real_droplet, f"echo droplet > {inside}")
        assert _ok(real_droplet, f"cat {inside}") == "droplet\n"
        assert not Path(inside).exists()
    finally:
        real_droplet.ssh(f"rm -f {inside}")


def _memcached_pid(droplet: RealDroplet) -> int:
    return int(_ok(droplet, "systemctl show --property=MainPID --value memcached"))


def test_service_module_drives_the_droplets_init(real_droplet: RealDroplet, tmp_path: Path) -> None:
    """apt through the local cloud's mirror, then ansible.builtin.service on the droplet's
    systemd."""
    install = _play(
        tmp_path,
        [
            {
                "name": "Install memcached",
                "ansible.builtin.apt": {"name": "memcached", "update_cache": True},
            },
            {
                "name": "Start it at boot and now",
                "ansible.builtin.service": {
                    "name": "memcached",
                    "state": "started",
                    "enabled": True,
                },
            },
        ],
    )
    _run(real_droplet, install)
    status = real_droplet.ssh("service memcached status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert _ok(real_droplet, "systemctl is-enabled memcached") == "enabled\n"
    before = _memcached_pid(real_droplet)

    restart = _play(
        tmp_path,
        [
            {
                "name": "Restart memcached",
                "ansible.builtin.service": {"name": "memcached", "state": "restarted"},
            }
        ],
        name="restart.yml",
    )
    _run(real_droplet, restart)
    assert real_droplet.ssh("service memcached status").returncode == 0
    after = _memcached_pid(real_droplet)
    assert after != before
    assert _ok(real_droplet, f"cat /proc/{after}/comm").strip() == "memcached"

    stop = _play(
        tmp_path,
        [
            {
                "name": "Stop memcached",
                "ansible.builtin.service": {"name": "memcached", "state": "stopped"},
            }
        ],
        name="stop.yml",
    )
    _run(real_droplet, stop)
    assert real_droplet.ssh("service memcached status").returncode != 0


# A test role that only enables a service: the snapshot, not Ansible, must make it run.
_ROLE_TASKS = [
    {
        "name": "Install memcached",
        "ansible.builtin.apt": {"name": "memcached", "update_cache": True},
    },
    {
        "name": "Enable memcached",
        "ansible.builtin.service": {"name": "memcached", "enabled": True},
    },
]


def test_enabled_service_runs_on_a_droplet_from_the_baked_snapshot(
    real_cloud: LocalCloud, tmp_path: Path
) -> None:
    role = tmp_path / "roles" / "memcache" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text(yaml.safe_dump(_ROLE_TASKS))
    playbook = tmp_path / "bake.yml"
    playbook.write_text(
        yaml.safe_dump([{"hosts": "packerbox", "become": True, "roles": ["memcache"]}])
    )
    config = BakeConfig(
        project="memcache",
        playbook=playbook,
        roles_path=tmp_path / "roles",
        manifest=tmp_path / "manifest.json",
        timeouts=Timeouts(active=60, ssh=180, shutdown=60, snapshot=120, provision=600),
        poll_min=0.05,
        poll_max=0.2,
    )
    lines: list[str] = []
    result = bake_image(
        config,
        Cloud("test", real_cloud.endpoint, pacing=Pacing.fast(0.05)),
        on_progress=lines.append,
    )
    droplet: RealDroplet | None = None
    try:
        assert any(
            line.startswith("ansible changed: [packerbox] Install memcached") for line in lines
        )
        droplet = boot_real_droplet(real_cloud, tmp_path, "memcache-1", result.id)
        status = droplet.ssh("service memcached status")
        assert status.returncode == 0, status.stdout + status.stderr
        # it answers memcached's protocol on the droplet's own loopback
        stats = _ok(droplet, "exec 3<>/dev/tcp/127.0.0.1/11211; echo stats >&3; head -1 <&3")
        assert stats.startswith("STAT pid ")
    finally:
        if droplet is not None:
            cloud_api(real_cloud, "DELETE", f"droplets/{droplet.id}")
        cloud_api(real_cloud, "DELETE", f"images/{result.id}")
