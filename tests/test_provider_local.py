"""The local DigitalOcean provider: its schema and the real provider's replace/update rules."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scaler.local.api import Delays, LocalCloud
from scaler.local.provider import PROVIDER_ADDRESS
from scaler.terraform import Terraform, TerraformFailed, local_provider

KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOaBlVWVAQsL8OuZQCnW39WufaNMS5dAOGL6NkF3FD4L probe",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHGKxtVNq3nEcgvcuNuHmsbvH1jP5aJFqDczsQ+0tjTt probe2",
]

CONFIG = """
terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.0"
    }
  }
}

variable "name" { default = "probe" }
variable "image" { default = "debian-12-x64" }
variable "region" { default = "nyc3" }
variable "size" { default = "s-1vcpu-1gb" }
variable "tags" { default = ["probe"] }
variable "user_data" { default = null }
variable "key_name" { default = "probe-key" }
variable "public_key" { default = "PUBLIC_KEY" }

resource "digitalocean_ssh_key" "k" {
  name       = var.key_name
  public_key = var.public_key
}

resource "digitalocean_droplet" "d" {
  name       = var.name
  image      = var.image
  region     = var.region
  size       = var.size
  tags       = var.tags
  user_data  = var.user_data
  ssh_keys   = [digitalocean_ssh_key.k.fingerprint]
  monitoring = true
}

resource "digitalocean_floating_ip" "ip" {
  region = var.region
}

resource "digitalocean_floating_ip_assignment" "a" {
  ip_address = digitalocean_floating_ip.ip.ip_address
  droplet_id = digitalocean_droplet.d.id
}
""".replace("PUBLIC_KEY", KEYS[0])

D, K = "digitalocean_droplet.d", "digitalocean_ssh_key.k"
IP, A = "digitalocean_floating_ip.ip", "digitalocean_floating_ip_assignment.a"
REPLACE = ["delete", "create"]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCloud, Terraform]]:
    """One small applied configuration (key, droplet, floating IP, assignment) to plan against."""
    stack = tmp_path_factory.mktemp("probe")
    (stack / "main.tf").write_text(CONFIG)
    with (
        LocalCloud(
            tmp_path_factory.mktemp("cloud"),
            delays=Delays.uniform(0.1),
            rate_limit_per_minute=100_000,
        ) as cloud,
        local_provider(cloud.env()) as env,
    ):
        tf = Terraform(stack, env=env)
        tf.init()
        tf.apply()
        yield cloud, tf
        tf.destroy()
        assert cloud.summary()["droplets"] == 0


def api(cloud: LocalCloud, path: str) -> Any:
    req = urllib.request.Request(f"{cloud.url}{path}")
    req.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def planned(tf: Terraform, vars: dict[str, Any]) -> dict[str, list[str]]:
    plan = tf.plan(vars=vars)
    return {
        c["address"]: c["change"]["actions"]
        for c in tf.show_plan_json(plan.file)["resource_changes"]
        if c["change"]["actions"] != ["no-op"]
    }


@pytest.mark.parametrize(
    ("vars", "expected"),
    [
        ({"image": "ubuntu-22-04-x64"}, {D: REPLACE, A: REPLACE}),
        ({"region": "sfo3"}, {D: REPLACE, IP: REPLACE, A: REPLACE}),
        ({"user_data": "#cloud-config\n"}, {D: REPLACE, A: REPLACE}),
        ({"public_key": KEYS[1]}, {K: REPLACE, D: REPLACE, A: REPLACE}),
        ({"size": "s-2vcpu-2gb"}, {D: ["update"]}),
        ({"name": "probe-renamed"}, {D: ["update"]}),
        ({"tags": ["probe", "web"]}, {D: ["update"]}),
        ({"key_name": "probe-key-2"}, {K: ["update"]}),
        ({}, {}),
    ],
    ids=["image", "region", "user_data", "ssh_keys", "size", "name", "tags", "key_name", "none"],
)
def test_replace_or_update(
    applied: tuple[LocalCloud, Terraform], vars: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    _cloud, tf = applied
    assert planned(tf, vars) == expected


def test_in_place_updates_keep_the_droplet(applied: tuple[LocalCloud, Terraform]) -> None:
    cloud, tf = applied
    before = json.loads(tf.state_pull())
    (old,) = [r for r in before["resources"] if r["type"] == "digitalocean_droplet"]
    droplet_id = old["instances"][0]["attributes"]["id"]
    changed = {"name": "probe-renamed", "tags": ["probe", "web"], "key_name": "probe-key-2"}
    tf.apply(vars=changed)
    droplet = api(cloud, f"/v2/droplets/{droplet_id}")["droplet"]
    assert (droplet["name"], sorted(droplet["tags"])) == ("probe-renamed", ["probe", "web"])
    assert "monitoring" in droplet["features"]
    (key,) = api(cloud, "/v2/account/keys")["ssh_keys"]
    assert key["name"] == "probe-key-2"
    (fip,) = api(cloud, "/v2/floating_ips")["floating_ips"]
    assert fip["droplet"]["id"] == int(droplet_id)
    assert tf.plan(vars=changed).changed is False
    tf.apply()
    assert api(cloud, f"/v2/droplets/{droplet_id}")["droplet"]["name"] == "probe"


def test_schema_has_the_real_provider_names(applied: tuple[LocalCloud, Terraform]) -> None:
    _cloud, tf = applied
    schema = json.loads(tf.run("providers schema", json=True).stdout)
    (address,) = schema["provider_schemas"]
    assert address == PROVIDER_ADDRESS
    resources = schema["provider_schemas"][address]["resource_schemas"]
    assert sorted(resources) == [
        "digitalocean_droplet",
        "digitalocean_droplet_snapshot",
        "digitalocean_firewall",
        "digitalocean_floating_ip",
        "digitalocean_floating_ip_assignment",
        "digitalocean_loadbalancer",
        "digitalocean_project",
        "digitalocean_reserved_ip",
        "digitalocean_reserved_ip_assignment",
        "digitalocean_ssh_key",
        "digitalocean_tag",
        "digitalocean_vpc",
    ]
    droplet = resources["digitalocean_droplet"]["block"]["attributes"]
    computed = {n for n, a in droplet.items() if a.get("computed") and not a.get("optional")}
    assert {
        "image",
        "name",
        "region",
        "size",
        "ssh_keys",
        "tags",
        "user_data",
        "vpc_uuid",
        "monitoring",
        "ipv6",
        "backups",
        "resize_disk",
        "graceful_shutdown",
        "droplet_agent",
    } <= set(droplet)
    # id is optional and computed, as the SDK makes it for the real provider.
    assert droplet["id"].get("optional") and droplet["id"].get("computed")
    assert {
        "urn",
        "ipv4_address",
        "ipv4_address_private",
        "status",
        "disk",
        "memory",
        "vcpus",
        "price_hourly",
        "price_monthly",
        "locked",
        "created_at",
    } <= computed
    lb = resources["digitalocean_loadbalancer"]["block"]
    assert {"forwarding_rule", "healthcheck"} <= set(lb["block_types"])
    assert lb["block_types"]["healthcheck"]["nesting_mode"] == "list"
    assert set(lb["block_types"]["healthcheck"]["block"]["attributes"]) == {
        "protocol",
        "port",
        "path",
        "check_interval_seconds",
        "response_timeout_seconds",
        "healthy_threshold",
        "unhealthy_threshold",
    }
    assert {"name", "region", "size", "size_unit", "droplet_ids", "droplet_tag", "vpc_uuid"} <= set(
        lb["attributes"]
    )
    assert {"ip", "status", "urn"} <= set(lb["attributes"])
    fip = resources["digitalocean_floating_ip"]["block"]["attributes"]
    assert {"region", "droplet_id", "ip_address", "urn"} <= set(fip)
    key = resources["digitalocean_ssh_key"]["block"]["attributes"]
    assert key["fingerprint"]["computed"] is True


FORCE_NEW = """
terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.0"
    }
  }
}

