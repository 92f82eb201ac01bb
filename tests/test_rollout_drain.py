"""Draining on real droplets behind a real (HAProxy) balancer: a slow request in flight on an old
droplet when its batch starts finishes, because the droplet leaves the balancer and drains
before the batch's apply destroys it; afterwards `terraform plan` shows no changes."""

from __future__ import annotations

import http.client
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import boot_real_droplet, need, wait_for
from conftest import cloud_api as api

from scaler.local import balancer
from scaler.local.api import LocalCloud
from scaler.rollout import Settings, apply_rollout, open_terraform, prepare_rollout
from scaler.terraform import Terraform, local_provider

# /slow sends 20 bytes over 8 s; every answer names the droplet that served it
WEB = r"""
import http.server, socket, time
NAME = socket.gethostname()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        slow = self.path == "/slow"
        self.send_response(200)
        self.send_header("X-Droplet", NAME)
        self.send_header("Content-Length", "20" if slow else "2")
        self.end_headers()
        if not slow:
            self.wfile.write(b"ok")
            return
        for _ in range(20):
            self.wfile.write(b"s")
            self.wfile.flush()
            time.sleep(0.4)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""

UNIT = """[Unit]
Description=scaler drain test web
After=network.target
[Service]
ExecStart=/usr/bin/python3 /root/web.py
[Install]
WantedBy=multi-user.target
"""

STACK = """
terraform {
  required_providers {
    digitalocean = { source = "digitalocean/digitalocean" }
  }
}
variable "image_slug" {}
variable "wp_node_images" {
  type    = map(string)
  default = {}
}
resource "digitalocean_droplet" "wp_node" {
  count  = 2
  name   = "drain-web-${count.index}"
  image  = lookup(var.wp_node_images, tostring(count.index), var.image_slug)
  region = "nyc3"
  size   = "s-1vcpu-1gb"
  lifecycle {
    create_before_destroy = true
  }
}
resource "digitalocean_loadbalancer" "wp_lb" {
  name   = "drain-lb"
  region = "nyc3"
  forwarding_rule {
    entry_protocol  = "http"
    entry_port      = 80
    target_protocol = "http"
    target_port     = 80
  }
  healthcheck {
    protocol                 = "http"
    port                     = 80
    path                     = "/"
    check_interval_seconds   = 3
    response_timeout_seconds = 3
    healthy_threshold        = 2
    unhealthy_threshold      = 2
  }
  droplet_ids = digitalocean_droplet.wp_node[*].id
}
"""


def _act(cloud: LocalCloud, droplet_id: int, body: dict[str, Any]) -> None:
    action = api(cloud, "POST", f"droplets/{droplet_id}/actions", body)["action"]
    wait_for(
        f"the {body['type']} action",
        lambda: api(cloud, "GET", f"actions/{action['id']}")["action"]["status"] == "completed",
        120,
    )


@pytest.fixture
def images(real_cloud: LocalCloud, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two snapshots of a droplet whose web server starts at boot; deleted afterwards."""
    why = balancer.available()
    need(why is None, f"local load balancers cannot run here: {why}")
    build = boot_real_droplet(real_cloud, tmp_path, "drain-build", "debian-12-x64")
    made: list[str] = []
    try:
        script = WEB.replace("'", "'\"'\"'")
        done = build.ssh(
            f"printf '%s' '{script}' > /root/web.py && "
            f"printf '%s' '{UNIT}' > /etc/systemd/system/drain-web.service && "
            "systemctl enable drain-web.service"
        )
        assert done.returncode == 0, done.stderr
        _act(real_cloud, build.id, {"type": "shutdown"})
        for name in ("drain-v1", "drain-v2"):
            _act(real_cloud, build.id, {"type": "snapshot", "name": name})
        snapshots = api(real_cloud, "GET", f"droplets/{build.id}/snapshots")["snapshots"]
        made = [str(s["id"]) for s in sorted(snapshots, key=lambda s: s["name"])]
    finally:
        api(real_cloud, "DELETE", f"droplets/{build.id}")
    try:
        yield made[0], made[1]
    finally:
        for image in made:
            api(real_cloud, "DELETE", f"images/{image}")


def _get_slow(address: str, out: dict[str, Any]) -> None:
    out["started"] = time.time()
    try:
        conn = http.client.HTTPConnection(address, 80, timeout=60)
        conn.request("GET", "/slow")
        answer = conn.getresponse()
        out["answer"] = (answer.status, answer.getheader("X-Droplet"), answer.read())
        conn.close()
    except (OSError, http.client.HTTPException) as err:
        out["error"] = repr(err)


@pytest.mark.slow
def test_a_slow_request_on_a_draining_droplet_completes(
    real_cloud: LocalCloud, images: tuple[str, str], tmp_path: Path
) -> None:
    v1, v2 = images
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "main.tf").write_text(STACK)
    (folder / "terraform.tfvars").write_text(f'image_slug = "{v1}"\n')
    env = real_cloud.env()
    with local_provider(env) as provider_env:
        tf = Terraform(folder, env=provider_env)
        tf.init()
        tf.apply()
    try:
        (lb,) = [
            b
            for b in api(real_cloud, "GET", "load_balancers")["load_balancers"]
            if b["name"] == "drain-lb"
        ]
        settings = Settings(
            terraform_dir=folder,
            env=env,
            drain=10.0,
            health_timeout=180.0,
            health_grace=60.0,
            port_map={},
        )
        requests: list[dict[str, Any]] = [{} for _ in range(4)]
        threads = [threading.Thread(target=_get_slow, args=(lb["ip"], r)) for r in requests]
        said: list[str] = []
        applied: list[float] = []

        def report(line: str) -> None:
            said.append(line)
            if line == "batch 1/2: planning digitalocean_droplet.wp_node[0]":
                for thread in threads:
                    thread.start()  # in flight on both droplets when batch 1 drains
            if line.startswith("batch 1/2: took ") and not applied:
                applied.append(time.time() + settings.drain)  # the apply starts after this

        with open_terraform(settings) as runner:
            prepared = prepare_rollout(runner, settings, v2, batch_size=1, report=report)
            result = apply_rollout(runner, settings, prepared, report=report)
        for thread in threads:
            thread.join(timeout=60)
        assert result.status == "done", (result.message, said)
        assert (
            "batch 1/2: took digitalocean_droplet.wp_node[0] out of the load balancer drain-lb "
            "(digitalocean_loadbalancer.wp_lb) (removed them from its droplet_ids); draining "
            "10s before the apply destroys them"
        ) in said
        assert all("error" not in r for r in requests), requests
        assert {r["answer"][0] for r in requests} == {200}
        assert {r["answer"][2] for r in requests} == {b"s" * 20}
        # some were served by batch 1's old droplet, started before it left the balancer
        old = [r for r in requests if r["answer"][1] == "drain-web-0"]
        assert old and all(r["started"] < applied[0] for r in old), requests
        with local_provider(env) as provider_env:
            plan = Terraform(folder, env=provider_env).plan(out=tmp_path / "check.tfplan")
        assert not plan.changed
    finally:
        with local_provider(env) as provider_env:
            Terraform(folder, env=provider_env).destroy()
        shutil.rmtree(folder / ".terraform", ignore_errors=True)
