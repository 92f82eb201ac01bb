"""Packer's digitalocean builder runs a whole bake against the local cloud with real droplets:
its SSH lands inside the build droplet, where its shell provisioner runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import cloud_api as _api
from conftest import need

from scaler.local.api import LocalCloud

PACKER = shutil.which("packer")
CLOUD_CONFIG = Path(__file__).resolve().parent.parent / "config" / "cloud-config.yaml"
BAKED = "<h1>baked by packer</h1>"
# A web server the image enables (a systemd unit; the droplet's systemd starts it at boot)
WEB_UNIT = [
    "[Unit]",
    "Description=serve /var/www/html",
    "[Service]",
    "ExecStart=/usr/bin/python3 -m http.server 80 --directory /var/www/html",
    "[Install]",
    "WantedBy=multi-user.target",
]


def _template(shared_data: Path, cloud: LocalCloud, regions: list[str]) -> dict[str, Any]:
    """The tutorial's wp-node.json aimed at the local cloud; a shell provisioner for Ansible's."""
    template = json.loads((shared_data / "packer" / "wp-node.json").read_text())
    (builder,) = template["builders"]
    builder["api_url"] = cloud.url
    builder.update(ssh_timeout="120s", state_timeout="120s", snapshot_timeout="120s")
    if regions:
        builder["snapshot_regions"] = regions
    assert cloud.machines.ssh_port() == 22  # each droplet's own sshd: the builder's default
    unit = "/etc/systemd/system/baked-web.service"
    wants = "/etc/systemd/system/multi-user.target.wants"
    template["provisioners"] = [
        {
            "type": "shell",
            "inline": [
                # as Packer users do: let cloud-init's first boot (apt) finish first
                "cloud-init status --wait >/dev/null || true",
                'echo "inside $(hostname) pid1=$(cat /proc/1/comm)"',
                "mkdir -p /var/www/html",
                f'echo "{BAKED}" > /var/www/html/index.html',
                "printf '%s\\n' " + " ".join(f"'{line}'" for line in WEB_UNIT) + f" > {unit}",
                f"mkdir -p {wants} && ln -s {unit} {wants}/",
            ],
        }
    ]
    return dict(template)


def _get(url: str, wait: float) -> tuple[int, bytes]:
    """GET url, retrying connection errors for `wait` seconds (the droplet is booting)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("regions", [[], ["ams3"]], ids=["one-region", "transfer"])
def test_packer_build_leaves_snapshot_and_cleans_up(
    real_cloud: LocalCloud, shared_data: Path, tmp_path: Path, regions: list[str]
) -> None:
    need(PACKER is not None, "packer is not installed (Debian package packer)")
    local_cloud = real_cloud
    template = _template(shared_data, local_cloud, regions)
    region = template["builders"][0]["region"]  # the tutorial's sfo2
    (tmp_path / "wp-node.json").write_text(json.dumps(template))
    shutil.copy(shared_data / "packer" / "variables.json", tmp_path)
    (tmp_path / "config").mkdir()
    shutil.copy(CLOUD_CONFIG, tmp_path / "config")
    droplets_before = {d["id"] for d in _api(local_cloud, "GET", "droplets")["droplets"]}
    keys_before = {k["id"] for k in _api(local_cloud, "GET", "account/keys")["ssh_keys"]}
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PACKER_CONFIG_DIR": str(tmp_path),
        "PACKER_CACHE_DIR": str(tmp_path / "cache"),
        "CHECKPOINT_DISABLE": "1",
        "PACKER_LOG": "1",
        "PACKER_LOG_PATH": str(tmp_path / "packer.log"),
    }
    env.pop("DIGITALOCEAN_TOKEN", None)
    env.pop("DIGITALOCEAN_API_TOKEN", None)

    assert PACKER is not None
    argv = [PACKER, "build", "-color=false", "-var-file=variables.json",
            "-var", "app_node_image=debian-12-x64", "wp-node.json"]  # fmt: skip
    run = subprocess.run(
        argv,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (tmp_path / "packer.log").read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-3000:] + log[-3000:]
    assert "digitalocean: Connected to SSH!" in run.stdout
    # the provisioner ran inside the build droplet (its hostname, its init), not on this host
    (inside,) = re.findall(r"digitalocean: inside (\S+) pid1=(\S+)", run.stdout)
    assert re.fullmatch(r"packer-[0-9a-f-]+", inside[0]) and inside[1] == "systemd", inside
    names = re.findall(r"Creating snapshot: (\S+)", run.stdout)
    assert len(names) == 1 and re.fullmatch(r"nav-guide_(\d\d-){5}\d\d", names[0]), names

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (build,) = manifest["builds"]
    assert build["builder_type"] == "digitalocean"
    region_part, _, image_id = build["artifact_id"].partition(":")
    assert region_part == ",".join([*regions, region])
    image = _api(local_cloud, "GET", f"images/{image_id}")["image"]
    assert image["name"] == names[0]
    assert image["type"] == "snapshot"
    # Packer 1.6.6 polls the wrong ids after a transfer (/images/<transfer>/actions/<snapshot>),
    # so it finishes before the transfer does: wait for the transfer ourselves
    actions = _api(local_cloud, "GET", f"images/{image_id}/actions")["actions"]
    assert [a["type"] for a in actions] == ["transfer"] * len(regions)
    deadline = time.monotonic() + 10
    while len(image["regions"]) < len(regions) + 1:
        assert time.monotonic() < deadline, image
        time.sleep(0.1)
        image = _api(local_cloud, "GET", f"images/{image_id}")["image"]
    assert sorted(image["regions"]) == sorted([*regions, region])
    snapshots = _api(local_cloud, "GET", "images?private=true")["images"]
    assert [i["id"] for i in snapshots if i["name"] == names[0]] == [int(image_id)]

    # the build droplet and the temporary key are gone again
    assert {d["id"] for d in _api(local_cloud, "GET", "droplets")["droplets"]} == droplets_before
    assert {k["id"] for k in _api(local_cloud, "GET", "account/keys")["ssh_keys"]} == keys_before

    # what the provisioner wrote over SSH is in the snapshot's layer, without the build
    # droplet's cloud-init data (its user data and instance); a droplet from it serves the page
    tree = local_cloud.machines.image_root(int(image_id))
    assert (tree / "var/www/html/index.html").read_text() == BAKED + "\n"
    assert not (tree / "var/lib/cloud").exists()
    body = {"name": "wp-node-1", "region": region, "size": "s-1vcpu-1gb", "image": int(image_id)}
    droplet = _api(local_cloud, "POST", "droplets", body)["droplet"]
    try:
        deadline = time.monotonic() + 60
        while droplet["status"] != "active":
            assert time.monotonic() < deadline, droplet
            time.sleep(0.1)
            droplet = _api(local_cloud, "GET", f"droplets/{droplet['id']}")["droplet"]
        (ip,) = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"]
        url = f"http://{ip}:{local_cloud.machines.web_port()}/"
        assert _get(url, wait=60) == (200, f"{BAKED}\n".encode())
    finally:
        _api(local_cloud, "DELETE", f"droplets/{droplet['id']}")
        _api(local_cloud, "DELETE", f"images/{image_id}")
