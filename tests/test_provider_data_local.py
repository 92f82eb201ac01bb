"""A current stack on the local cloud: a VPC, a project and the snapshot looked up by name.

Real embedded Terraform against the local provider and cloud; the stack is what users write for
the real provider (data "digitalocean_image" by name, digitalocean_vpc, digitalocean_project).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scaler.local.api import Delays, LocalCloud, RequestRecord
from scaler.terraform import Terraform, TerraformFailed, local_provider

STACK = """
terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.0"
    }
  }
}

variable "snapshot" { default = "wordpress-snapshot" }

resource "digitalocean_ssh_key" "deploy" {
  name       = "deploy"
  public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOaBlVWVAQsL8OuZQCnW39WufaNMS5dAOGL6NkF3FD4L me"
}

resource "digitalocean_vpc" "net" {
  name     = "wordpress-net"
  region   = "nyc3"
  ip_range = "10.110.0.0/20"
}

data "digitalocean_image" "wp" {
  name = var.snapshot
}

resource "digitalocean_droplet" "web" {
  name     = "web-1"
  image    = data.digitalocean_image.wp.id
  region   = "nyc3"
  size     = "s-1vcpu-1gb"
  vpc_uuid = digitalocean_vpc.net.id
  ssh_keys = [digitalocean_ssh_key.deploy.fingerprint]
}

resource "digitalocean_loadbalancer" "lb" {
  name        = "web-lb"
  region      = "nyc3"
  size_unit   = 2
  vpc_uuid    = digitalocean_vpc.net.id
  droplet_ids = [digitalocean_droplet.web.id]
  forwarding_rule {
    entry_protocol  = "http"
    entry_port      = 80
    target_protocol = "http"
    target_port     = 80
  }
  healthcheck {
    protocol = "http"
    port     = 80
    path     = "/"
  }
}

resource "digitalocean_project" "site" {
  name        = "wordpress"
  description = "The blog"
  purpose     = "Web Application"
  environment = "Production"
  resources   = [digitalocean_droplet.web.urn, digitalocean_loadbalancer.lb.urn]
}

resource "digitalocean_firewall" "web" {
  name        = "web-only-80"
  droplet_ids = [digitalocean_droplet.web.id]
  inbound_rule {
    protocol         = "tcp"
    port_range       = "80"
    source_addresses = ["0.0.0.0/0"]
  }
  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0"]
  }
}

resource "digitalocean_reserved_ip" "db" {
  region = "nyc3"
}

resource "digitalocean_reserved_ip_assignment" "db" {
  ip_address = digitalocean_reserved_ip.db.ip_address
  droplet_id = digitalocean_droplet.web.id
}

resource "digitalocean_floating_ip" "web" {
  region     = "nyc3"
  droplet_id = digitalocean_droplet.web.id
}

data "digitalocean_droplet" "web" {
  name = digitalocean_droplet.web.name
}

data "digitalocean_droplets" "tagged" {
  filter {
    key    = "name"
    values = [digitalocean_droplet.web.name]
  }
}

data "digitalocean_images" "snapshots" {
  filter {
    key    = "private"
    values = ["true"]
  }
  sort {
    key       = "created"
    direction = "desc"
  }
}

data "digitalocean_ssh_key" "deploy" {
  name = digitalocean_ssh_key.deploy.name
}

data "digitalocean_loadbalancer" "lb" {
  name = digitalocean_loadbalancer.lb.name
}

