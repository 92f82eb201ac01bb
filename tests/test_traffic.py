"""Traffic through the balancer while `scaler rollout` replaces the web droplets (real droplets).

The project's stack (terraform/, 2 web droplets, firewalls off) on two small images made here: a
base-image droplet running Python's http.server on port 80 from a systemd unit, snapshotted with
page v1, then v2 (no apt, no WordPress: this test is about the rollout, and the suite is slow
enough). Requests go to the balancer's own address (HAProxy) at a low fixed rate for the whole
rollout, one connection each. Everything is destroyed at the end, also when the test fails.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, boot_real_droplet, cloud_api, wait_for

from scaler.cloud import Cloud, Pacing
from scaler.local import balancer
from scaler.local.api import LocalCloud
from scaler.terraform import Terraform, local_provider
from scaler.traffic import Background, Load

pytestmark = pytest.mark.slow

SITE_UNIT = """[Unit]
Description=the test's web site
After=network.target

[Service]
ExecStart=/usr/bin/python3 -m http.server 80 --bind 0.0.0.0 --directory /srv/site
Restart=always

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Fleet:
    cloud: LocalCloud
    dir: Path
    lb_id: str
    lb_ip: str
    images: tuple[int, int]


def _snapshot(client: Cloud, droplet_id: int, name: str) -> int:
    action = client.droplet_action(droplet_id, "snapshot", name=name)
    client.wait_for_action(action.id, 120, f"snapshot {name}")
    return next(i.id for i in client.droplet_snapshots(droplet_id) if i.name == name)


def _site_images(cloud: LocalCloud, keys: Path) -> tuple[int, int]:
    """Two snapshots of a droplet serving /srv/site/index.html over HTTP: page v1, page v2."""
    droplet = boot_real_droplet(cloud, keys, "traffic-image", "debian-12-x64")
    client = Cloud("test", cloud.endpoint, pacing=Pacing.fast(0.05))
    try:
        setup = (
            "mkdir -p /srv/site && echo v1 > /srv/site/index.html && "
            f"echo {base64.b64encode(SITE_UNIT.encode()).decode()} | base64 -d"
            " > /etc/systemd/system/traffic-site.service && "
            "systemctl daemon-reload && systemctl enable --now traffic-site.service"
        )
        done = droplet.ssh(setup)
        assert done.returncode == 0, done.stderr
        first = _snapshot(client, droplet.id, "traffic-v1")
        assert droplet.ssh("echo v2 > /srv/site/index.html").returncode == 0
        return first, _snapshot(client, droplet.id, "traffic-v2")
    finally:
        client.delete_droplet(droplet.id)


def _get(address: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(address, 80, timeout=5)
    try:
        conn.request("GET", "/")
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def _behind(cloud: LocalCloud, lb_id: str) -> dict[int, int]:
    """droplet id -> image id of every droplet behind the balancer (the API's view)."""
    lb = cloud_api(cloud, "GET", f"load_balancers/{lb_id}")["load_balancer"]
    return {
        i: cloud_api(cloud, "GET", f"droplets/{i}")["droplet"]["image"]["id"]
        for i in lb["droplet_ids"]
    }


def _in_rotation(cloud: LocalCloud, lb_id: str) -> set[int]:
    return {t.droplet_id for t in cloud.balancers.view(lb_id) or () if t.healthy}


@pytest.fixture(scope="module")
def fleet(real_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    missing = balancer.available()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("traffic")
    images: list[int] = []
    applied = False
    folder = Path(shutil.copytree(ROOT / "terraform", work / "stack"))
    try:
        images.extend(_site_images(real_cloud, work))
        (folder / "terraform.tfvars").write_text(
            f'project_name  = "traffic"\nimage_slug    = "{images[0]}"\nwp_node_count = 2\n'
            'db_node_count = 1\nfirewall      = false\nhealth_path   = "/"\n'
        )
        with local_provider(real_cloud.env()) as env:
            Terraform(folder, env=env).init()
            applied = True
            Terraform(folder, env=env).apply()
        (lb,) = [
            b
            for b in cloud_api(real_cloud, "GET", "load_balancers")["load_balancers"]
            if b["name"] == "traffic-lb"
        ]
        yield Fleet(real_cloud, folder, lb["id"], lb["ip"], (images[0], images[1]))
    finally:
        if applied:
            with local_provider(real_cloud.env()) as env:
                Terraform(folder, env=env).destroy()
        for image in images:
            cloud_api(real_cloud, "DELETE", f"images/{image}")


@pytest.mark.parametrize("strategy", ["rolling", "all"])
def test_a_rollout_drops_no_request(fleet: Fleet, strategy: str) -> None:
    """Rolling in batches of one, and every droplet at once (the new ones beside the old)."""
    # both droplets in rotation first (3 checks 10 s apart), so every failure is the rollout's
    wait_for(
        "both droplets in rotation", lambda: len(_in_rotation(fleet.cloud, fleet.lb_id)) == 2, 90
    )
    (running,) = set(_behind(fleet.cloud, fleet.lb_id).values())
    new = next(i for i in fleet.images if i != running)
    pages = {fleet.images[0]: "v1\n", fleet.images[1]: "v2\n"}
    assert _get(fleet.lb_ip) == (200, pages[running])
    old_ids = set(_behind(fleet.cloud, fleet.lb_id))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(fleet.cloud.env(), PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "scaler", "rollout", "-C", str(fleet.dir), "--image", str(new)]
    argv += ["--strategy", strategy, "--yes", "--health-interval", "1"]
    if strategy == "rolling":
        argv += ["--batch-size", "1"]
    # a low rate for a static page (one connection each): a failure is the rollout's, not load
    with Background(Load(fleet.lb_ip, rps=10, seconds=600)) as load:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = load.run.summary()
    failures = [s for s in load.run.samples if s.failed][:5]
    assert summary.requests > 100
    assert summary.failed == 0, f"{summary.line()}; first failures: {failures}"
    behind = _behind(fleet.cloud, fleet.lb_id)
    assert len(behind) == 2 and set(behind.values()) == {new}
    assert not set(behind) & old_ids
    assert _in_rotation(fleet.cloud, fleet.lb_id) == set(behind)
    assert _get(fleet.lb_ip) == (200, pages[new])
    if strategy == "all":
        assert "moving the 2 old droplets aside in the Terraform state" in done.stderr
        with local_provider(fleet.cloud.env()) as tf_env:
            assert not Terraform(fleet.dir, env=tf_env).plan(out=fleet.dir / "check.tfplan").changed