variable "droplet_agent" { default = null }
variable "ipv6" { default = false }
variable "lb_network" { default = null }
variable "lb_network_stack" { default = null }
variable "lb_type" { default = null }
variable "lb_ip" { default = null }
variable "lb_check_interval" { default = 10 }
variable "fip_address" { default = null }

resource "digitalocean_droplet" "d" {
  name          = "replace-probe"
  image         = "debian-12-x64"
  region        = "nyc3"
  size          = "s-1vcpu-1gb"
  ipv6          = var.ipv6
  droplet_agent = var.droplet_agent
}

resource "digitalocean_loadbalancer" "lb" {
  name          = "replace-probe-lb"
  region        = "nyc3"
  size_unit     = 2
  network       = var.lb_network
  network_stack = var.lb_network_stack
  type          = var.lb_type
  ip            = var.lb_ip
  droplet_ids   = [digitalocean_droplet.d.id]
  forwarding_rule {
    entry_protocol  = "http"
    entry_port      = 80
    target_protocol = "http"
    target_port     = 80
  }
  healthcheck {
    protocol               = "http"
    port                   = 80
    path                   = "/"
    check_interval_seconds = var.lb_check_interval
  }
}

resource "digitalocean_floating_ip" "ip" {
  region     = "nyc3"
  ip_address = var.fip_address
}
"""
LB, FIP = "digitalocean_loadbalancer.lb", "digitalocean_floating_ip.ip"


@pytest.fixture(scope="module")
def replace_probe(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCloud, Terraform]]:
    """A droplet, a load balancer and a floating IP, to plan ForceNew changes against."""
    stack = tmp_path_factory.mktemp("force-new")
    (stack / "main.tf").write_text(FORCE_NEW)
    with (
        LocalCloud(
            tmp_path_factory.mktemp("cloud"),
            delays=Delays.uniform(0.1),
            rate_limit_per_minute=100_000,
        ) as cloud,
        local_provider(cloud.env()) as env,
    ):
        tf = Terraform(stack, env=env)
        tf.init()
        tf.apply()
        try:
            yield cloud, tf
        finally:
            tf.destroy()


@pytest.mark.parametrize(
    ("vars", "expected"),
    [
        ({"droplet_agent": True}, {D: REPLACE, LB: ["update"]}),
        ({"ipv6": True}, {D: ["update"]}),
        ({"lb_network": "INTERNAL"}, {LB: REPLACE}),
        ({"lb_network_stack": "DUALSTACK"}, {LB: REPLACE}),
        ({"lb_type": "REGIONAL_NETWORK"}, {LB: REPLACE}),
        ({"lb_ip": "127.1.4.9"}, {LB: REPLACE}),
        ({"lb_check_interval": 20}, {LB: ["update"]}),
        ({"fip_address": "127.1.3.9"}, {FIP: ["update"]}),
        ({}, {}),
    ],
    ids=[
        "droplet_agent",
        "ipv6-on",
        "lb-network",
        "lb-network_stack",
        "lb-type",
        "lb-ip",
        "lb-check",
        "fip-address",
        "none",
    ],
)
def test_force_new_as_the_real_provider(
    replace_probe: tuple[LocalCloud, Terraform], vars: dict[str, Any], expected: dict[str, Any]
) -> None:
    _cloud, tf = replace_probe
    assert planned(tf, vars) == expected


def test_turning_ipv6_off_replaces(replace_probe: tuple[LocalCloud, Terraform]) -> None:
    _cloud, tf = replace_probe
    tf.apply(vars={"ipv6": True})
    try:
        assert planned(tf, {"ipv6": False}) == {D: REPLACE, LB: ["update"]}
    finally:
        tf.apply()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1, "expected healthcheck.0.check_interval_seconds to be in the range (3 - 300), got 1"),
        (
            301,
            "expected healthcheck.0.check_interval_seconds to be in the range (3 - 300), got 301",
        ),
    ],
)
def test_validation_as_the_real_provider(
    replace_probe: tuple[LocalCloud, Terraform], value: int, message: str
) -> None:
    _cloud, tf = replace_probe
    with pytest.raises(TerraformFailed) as failed:
        tf.plan(vars={"lb_check_interval": value})
    assert message in failed.value.stderr


def test_defaults_and_size_unit_as_set(replace_probe: tuple[LocalCloud, Terraform]) -> None:
    cloud, tf = replace_probe
    state = json.loads(tf.state_pull())
    (lb,) = [r for r in state["resources"] if r["type"] == "digitalocean_loadbalancer"]
    attrs = lb["instances"][0]["attributes"]
    assert lb["instances"][0]["schema_version"] == 1
    assert attrs["size_unit"] == 2 and attrs["algorithm"] == "round_robin"
    (check,) = attrs["healthcheck"]
    assert (check["response_timeout_seconds"], check["healthy_threshold"]) == (5, 5)
    assert check["unhealthy_threshold"] == 3
    (held,) = api(cloud, "/v2/load_balancers")["load_balancers"]
    assert held["size_unit"] == 2
    (droplet,) = [r for r in state["resources"] if r["type"] == "digitalocean_droplet"]
    assert droplet["instances"][0]["attributes"]["graceful_shutdown"] is False
    (fip,) = [r for r in state["resources"] if r["type"] == "digitalocean_floating_ip"]
    assert fip["instances"][0]["attributes"]["droplet_id"] is None


def test_user_data_is_stored_as_its_hash(applied: tuple[LocalCloud, Terraform]) -> None:
    """As the real provider's StateFunc: the state keeps the SHA1; the droplet gets the text."""
    cloud, tf = applied
    text = "#cloud-config\npackages: [nginx]\n"
    tf.apply(vars={"user_data": text})
    try:
        state = json.loads(tf.state_pull())
        (droplet,) = [r for r in state["resources"] if r["type"] == "digitalocean_droplet"]
        attrs = droplet["instances"][0]["attributes"]
        assert attrs["user_data"] == hashlib.sha1(text.encode()).hexdigest()
        assert tf.plan(vars={"user_data": text}).changed is False
        # what the API received (the local cloud's record of the droplet)
        held = json.loads((cloud.state_dir / "state.json").read_text())["droplets"]
        assert [d["user_data"] for d in held if str(d["id"]) == attrs["id"]] == [text]
    finally:
        tf.apply()
