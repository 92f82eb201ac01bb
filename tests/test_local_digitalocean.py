"""python-digitalocean, unchanged, drives the local cloud through DIGITALOCEAN_END_POINT."""

from __future__ import annotations

import base64
import re
import time

import digitalocean
import pytest
from digitalocean.baseapi import DataReadError, NotFoundError

from scaler.local.api import TOKEN, LocalCloud


@pytest.fixture
def cloud(fresh_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> LocalCloud:
    for key, value in fresh_cloud.env().items():
        monkeypatch.setenv(key, value)
    return fresh_cloud


def _public_key(seed: str) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + seed.encode().ljust(32, b"-")[:32]
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {seed}@laptop"


def _droplet(name: str, **extra: object) -> digitalocean.Droplet:
    droplet = digitalocean.Droplet(
        token=TOKEN,
        name=name,
        region="nyc3",
        image="debian-12-x64",
        size_slug="s-1vcpu-1gb",
        **extra,
    )
    droplet.create()
    return droplet


def _wait_active(droplet: digitalocean.Droplet) -> None:
    action = droplet.get_action(droplet.action_ids[0])
    assert action.wait(update_every_seconds=0.05, repeat=100)
    droplet.load()
    assert droplet.status == "active"


def test_droplet_lifecycle_with_snapshot(cloud: LocalCloud) -> None:
    key = digitalocean.SSHKey(token=TOKEN, name="laptop", public_key=_public_key("me"))
    key.create()
    droplet = _droplet("wp-build", ssh_keys=[key.id], tags=["build"])
    assert droplet.id == 100000001
    with pytest.raises(DataReadError, match=re.escape("Droplet already has a pending event.")):
        droplet.power_off()
    _wait_active(droplet)
    assert droplet.ip_address == f"127.{cloud.network}.1.1"
    assert droplet.private_ip_address == f"127.{cloud.network}.2.1"
    action = droplet.take_snapshot("wp-2024", return_dict=False, power_off=True)
    assert action.wait(update_every_seconds=0.05, repeat=100)
    droplet.load()
    assert droplet.status == "off"
    manager = digitalocean.Manager(token=TOKEN)
    [image] = manager.get_my_images()
    assert (image.name, image.type, image.public) == ("wp-2024", "snapshot", False)
    assert droplet.snapshot_ids == [image.id]
    assert [s.id for s in manager.get_all_snapshots()] == [str(image.id)]
    assert [s.name for s in manager.get_droplet_snapshots()] == ["wp-2024"]
    image.rename("wp-final")
    assert manager.get_image(image.id).name == "wp-final"
    image.transfer("ams3")
    time.sleep(0.3)
    assert manager.get_image(image.id).regions == ["nyc3", "ams3"]
    droplet.destroy()
    with pytest.raises(NotFoundError):
        manager.get_droplet(droplet.id)
    image.destroy()
    assert manager.get_my_images() == []
    key.destroy()
    assert manager.get_all_sshkeys() == []


def test_keys_images_regions_sizes(cloud: LocalCloud) -> None:
    manager = digitalocean.Manager(token=TOKEN)
    key = digitalocean.SSHKey(token=TOKEN, name="ci", public_key=_public_key("ci"))
    key.create()
    found = digitalocean.SSHKey(token=TOKEN, fingerprint=key.fingerprint or "")
    found.fingerprint = manager.get_ssh_key(key.id).fingerprint
    found.id = ""
    found.load()
    assert (found.id, found.name) == (key.id, "ci")
    again = digitalocean.SSHKey(token=TOKEN)
    assert again.load_by_pub_key(_public_key("ci")).id == key.id
    assert [i.slug for i in manager.get_distro_images()] == [
        "debian-12-x64",
        "ubuntu-22-04-x64",
        "ubuntu-24-04-x64",
        "debian-9-x64",
        "debian-11-x64",
    ]
    assert manager.get_image("ubuntu-24-04-x64").id == 150000003
    assert "nyc3" in [r.slug for r in manager.get_all_regions()]
    assert "s-1vcpu-1gb" in [s.slug for s in manager.get_all_sizes()]
    assert manager.get_account().status == "active"


def test_tags_and_paginated_listing(cloud: LocalCloud) -> None:
    manager = digitalocean.Manager(token=TOKEN)
    droplets = digitalocean.Droplet.create_multiple(
        token=TOKEN,
        names=[f"web-{n}" for n in range(5)],
        region="nyc3",
        image="ubuntu-22-04-x64",
        size_slug="s-1vcpu-1gb",
    )
    assert len(droplets) == 5
    # python-digitalocean follows links.pages.next when it is handed a small page
    assert len(manager.get_all_droplets(params={"per_page": 2})) == 5
    tag = digitalocean.Tag(token=TOKEN, name="wp_node")
    tag.create()
    tag.add_droplets([d.id for d in droplets[:3]])
    assert sorted(d.name for d in manager.get_all_droplets(tag_name="wp_node")) == [
        "web-0",
        "web-1",
        "web-2",
    ]
    tag.remove_droplets([droplets[0].id])
    assert len(manager.get_all_droplets(tag_name="wp_node")) == 2
    assert [t.name for t in manager.get_all_tags()] == ["wp_node"]
    tag.delete()
    assert manager.get_all_tags() == []


def test_load_balancer(cloud: LocalCloud) -> None:
    one, two = _droplet("wp-1"), _droplet("wp-2")
    lb = digitalocean.LoadBalancer(
        token=TOKEN,
        name="wp-lb",
        region="nyc3",
        forwarding_rules=[
            digitalocean.ForwardingRule(
                entry_protocol="http", entry_port=80, target_protocol="http", target_port=80
            )
        ],
        health_check=digitalocean.HealthCheck(path="/wp-login.php", check_interval_seconds=3),
        droplet_ids=[one.id],
    )
    lb.create()
    assert lb.status == "new"
    assert lb.health_check.path == "/wp-login.php"
    lb.add_droplets([two.id])
    assert lb.load().droplet_ids == [one.id, two.id]
    lb.remove_droplets([one.id])
    assert lb.load().droplet_ids == [two.id]
    lb.name = "wp-lb-2"
    lb.save()
    manager = digitalocean.Manager(token=TOKEN)
    [listed] = manager.get_all_load_balancers()
    assert (listed.name, listed.forwarding_rules[0].target_port) == ("wp-lb-2", 80)
    lb.destroy()
    assert manager.get_all_load_balancers() == []


def test_floating_ip_assign(cloud: LocalCloud) -> None:
    droplet = _droplet("db-1")
    _wait_active(droplet)
    ip = digitalocean.FloatingIP(token=TOKEN, region_slug="nyc3").reserve()
    assert ip.ip == f"127.{cloud.network}.3.1"
    ip.assign(droplet.id)
    manager = digitalocean.Manager(token=TOKEN)
    deadline = time.monotonic() + 5
    while not manager.get_floating_ip(ip.ip).droplet:
        assert time.monotonic() < deadline, "the assignment never completed"
        time.sleep(0.05)
    assert manager.get_floating_ip(ip.ip).droplet["id"] == droplet.id
    assert [f.ip for f in manager.get_all_floating_ips()] == [ip.ip]
    ip.destroy()
    assert manager.get_all_floating_ips() == []
