"""Packer's digitalocean builder runs a whole bake against the local cloud, SSH included."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
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


def _template(shared_data: Path, cloud: LocalCloud, regions: list[str]) -> dict[str, Any]:
    """The tutorial's wp-node.json aimed at the local cloud; a shell provisioner for Ansible's."""
    template = json.loads((shared_data / "packer" / "wp-node.json").read_text())
    (builder,) = template["builders"]
    builder["api_url"] = cloud.url
    builder.update(ssh_timeout="30s", state_timeout="30s", snapshot_timeout="30s")
    if regions:
        builder["snapshot_regions"] = regions
    ssh_port = cloud.machines.ssh_port()
    if ssh_port != 22:
        builder["ssh_port"] = ssh_port
    # SSH lands on this host: the droplet's files are under $SCALER_DROPLET_ROOT
    page = "$SCALER_DROPLET_ROOT/var/www/html/index.html"
    template["provisioners"] = [
        {
            "type": "shell",
            "inline": ['test -d "$SCALER_DROPLET_ROOT/etc"', f'echo "{BAKED}" > "{page}"'],
        }
    ]
    return dict(template)


@pytest.mark.slow
@pytest.mark.parametrize("regions", [[], ["ams3"]], ids=["one-region", "transfer"])
def test_packer_build_leaves_snapshot_and_cleans_up(
    local_cloud: LocalCloud, shared_data: Path, tmp_path: Path, regions: list[str]
) -> None:
    need(PACKER is not None, "packer is not installed (Debian package packer)")
    need(local_cloud.machines.ssh_port() is not None, "sshd is not installed (openssh-server)")
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

    started = time.monotonic()
    assert PACKER is not None
    argv = [PACKER, "build", "-color=false", "-var-file=variables.json",
            "-var", "app_node_image=debian-12-x64", "wp-node.json"]  # fmt: skip
    run = subprocess.run(
        argv,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (tmp_path / "packer.log").read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-3000:] + log[-3000:]
    assert time.monotonic() - started < 60
    assert "digitalocean: Connected to SSH!" in run.stdout
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

    # what the provisioner wrote over SSH is in the snapshot, and a droplet from it serves it
    tree = local_cloud.machines.image_root(int(image_id))
    assert (tree / "var/www/html/index.html").read_text() == BAKED + "\n"
    user_data = tree / "var/lib/cloud/instance/user-data.txt"
    assert user_data.read_text() == CLOUD_CONFIG.read_text()
    body = {"name": "wp-node-1", "region": region, "size": "s-1vcpu-1gb", "image": int(image_id)}
    droplet = _api(local_cloud, "POST", "droplets", body)["droplet"]
    try:
        deadline = time.monotonic() + 10
        while droplet["status"] != "active":
            assert time.monotonic() < deadline, droplet
            time.sleep(0.1)
            droplet = _api(local_cloud, "GET", f"droplets/{droplet['id']}")["droplet"]
        (ip,) = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"]
        url = f"http://{ip}:{local_cloud.machines.web_port()}/"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert (resp.status, resp.read()) == (200, f"{BAKED}\n".encode())
    finally:
        _api(local_cloud, "DELETE", f"droplets/{droplet['id']}")
