"""Requests checked against DigitalOcean's OpenAPI spec (issue 16): what the spec describes is
refused as DigitalOcean refuses it, what it does not describe passes through to the handlers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import API_SPEC, free_network, need

from scaler.local.api import TOKEN, Delays, LocalCloud, LocalCloudError

RULE = {"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}
LB = {"name": "web-lb", "region": "nyc3", "forwarding_rules": [RULE], "droplet_ids": []}
DROPLET = {"name": "web-1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
SCALER = Path(sys.executable).parent / "scaler"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    need(API_SPEC.is_file(), f"{API_SPEC} is absent (the DigitalOcean API spec)")
    with LocalCloud(
        tmp_path_factory.mktemp("checked"),
        delays=Delays.uniform(0.05),
        rate_limit_per_minute=100_000,
        spec=API_SPEC,
    ) as running:
        yield running


def call(cloud: LocalCloud, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(
        method, f"{cloud.url}/v2/{path}", json=body, headers=headers, timeout=10
    )


REFUSED = [
    # DigitalOcean's allowed values the spec does not carry (the handlers know them)
    (
        "POST",
        "load_balancers",
        LB | {"health_check": {"protocol": "http", "port": 80, "check_interval_seconds": 1}},
        422,
        "health_check.check_interval_seconds must be between 3 and 300, got 1.",
    ),
    (
        "POST",
        "load_balancers",
        LB | {"health_check": {"protocol": "http", "port": 80, "healthy_threshold": 99}},
        422,
        "health_check.healthy_threshold must be between 2 and 10, got 99.",
    ),
    # the spec's own ranges, enums, required fields, patterns and types
    (
        "POST",
        "load_balancers",
        LB | {"size_unit": 0},
        422,
        "size_unit must be between 1 and 100, got 0.",
    ),
    (
        "POST",
        "load_balancers",
        LB | {"size_unit": "2"},
        400,
        'size_unit must be an integer, got "2".',
    ),
    (
        "POST",
        "load_balancers",
        LB | {"forwarding_rules": []},
        422,
        "forwarding_rules must have at least 1 item.",
    ),
    (
        "POST",
        "load_balancers",
        LB | {"health_check": {"protocol": "ftp", "port": 21}},
        422,
        'health_check.protocol must be one of http, https, tcp, got "ftp".',
    ),
    (
        "POST",
        "load_balancers",
        LB | {"forwarding_rules": [RULE | {"entry_protocol": "smtp"}]},
        422,
        "forwarding_rules[0].entry_protocol must be one of http, https, http2, http3, tcp, "
        'udp, got "smtp".',
    ),
    (
        "POST",
        "load_balancers",
        LB | {"tag": "web"},
        422,
        "Specify either droplet_ids or tag, not both.",
    ),
    (
        "POST",
        "load_balancers",
        LB | {"http_idle_timeout_seconds": 5},
        422,
        "http_idle_timeout_seconds must be between 30 and 600, got 5.",
    ),
    (
        "POST",
        "droplets",
        {k: v for k, v in DROPLET.items() if k != "name"},
        422,
        "name is required.",
    ),
    (
        "POST",
        "droplets",
        DROPLET | {"name": "web 1"},
        422,
        'name "web 1" is not valid (it must match ^[a-zA-Z0-9]?[a-z0-9A-Z.\\-]*[a-z0-9A-Z]$).',
    ),
    (
        "POST",
        "droplets",
        DROPLET | {"image": 1.5},
        400,
        "image must be a string or an integer, got 1.5.",
    ),
    (
        "POST",
        "droplets",
        DROPLET | {"backups": "yes"},
        400,
        'backups must be a boolean, got "yes".',
    ),
    (
        "POST",
        "droplets/1/actions",
        {"type": "explode"},
        422,
        "type must be one of enable_backups, disable_backups, reboot, power_cycle, shutdown, "
        "power_off, power_on, restore, password_reset, resize, rebuild, rename, "
        'change_kernel, enable_ipv6, snapshot, got "explode".',
    ),
    ("POST", "account/keys", {"name": "k"}, 422, "public_key is required."),
    (
        "POST",
        "tags",
        {"name": "no spaces"},
        422,
        'name "no spaces" is not valid (it must match ^[a-zA-Z0-9_\\-\\:]+$).',
    ),
    (
        "POST",
        "firewalls",
        {"name": "fw", "inbound_rules": [{"protocol": "icmpv6", "sources": {}}]},
        422,
        'inbound_rules[0].protocol must be one of tcp, udp, icmp, got "icmpv6".',
    ),
    # queries
    ("DELETE", "droplets", None, 422, "tag_name is required."),
    ("GET", "droplets?per_page=0", None, 422, "per_page must be at least 1, got 0."),
    ("GET", "droplets?page=two", None, 400, "page must be an integer, got 'two'."),
    (
        "GET",
        "images?type=snapshot",
        None,
        422,
        "type must be one of application, distribution, got 'snapshot'.",
    ),
    ("GET", "images?private=maybe", None, 400, "private must be true or false, got 'maybe'."),
    (
        "GET",
        "snapshots?resource_type=disk",
        None,
        422,
        "resource_type must be one of droplet, volume, got 'disk'.",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    REFUSED,
    ids=[f"{m} {p.split('?')[0]} {msg[:30]}" for m, p, _b, _s, msg in REFUSED],
)
def test_a_request_digitalocean_refuses_gets_its_answer(
    cloud: LocalCloud, method: str, path: str, body: Any, status: int, message: str
) -> None:
    before = cloud.summary()
    resp = call(cloud, method, path, body)
    error = {400: "bad_request", 422: "unprocessable_entity"}[status]
    assert (resp.status_code, resp.json()["id"], resp.json()["message"]) == (
        status,
        error,
        message,
    )
    assert cloud.summary() == before  # nothing was made


def test_what_digitalocean_takes_is_taken(cloud: LocalCloud) -> None:
    """Nulls are fields left out, unknown fields and per_page past 200 are ignored, an icmp rule
    needs no ports, a balancer may start with no droplets: all as the real API."""
    made = call(cloud, "POST", "droplets", DROPLET | {"tags": None, "colour": "blue"})
    assert made.status_code == 202, made.text
    assert call(cloud, "GET", "droplets?per_page=500").json()["meta"] == {"total": 1}
    rules = {
        "name": "fw-icmp",
        "inbound_rules": [{"protocol": "icmp", "sources": {"addresses": ["0.0.0.0/0"]}}],
    }
    assert call(cloud, "POST", "firewalls", rules).status_code == 202
    empty = {k: v for k, v in LB.items() if k != "droplet_ids"}
    assert call(cloud, "POST", "load_balancers", empty).status_code == 202
    assert call(cloud, "POST", "load_balancers", LB).status_code == 202


def test_an_operation_the_spec_does_not_describe_passes_through(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    assert cloud.validator is not None
    # The subset has no /v2/projects/{project_id}: its handler alone decides.
    assert not cloud.validator.describes("PATCH", "/v2/projects/{project_id}")
    body = {"name": "site", "purpose": "Website or blog", "environment": "Production"}
    made = call(cloud, "POST", "projects", body)
    assert made.status_code == 201, made.text
    project = made.json()["project"]["id"]
    resp = call(cloud, "PATCH", f"projects/{project}", {"description": "the site", "whatever": [1]})
    assert resp.status_code == 200, resp.text
    # A spec of one operation checks that one and nothing else.
    spec = tmp_path / "one.yaml"
    spec.write_text(
        json.dumps(
            {
                "openapi": "3.0.0",
                "paths": {
                    "/v2/tags": {
                        "post": {
                            "requestBody": {
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "properties": {
                                                "name": {"type": "string", "maxLength": 3}
                                            },
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        )
    )
    with LocalCloud(tmp_path / "one", delays=Delays.uniform(0.05), spec=spec) as one:
        long = call(one, "POST", "tags", {"name": "long"})
        assert (long.status_code, long.json()["message"]) == (
            422,
            "name must be at most 3 characters long.",
        )
        assert call(one, "POST", "tags", {"name": "ok"}).status_code == 201
        assert call(one, "GET", "droplets?per_page=0").status_code == 200  # not described


def test_without_a_spec_nothing_is_checked_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCALER_LOCAL_SPEC", raising=False)
    with LocalCloud(tmp_path / "plain", delays=Delays.uniform(0.05)) as plain:
        assert plain.validator is None
        assert call(plain, "GET", "images?type=snapshot").status_code == 200
        # the handlers still refuse what DigitalOcean refuses beyond its spec
        bad = LB | {"health_check": {"protocol": "http", "port": 80, "healthy_threshold": 99}}
        assert call(plain, "POST", "load_balancers", bad).status_code == 422


def test_a_spec_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LocalCloudError) as missing:
        LocalCloud(tmp_path / "c", spec=tmp_path / "nope.yaml")
    assert str(missing.value) == (
        f"cannot read the API spec {tmp_path / 'nope.yaml'} (No such file or directory); pass "
        "--spec with DigitalOcean's OpenAPI file, or unset SCALER_LOCAL_SPEC"
    )
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(LocalCloudError) as odd:
        LocalCloud(tmp_path / "d", spec=tmp_path / "list.yaml")
    assert str(odd.value) == f"{tmp_path / 'list.yaml'} is not an OpenAPI spec (it has no paths)"


def test_local_up_takes_the_spec(tmp_path: Path) -> None:
    need(API_SPEC.is_file(), f"{API_SPEC} is absent (the DigitalOcean API spec)")
    state = tmp_path / "state"
    up = [str(SCALER), "local", "up", "--state-dir", str(state), "--port", "0"]
    up += ["--network", str(free_network()), "--droplets", "directory", "--spec", str(API_SPEC)]
    started = subprocess.run(up, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        env = dict(
            line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
        )
        url = env["SCALER_LOCAL_URL"]
        resp = requests.delete(
            f"{url}/v2/droplets", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert (resp.status_code, resp.json()["message"]) == (422, "tag_name is required.")
    finally:
        subprocess.run(
            [str(SCALER), "local", "down", "--state-dir", str(state)],
            capture_output=True,
            timeout=60,
        )
