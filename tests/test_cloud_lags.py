"""DigitalOcean's lags and refusals, as the local cloud plays them, and what scaler's client does.

Each is a Delays setting (off by default, on with `scaler local up --timing realistic`) or a
refusal the real API always makes: 422 "pending event" just after an action completed and on an IP
assignment to a busy droplet, 403 on a load balancer update while it applies the last one, 422 on
a transfer into a region that holds the image, a new snapshot missing from image lists, a deleted
droplet answering as `archive` for a while, and DigitalOcean's 422 for values it does not allow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests

from scaler.cloud import Cloud, DropletSpec, Pacing
from scaler.local.api import TOKEN, Delays, LocalCloud, timing_delays

PENDING = "Droplet already has a pending event."
RULE = {"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with LocalCloud(
        tmp_path_factory.mktemp("lags"),
        delays=Delays.uniform(0.05),
        rate_limit_per_minute=100_000,
    ) as running:
        yield running


@pytest.fixture
def lagging(cloud: LocalCloud) -> Iterator[Any]:
    """Set some lags for one test; they go back to none after it."""
    before = cloud.delays

    def set_lags(**lags: float) -> None:
        cloud.delays = replace(before, **lags)

    yield set_lags
    cloud.delays = before


def call(cloud: LocalCloud, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(
        method, f"{cloud.url}/v2/{path}", json=body, headers=headers, timeout=10
    )


def ok(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    resp = call(cloud, method, path, body)
    assert resp.status_code < 300, resp.text
    return resp.json() if resp.content else None


def client(cloud: LocalCloud) -> Cloud:
    return Cloud("test", cloud.endpoint, pacing=Pacing.fast(0.05))


def active_droplet(cloud: LocalCloud, name: str = "lag") -> int:
    spec = DropletSpec(name=name, region="nyc3", size="s-1vcpu-1gb", image="debian-12-x64")
    do = client(cloud)
    droplet = do.create_droplet(spec)
    do.wait_for_droplet_active(droplet.id, 10)
    return droplet.id


def wait_idle(cloud: LocalCloud, droplet_id: int) -> None:
    deadline = time.monotonic() + 10
    while ok(cloud, "GET", f"droplets/{droplet_id}")["droplet"]["locked"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.1)


def test_pending_event_just_after_an_action_is_retried(cloud: LocalCloud, lagging: Any) -> None:
    droplet_id = active_droplet(cloud, "pending")
    lagging(pending_after=0.6)
    do = client(cloud)
    action = do.droplet_action(droplet_id, "reboot")
    do.wait_for_action(action.id, 10, "reboot")
    # At once, the API still says the droplet is busy; scaler's client waits and retries.
    raw = call(cloud, "POST", f"droplets/{droplet_id}/actions", {"type": "power_off"})
    assert (raw.status_code, raw.json()["message"]) == (422, PENDING)
    time.sleep(0.7)
    action = do.droplet_action(droplet_id, "reboot")
    do.wait_for_action(action.id, 10, "reboot")
    cloud.reset_log()
    action = do.droplet_action(droplet_id, "power_off")
    statuses = [
        r.status for r in cloud.requests() if r.template == "POST /v2/droplets/{id}/actions"
    ]
    assert statuses[0] == 422 and statuses[-1] == 201, statuses
    assert action.type == "power_off"


def test_ip_assignment_to_a_busy_droplet_is_refused(cloud: LocalCloud) -> None:
    droplet_id = active_droplet(cloud, "busy")
    ip = ok(cloud, "POST", "reserved_ips", {"region": "nyc3"})["reserved_ip"]["ip"]
    cloud.delays = replace(cloud.delays, action=5.0)
    try:
        ok(cloud, "POST", f"droplets/{droplet_id}/actions", {"type": "reboot"})
        resp = call(
            cloud,
            "POST",
            f"reserved_ips/{ip}/actions",
            {"type": "assign", "droplet_id": droplet_id},
        )
        assert (resp.status_code, resp.json()["message"]) == (422, PENDING)
    finally:
        cloud.delays = replace(cloud.delays, action=0.05)
    wait_idle(cloud, droplet_id)
    body = {"type": "assign", "droplet_id": droplet_id}
    assert call(cloud, "POST", f"reserved_ips/{ip}/actions", body).status_code == 201


def test_load_balancer_update_while_processing_is_403(cloud: LocalCloud, lagging: Any) -> None:
    lagging(lb_update=0.5)
    body = {"name": "busy-lb", "region": "nyc3", "forwarding_rules": [RULE]}
    lb = ok(cloud, "POST", "load_balancers", body)["load_balancer"]
    resp = call(cloud, "PUT", f"load_balancers/{lb['id']}", body)
    assert resp.status_code == 403
    assert (
        resp.json()["message"]
        == "Load balancer is currently being processed; try again when it is done."
    )
    time.sleep(0.6)
    assert call(cloud, "PUT", f"load_balancers/{lb['id']}", body).status_code == 200
    ok(cloud, "DELETE", f"load_balancers/{lb['id']}")


def test_transfer_into_a_region_the_image_is_in(cloud: LocalCloud) -> None:
    droplet_id = active_droplet(cloud, "transfer")
    do = client(cloud)
    action = do.droplet_action(droplet_id, "snapshot", name="held")
    do.wait_for_action(action.id, 10, "snapshot")
    (image,) = do.droplet_snapshots(droplet_id)
    resp = call(cloud, "POST", f"images/{image.id}/actions", {"type": "transfer", "region": "nyc3"})
    assert (resp.status_code, resp.json()["message"]) == (
        422,
        "The image is already available in nyc3.",
    )
    # scaler's client (and so the bake) takes it as done, and still transfers elsewhere
    assert do.transfer_image(image.id, "nyc3") is None
    moved = do.transfer_image(image.id, "ams3")
    assert moved is not None
    do.wait_for_action(moved.id, 10, "transfer")
    assert sorted(do.get_image(image.id).regions) == ["ams3", "nyc3"]


def test_a_new_snapshot_is_missing_from_lists_for_a_while(cloud: LocalCloud, lagging: Any) -> None:
    lagging(image_listing=0.8)
    droplet_id = active_droplet(cloud, "listing")
    do = client(cloud)
    action = do.droplet_action(droplet_id, "snapshot", name="late-listed")
    do.wait_for_action(action.id, 10, "snapshot")
    (image,) = do.droplet_snapshots(droplet_id)  # what the bake reads: there at once
    assert image.name == "late-listed"
    assert image.id not in {i.id for i in do.snapshot_images()}
    assert do.get_image(image.id).name == "late-listed"
    time.sleep(0.9)
    assert image.id in {i.id for i in do.snapshot_images()}


def test_a_deleted_droplet_answers_archive_for_a_while(cloud: LocalCloud, lagging: Any) -> None:
    lagging(droplet_delete=0.5)
    droplet_id = active_droplet(cloud, "gone")
    ok(cloud, "DELETE", f"droplets/{droplet_id}")
    assert ok(cloud, "GET", f"droplets/{droplet_id}")["droplet"]["status"] == "archive"
    assert droplet_id not in {d["id"] for d in ok(cloud, "GET", "droplets")["droplets"]}
    assert call(cloud, "DELETE", f"droplets/{droplet_id}").status_code == 404
    time.sleep(0.6)
    assert call(cloud, "GET", f"droplets/{droplet_id}").status_code == 404


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            {"check_interval_seconds": 1},
            "health_check.check_interval_seconds must be between 3 and 300, got 1.",
        ),
        (
            {"healthy_threshold": 99},
            "health_check.healthy_threshold must be between 2 and 10, got 99.",
        ),
        ({"port": 0}, "health_check.port must be between 1 and 65535, got 0."),
    ],
    ids=["interval-1s", "threshold-99", "port-0"],
)
def test_values_digitalocean_refuses(
    cloud: LocalCloud, check: dict[str, Any], message: str
) -> None:
    health = {"protocol": "http", "port": 80, "path": "/"} | check
    body = {"name": "bad", "region": "nyc3", "forwarding_rules": [RULE], "health_check": health}
    resp = call(cloud, "POST", "load_balancers", body)
    assert (resp.status_code, resp.json()["id"], resp.json()["message"]) == (
        422,
        "unprocessable_entity",
        message,
    )


def test_realistic_timing_profile() -> None:
    realistic = timing_delays("realistic", None)
    assert realistic is not None
    assert 10 <= realistic.droplet_boot <= 60 and 30 <= realistic.load_balancer <= 120
    assert realistic.snapshot_per_gb >= 60 and realistic.droplet_delete > 0
    assert timing_delays("default", None) is None
    # --delay paces boots and actions; the lags stay realistic
    quick = timing_delays("realistic", 0.1)
    assert quick is not None and (quick.droplet_boot, quick.action) == (0.1, 0.1)
    assert quick.lb_update == realistic.lb_update