output "image_id" { value = data.digitalocean_image.wp.id }
output "image_private" { value = data.digitalocean_image.wp.private }
output "droplet_image" { value = data.digitalocean_droplet.web.image }
output "droplet_ip" { value = data.digitalocean_droplet.web.ipv4_address }
output "droplets" { value = data.digitalocean_droplets.tagged.droplets[*].name }
output "snapshots" { value = data.digitalocean_images.snapshots.images[*].name }
output "key_fingerprint" { value = data.digitalocean_ssh_key.deploy.fingerprint }
output "lb_ip" { value = data.digitalocean_loadbalancer.lb.ip }
output "lb_check" { value = data.digitalocean_loadbalancer.lb.healthcheck[0] }
"""


APPLY_LOG: list[RequestRecord] = []


def api(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{cloud.url}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def settle(cloud: LocalCloud, seconds: float = 0.3) -> None:
    time.sleep(seconds)
    cloud.settle()


def make_snapshot(cloud: LocalCloud, name: str) -> int:
    """A snapshot made as `scaler bake` makes one: a build droplet, its snapshot, no droplet."""
    body = {"name": "build", "size": "s-1vcpu-1gb", "image": "debian-12-x64", "region": "nyc3"}
    droplet = api(cloud, "POST", "/v2/droplets", body)["droplet"]
    settle(cloud)
    api(cloud, "POST", f"/v2/droplets/{droplet['id']}/actions", {"type": "snapshot", "name": name})
    settle(cloud)
    (image,) = api(cloud, "GET", f"/v2/droplets/{droplet['id']}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"/v2/droplets/{droplet['id']}")
    return int(image["id"])


@pytest.fixture(scope="module")
def applied(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCloud, Terraform, int]]:
    stack = tmp_path_factory.mktemp("stack")
    (stack / "main.tf").write_text(STACK)
    with (
        LocalCloud(
            tmp_path_factory.mktemp("cloud"),
            delays=Delays.uniform(0.1),
            rate_limit_per_minute=100_000,
        ) as cloud,
        local_provider(cloud.env()) as env,
    ):
        snapshot = make_snapshot(cloud, "wordpress-snapshot")
        tf = Terraform(stack, env=env)
        tf.init()
        cloud.reset_log()
        tf.apply()
        APPLY_LOG[:] = cloud.requests()
        try:
            yield cloud, tf, snapshot
        finally:
            tf.destroy()
    assert cloud.summary()["droplets"] == 0


def test_stack_applies_and_then_has_nothing_to_do(
    applied: tuple[LocalCloud, Terraform, int],
) -> None:
    _cloud, tf, _snapshot = applied
    assert tf.plan().changed is False


def test_the_snapshot_is_found_by_name(applied: tuple[LocalCloud, Terraform, int]) -> None:
    cloud, tf, snapshot = applied
    out = tf.output()
    assert (out["image_id"], out["image_private"]) == (snapshot, True)
    (droplet,) = [d for d in api(cloud, "GET", "/v2/droplets")["droplets"] if d["name"] == "web-1"]
    assert droplet["image"]["id"] == snapshot
    assert out["droplet_image"] == str(snapshot)
    assert out["snapshots"] == ["wordpress-snapshot"]


def test_vpc_and_project_hold_the_resources(applied: tuple[LocalCloud, Terraform, int]) -> None:
    cloud, _tf, _snapshot = applied
    (vpc,) = api(cloud, "GET", "/v2/vpcs")["vpcs"]
    assert (vpc["name"], vpc["region"], vpc["ip_range"]) == (
        "wordpress-net",
        "nyc3",
        "10.110.0.0/20",
    )
    (droplet,) = [d for d in api(cloud, "GET", "/v2/droplets")["droplets"] if d["name"] == "web-1"]
    assert droplet["vpc_uuid"] == vpc["id"]
    projects = {p["name"]: p for p in api(cloud, "GET", "/v2/projects")["projects"]}
    site = projects["wordpress"]
    assert (site["purpose"], site["environment"]) == ("Web Application", "Production")
    urns = {
        r["urn"] for r in api(cloud, "GET", f"/v2/projects/{site['id']}/resources")["resources"]
    }
    (lb,) = api(cloud, "GET", "/v2/load_balancers")["load_balancers"]
    assert urns == {f"do:droplet:{droplet['id']}", f"do:loadbalancer:{lb['id']}"}
    assert lb["size_unit"] == 2


def test_data_sources_read_what_the_stack_made(applied: tuple[LocalCloud, Terraform, int]) -> None:
    cloud, tf, _snapshot = applied
    out = tf.output()
    (droplet,) = [d for d in api(cloud, "GET", "/v2/droplets")["droplets"] if d["name"] == "web-1"]
    public = next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")
    assert out["droplet_ip"] == public
    assert out["droplets"] == ["web-1"]
    (key,) = api(cloud, "GET", "/v2/account/keys")["ssh_keys"]
    assert out["key_fingerprint"] == key["fingerprint"]
    (lb,) = api(cloud, "GET", "/v2/load_balancers")["load_balancers"]
    assert out["lb_ip"] == lb["ip"]
    check = out["lb_check"]
    # The real provider's defaults for what the configuration left out.
    assert (check["check_interval_seconds"], check["response_timeout_seconds"]) == (10, 5)
    assert (check["healthy_threshold"], check["unhealthy_threshold"]) == (5, 3)


def test_a_missing_snapshot_is_one_clear_error(applied: tuple[LocalCloud, Terraform, int]) -> None:
    _cloud, tf, _snapshot = applied
    with pytest.raises(TerraformFailed) as failed:
        tf.plan(vars={"snapshot": "no-such-snapshot"})
    assert "no image found with name no-such-snapshot" in str(failed.value)


def test_ips_go_through_the_reserved_ip_endpoints(
    applied: tuple[LocalCloud, Terraform, int],
) -> None:
    """As the real provider: create with the region only, then assign; never /v2/floating_ips."""
    cloud, _tf, _snapshot = applied
    templates = [r.template for r in APPLY_LOG]
    assert not [t for t in templates if "/v2/floating_ips" in t]
    assert templates.count("POST /v2/reserved_ips") == 2
    assert templates.count("POST /v2/reserved_ips/{id}/actions") == 2
    ips = {i["ip"]: i for i in api(cloud, "GET", "/v2/reserved_ips")["reserved_ips"]}
    (droplet,) = [d for d in api(cloud, "GET", "/v2/droplets")["droplets"] if d["name"] == "web-1"]
    assert [i["droplet"]["id"] for i in ips.values()] == [droplet["id"], droplet["id"]]


def test_firewall_holds_its_rules(applied: tuple[LocalCloud, Terraform, int]) -> None:
    cloud, _tf, _snapshot = applied
    (fw,) = api(cloud, "GET", "/v2/firewalls")["firewalls"]
    (droplet,) = [d for d in api(cloud, "GET", "/v2/droplets")["droplets"] if d["name"] == "web-1"]
    assert (fw["name"], fw["droplet_ids"]) == ("web-only-80", [droplet["id"]])
    assert fw["inbound_rules"] == [
        {"protocol": "tcp", "ports": "80", "sources": {"addresses": ["0.0.0.0/0"]}}
    ]
    assert fw["outbound_rules"] == [
        {"protocol": "icmp", "ports": "0", "destinations": {"addresses": ["0.0.0.0/0"]}}
    ]
