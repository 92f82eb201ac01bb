"""The project's stack end to end on real droplets, through its real load balancer.

`terraform apply` of terraform/ (firewalls on) on the session's real cloud; the database droplet
provisioned with db-node.yml; `scaler bake` from that state (so the snapshot's WordPress has the
stack's reserved IP as DB_HOST and the balancer's address as its URL); `scaler rollout` gated on
the balancer's own view (this machine cannot reach the firewalled web droplets); then requests
through the balancer's address. Everything the module made is destroyed at its end, also when a
test fails.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, cloud_api, wait_for

from scaler.bake import ed25519_key_pair, wait_for_ssh
from scaler.health import HealthCheck, check_droplet, ssh_prober
from scaler.local import balancer
from scaler.local.api import LocalCloud
from scaler.provision import SshConnection, run_playbook, wait_for_first_boot
from scaler.terraform import Terraform, local_provider

pytestmark = pytest.mark.slow

PROJECT = "e2e"
HEALTH_PATH = "/scaler-wp-health.php"


@dataclass(frozen=True)
class Stack:
    cloud: LocalCloud
    dir: Path
    key: Path
    lb_id: str
    lb_ip: str
    db: dict[str, Any]
    web: list[dict[str, Any]]
    image: int
    rollout: subprocess.CompletedProcess[str]


def _ipv4(droplet: dict[str, Any], kind: str) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == kind)


def _droplets(cloud: LocalCloud, tag: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cloud_api(cloud, "GET", f"droplets?tag_name={tag}")["droplets"]
    return sorted(found, key=lambda d: d["name"])


def _scaler(
    cloud: LocalCloud, cwd: Path, *args: str, password: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(cloud.env(), PYTHONPATH=str(ROOT), WELP_DB_PASSWORD=password)
    return subprocess.run(
        [sys.executable, "-m", "scaler", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _get(address: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    conn = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def _health(cloud: LocalCloud, lb_id: str) -> dict[int, str]:
    now = int(time.time())
    answer = cloud_api(
        cloud,
        "GET",
        f"monitoring/metrics/load_balancer/droplets_health_checks?lb_id={lb_id}"
        f"&start={now - 60}&end={now}",
    )
    return {int(r["metric"]["droplet_id"]): r["values"][-1][1] for r in answer["data"]["result"]}


def _ssh(stack: Stack, droplet: dict[str, Any], command: str) -> str:
    argv = SshConnection(_ipv4(droplet, "public"), "root", stack.key).ssh_argv(command)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def stack(real_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    balancer_missing = balancer.available()
    if balancer_missing:
        pytest.skip(balancer_missing)
    cloud = real_cloud
    work = tmp_path_factory.mktemp("e2e")
    key, public = ed25519_key_pair(work)
    password = secrets.token_urlsafe(18)
    folder = Path(shutil.copytree(ROOT / "terraform", work / "stack"))
    (folder / "terraform.tfvars").write_text(
        f'project_name   = "{PROJECT}"\nimage_slug     = "debian-12-x64"\nwp_node_count  = 2\n'
        f'db_node_count  = 1\nhealth_path    = "{HEALTH_PATH}"\nfirewall       = true\n'
        f'ssh_public_key = "{public.strip()}"\n'
    )
    images: list[int] = []
    try:
        with local_provider(cloud.env()) as env:
            Terraform(folder, env=env).init()
            Terraform(folder, env=env).apply()
        (lb,) = [
            b
            for b in cloud_api(cloud, "GET", "load_balancers")["load_balancers"]
            if b["name"] == f"{PROJECT}-lb"
        ]
        (db,) = _droplets(cloud, "db_node")
        # sshd restarts while cloud-init's first boot makes the host keys: wait for it
        db_ssh = SshConnection(_ipv4(db, "public"), "root", key)
        wait_for_ssh(db_ssh.host, 22, 120)
        wait_for_first_boot(db_ssh, 300)
        run_playbook(
            {"all": {"hosts": ["db-1"]}, "db_node": {"hosts": ["db-1"]}},
            playbook=ROOT / "db-node.yml",
            host="db-1",
            connection=db_ssh,
            extravars={"welp_db_password": password, "scaler_db_host": "db-1"},
        )
        state = str(folder / "terraform.tfstate")
        baked = _scaler(
            cloud, work, "bake", "--state", state, "--project", PROJECT, "--json", password=password
        )
        assert baked.returncode == 0, baked.stderr
        image = int(json.loads(baked.stdout)["id"])
        images.append(image)
        rollout = _scaler(
            cloud,
            work,
            "rollout",
            "-C",
            str(folder),
            "--image",
            str(image),
            "--strategy",
            "all",
            "--yes",
            "--health-interval",
            "1",
            password=password,
        )
        web = _droplets(cloud, "wp_node")
        yield Stack(cloud, folder, key, lb["id"], lb["ip"], db, web, image, rollout)
    finally:
        with local_provider(cloud.env()) as env:
            Terraform(folder, env=env).destroy()
        for image_id in images:
            cloud_api(cloud, "DELETE", f"images/{image_id}")


def test_the_rollout_of_a_firewalled_stack_passes_on_the_balancers_view(stack: Stack) -> None:
    assert stack.rollout.returncode == 0, stack.rollout.stdout + stack.rollout.stderr
    assert stack.rollout.stdout.startswith(
        f"done: 2 droplets now run image {stack.image}, all healthy"
    )
    assert {d["image"]["id"] for d in stack.web} == {stack.image}
    assert _health(stack.cloud, stack.lb_id) == {d["id"]: "1" for d in stack.web}


def test_the_front_page_through_the_balancer_comes_from_the_database(stack: Stack) -> None:
    title = f"scaler-{secrets.token_hex(4)}"
    _ssh(
        stack,
        stack.db,
        "mysql wordpress -e \"UPDATE wp_options SET option_value = '"
        + title
        + "' WHERE option_name = 'blogname';\"",
    )
    status, body = _get(stack.lb_ip)
    assert status == 200
    assert title in body and "Hello world!" in body  # PHP, with the database's data
    home = _ssh(
        stack,
        stack.db,
        "mysql -N wordpress -e \"SELECT option_value FROM wp_options WHERE option_name = 'home';\"",
    )
    assert home.strip() == f"http://{stack.lb_ip}"


def test_with_the_firewall_only_the_balancers_path_reaches_the_web_droplets(stack: Stack) -> None:
    for droplet in stack.web:
        with pytest.raises(OSError):  # dropped: no answer at all
            socket.create_connection((_ipv4(droplet, "public"), 80), timeout=3).close()
    assert _get(stack.lb_ip, HEALTH_PATH) == (200, "ok\n")
    # scaler's own probe: the private address is firewalled off this machine too, so it goes
    # through SSH to the droplet (SSH is open), which checks its own private address
    check = HealthCheck(path=HEALTH_PATH, response_timeout=3)
    droplet = stack.web[0]
    public, private = _ipv4(droplet, "public"), _ipv4(droplet, "private")
    assert check_droplet(private, check).error == "no answer within 3s"
    seen = ssh_prober("root", stack.key)(public, private, check)
    assert (seen.ok, seen.status) == (True, 200)


def test_stopping_the_database_takes_the_droplets_out_of_the_balancer(stack: Stack) -> None:
    _ssh(stack, stack.db, "systemctl stop mariadb")
    try:
        # unhealthy_threshold 3 checks 10 s apart, then every droplet is out of rotation
        wait_for(
            "the balancer to take both droplets out",
            lambda: set(_health(stack.cloud, stack.lb_id).values()) == {"0"},
            90,
        )
        assert _get(stack.lb_ip)[0] == 503
    finally:
        _ssh(stack, stack.db, "systemctl start mariadb")
    wait_for(
        "the droplets back in rotation",
        lambda: set(_health(stack.cloud, stack.lb_id).values()) == {"1"},
        90,
    )
    assert _get(stack.lb_ip)[0] == 200
