"""The local DigitalOcean API over real HTTP: shapes checked against DigitalOcean's OpenAPI spec,
behaviour (time, locks, errors, rate limits, pagination, faults, log, persistence) checked as a
client sees it."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from conftest import SHARED_DATA, need

from scaler.local.api import ROUTES, TOKEN, Delays, LocalCloud, fingerprint
from scaler.local.api.handlers.monitoring import NO_VIEW

SPEC = SHARED_DATA / "do-openapi" / "DigitalOcean-public.v2.subset.yaml"
PENDING = "Droplet already has a pending event."
# Networks of this module's own clouds: 100 + worker for the module's, 150 + worker for one
# test's (conftest's fixtures use 60+, 120+ and 180+).


# --- the spec as JSON Schema ---------------------------------------------------------------------

_OPENAPI_ONLY = {"nullable", "example", "examples", "discriminator", "xml", "externalDocs"}
_OPENAPI_ONLY |= {"readOnly", "writeOnly", "deprecated"}


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes a null type, extensions go."""
    if isinstance(node, list):
        return [_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _OPENAPI_ONLY or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key == "enum" and node.get("type") == "string":
            # The subset was written through YAML 1.1, which read the droplet status "off" as false
            # (the field's description still says "off").
            out[key] = ["off" if v is False else v for v in value]
        else:
            out[key] = _json_schema(value)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    need(SPEC.is_file(), f"{SPEC} is absent (the DigitalOcean API spec lives in ../shared/data)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded: dict[str, Any] = yaml.load(SPEC.read_text(), Loader=loader)
    return loaded


def conforms(spec: dict[str, Any], method: str, template: str, resp: requests.Response) -> None:
    """Assert the response is one DigitalOcean documents for this operation and status."""
    operation = spec["paths"][template][method.lower()]
    responses = operation["responses"]
    documented = responses.get(str(resp.status_code)) or responses["default"]
    for header in documented.get("headers", {}):
        assert header in resp.headers, f"{method} {template} {resp.status_code} lacks {header}"
    content = documented.get("content")
    if content is None:
        assert resp.content == b"", f"{method} {template} {resp.status_code} should have no body"
        return
    schema = _json_schema(content["application/json"]["schema"])
    jsonschema.Draft4Validator(schema).validate(resp.json())


# --- clients and helpers -------------------------------------------------------------------------


class Client:
    """A DigitalOcean API client that only knows HTTP."""

    def __init__(self, cloud: LocalCloud, token: str = TOKEN) -> None:
        self.cloud = cloud
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, body: Any = None, **query: Any) -> requests.Response:
        data = None if body is None else json.dumps(body)
        return self.session.request(
            method, self.cloud.url + path, data=data, params=query or None, timeout=10
        )

    def ok(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        resp = self(method, path, body, **query)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def droplet(self, name: str = "web-1", *, active: bool = True, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
        droplet: dict[str, Any] = self.ok("POST", "/v2/droplets", body | extra)["droplet"]
        if active:
            self.wait(lambda: self.status(droplet["id"]) == "active", f"droplet {name} active")
        return droplet

    def status(self, droplet_id: int) -> str:
        return str(self.ok("GET", f"/v2/droplets/{droplet_id}")["droplet"]["status"])

    def act(self, droplet_id: int, kind: str, **params: Any) -> dict[str, Any]:
        action: dict[str, Any] = self.ok(
            "POST", f"/v2/droplets/{droplet_id}/actions", {"type": kind, **params}
        )["action"]
        return action

    def finish(self, action: dict[str, Any]) -> dict[str, Any]:
        """Poll an action until it is no longer in progress."""
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.ok("GET", f"/v2/actions/{action['id']}")["action"])
            return bool(result["status"] != "in-progress")

        self.wait(done, f"action {action['id']} ({action['type']})")
        return result

    def snapshot(self, droplet_id: int, name: str = "snap") -> int:
        self.finish(self.act(droplet_id, "snapshot", name=name))
        snapshots = self.ok("GET", f"/v2/droplets/{droplet_id}/snapshots")["snapshots"]
        return int(next(s["id"] for s in snapshots if s["name"] == name))


def public_key(seed: str) -> str:
    """A well-formed OpenSSH ed25519 public key line (the API only fingerprints it)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + seed.encode().ljust(32, b".")[:32]
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {seed}"


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def module_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    cloud = LocalCloud(
        tmp_path_factory.mktemp("api-cloud"),
        delays=Delays.uniform(0.05),
    )
    with cloud:
        yield cloud


@pytest.fixture
def api(fresh_cloud: LocalCloud) -> Client:
    return Client(fresh_cloud)


# --- every implemented operation, against the spec -----------------------------------------------


@dataclass
class World:
    """Resources the schema scenarios share; each scenario makes what it destroys or changes."""

    api: Client
    key: dict[str, Any] = field(default_factory=dict)
    droplet: dict[str, Any] = field(default_factory=dict)
    image_id: int = 0
    lb: dict[str, Any] = field(default_factory=dict)
    ip: str = ""
    action_id: int = 0
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


@pytest.fixture(scope="module")
def world(module_cloud: LocalCloud) -> World:
    api = Client(module_cloud)
    w = World(api)
    w.key = api.ok("POST", "/v2/account/keys", {"name": "world", "public_key": public_key("w")})[
        "ssh_key"
    ]
    w.droplet = api.droplet("world-1", tags=["world"])
    w.image_id = api.snapshot(w.droplet["id"], "world-snap")
    w.action_id = api.finish(api.act(w.droplet["id"], "power_on"))["id"]
    lb_body = {
        "name": "world-lb",
        "region": "nyc3",
        "droplet_ids": [w.droplet["id"]],
        "forwarding_rules": [_RULE],
    }
    w.lb = api.ok("POST", "/v2/load_balancers", lb_body)["load_balancer"]
    w.ip = api.ok("POST", "/v2/floating_ips", {"region": "nyc3"})["floating_ip"]["ip"]
    return w


_RULE = {"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}
Scenario = Callable[[World], requests.Response]


def _victim_droplet(w: World) -> dict[str, Any]:
    return w.api.droplet(w.name("victim"))


def _ip_scenarios(kind: str) -> dict[tuple[str, str], Scenario]:
    base = f"/v2/{kind}s"

    def assigned(w: World) -> tuple[str, int]:
        ip = w.api.ok("POST", base, {"region": "nyc3"})[kind]["ip"]
        action = w.api.ok(
            "POST", f"{base}/{ip}/actions", {"type": "assign", "droplet_id": w.droplet["id"]}
        )["action"]
        return ip, int(action["id"])

    return {
        ("GET", base): lambda w: w.api("GET", base),
        ("POST", base): lambda w: w.api("POST", base, {"droplet_id": w.droplet["id"]}),
        ("GET", f"{base}/{{{kind}}}"): lambda w: w.api("GET", f"{base}/{w.ip}"),
        ("DELETE", f"{base}/{{{kind}}}"): lambda w: w.api(
            "DELETE", f"{base}/{w.api.ok('POST', base, {'region': 'nyc3'})[kind]['ip']}"
        ),
        ("GET", f"{base}/{{{kind}}}/actions"): lambda w: w.api(
            "GET", f"{base}/{assigned(w)[0]}/actions"
        ),
        ("POST", f"{base}/{{{kind}}}/actions"): lambda w: w.api(
            "POST",
            f"{base}/{w.api.ok('POST', base, {'region': 'nyc3'})[kind]['ip']}/actions",
            {"type": "assign", "droplet_id": w.droplet["id"]},
        ),
        ("GET", f"{base}/{{{kind}}}/actions/{{action_id}}"): lambda w: w.api(
            "GET", "{}/{}/actions/{}".format(base, *assigned(w))
        ),
    }


def _firewall_body(w: World) -> dict[str, Any]:
    inbound = {"protocol": "tcp", "ports": "80", "sources": {"addresses": ["0.0.0.0/0"]}}
    outbound = {"protocol": "icmp", "destinations": {"addresses": ["0.0.0.0/0"]}}
    return {
        "name": w.name("fw"),
        "inbound_rules": [inbound],
        "outbound_rules": [outbound],
        "droplet_ids": [w.droplet["id"]],
    }


def _firewall(w: World) -> str:
    return str(w.api.ok("POST", "/v2/firewalls", _firewall_body(w))["firewall"]["id"])


def _vpc_body(w: World) -> dict[str, Any]:
    return {"name": w.name("vpc"), "region": "nyc3"}


def _vpc(w: World) -> str:
    return str(w.api.ok("POST", "/v2/vpcs", _vpc_body(w))["vpc"]["id"])


def _project_body(w: World) -> dict[str, Any]:
    return {"name": w.name("project"), "purpose": "Web Application", "environment": "Production"}


def _project(w: World) -> str:
    return str(w.api.ok("POST", "/v2/projects", _project_body(w))["project"]["id"])


def _lb(w: World, **extra: Any) -> str:
    body = {"name": w.name("lb"), "region": "nyc3", "forwarding_rules": [_RULE]} | extra
    return str(w.api.ok("POST", "/v2/load_balancers", body)["load_balancer"]["id"])


SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("GET", "/v2/account"): lambda w: w.api("GET", "/v2/account"),
    ("GET", "/v2/account/keys"): lambda w: w.api("GET", "/v2/account/keys"),
    ("POST", "/v2/account/keys"): lambda w: w.api(
        "POST", "/v2/account/keys", {"name": "k", "public_key": public_key(w.name("key"))}
    ),
    ("GET", "/v2/account/keys/{ssh_key_identifier}"): lambda w: w.api(
        "GET", f"/v2/account/keys/{w.key['fingerprint']}"
    ),
    ("PUT", "/v2/account/keys/{ssh_key_identifier}"): lambda w: w.api(
        "PUT", f"/v2/account/keys/{w.key['id']}", {"name": "renamed"}
    ),
    ("DELETE", "/v2/account/keys/{ssh_key_identifier}"): lambda w: w.api(
        "DELETE",
        "/v2/account/keys/{}".format(
            w.api.ok(
                "POST", "/v2/account/keys", {"name": "x", "public_key": public_key(w.name("d"))}
            )["ssh_key"]["id"]
        ),
    ),
    ("GET", "/v2/actions"): lambda w: w.api("GET", "/v2/actions"),
    ("GET", "/v2/actions/{action_id}"): lambda w: w.api("GET", f"/v2/actions/{w.action_id}"),
    ("GET", "/v2/droplets"): lambda w: w.api("GET", "/v2/droplets", tag_name="world"),
    ("POST", "/v2/droplets"): lambda w: w.api(
        "POST",
        "/v2/droplets",
        {"name": w.name("new"), "size": "s-1vcpu-1gb", "image": w.image_id, "region": "nyc3"},
    ),
    ("DELETE", "/v2/droplets"): lambda w: (
        w.api.droplet(w.name("tagged"), active=False, tags=["doomed"]),
        w.api("DELETE", "/v2/droplets", tag_name="doomed"),
    )[1],
    ("GET", "/v2/droplets/{droplet_id}"): lambda w: w.api("GET", f"/v2/droplets/{w.droplet['id']}"),
    ("DELETE", "/v2/droplets/{droplet_id}"): lambda w: w.api(
        "DELETE", f"/v2/droplets/{_victim_droplet(w)['id']}"
    ),
    ("GET", "/v2/droplets/{droplet_id}/snapshots"): lambda w: w.api(
        "GET", f"/v2/droplets/{w.droplet['id']}/snapshots"
    ),
    ("GET", "/v2/droplets/{droplet_id}/actions"): lambda w: w.api(
        "GET", f"/v2/droplets/{w.droplet['id']}/actions"
    ),
    ("POST", "/v2/droplets/{droplet_id}/actions"): lambda w: w.api(
        "POST", f"/v2/droplets/{_victim_droplet(w)['id']}/actions", {"type": "shutdown"}
    ),
    ("POST", "/v2/droplets/actions"): lambda w: (
        w.api.droplet(w.name("batch"), tags=["batch"]),
        w.api("POST", "/v2/droplets/actions", {"type": "power_off"}, tag_name="batch"),
    )[1],
    ("GET", "/v2/droplets/{droplet_id}/actions/{action_id}"): lambda w: w.api(
        "GET", f"/v2/droplets/{w.droplet['id']}/actions/{w.action_id}"
    ),
    ("GET", "/v2/images"): lambda w: w.api("GET", "/v2/images"),
    ("GET", "/v2/images/{image_id}"): lambda w: w.api("GET", f"/v2/images/{w.image_id}"),
    ("PUT", "/v2/images/{image_id}"): lambda w: w.api(
        "PUT", f"/v2/images/{w.image_id}", {"name": "renamed", "description": "baked"}
    ),
    ("DELETE", "/v2/images/{image_id}"): lambda w: w.api(
        "DELETE", f"/v2/images/{w.api.snapshot(w.droplet['id'], w.name('gone'))}"
    ),
    ("GET", "/v2/images/{image_id}/actions"): lambda w: w.api(
        "GET", f"/v2/images/{w.image_id}/actions"
    ),
    ("POST", "/v2/images/{image_id}/actions"): lambda w: w.api(
        "POST", f"/v2/images/{w.image_id}/actions", {"type": "transfer", "region": "ams3"}
    ),
    ("GET", "/v2/images/{image_id}/actions/{action_id}"): lambda w: w.api(
        "GET",
        "/v2/images/{}/actions/{}".format(
            w.image_id,
            w.api.ok(
                "POST", f"/v2/images/{w.image_id}/actions", {"type": "transfer", "region": "fra1"}
            )["action"]["id"],
        ),
    ),
    ("GET", "/v2/load_balancers"): lambda w: w.api("GET", "/v2/load_balancers"),
    ("POST", "/v2/load_balancers"): lambda w: w.api(
        "POST",
        "/v2/load_balancers",
        {
            "name": w.name("lb"),
            "region": "nyc3",
            "tag": "world",
            "forwarding_rules": [_RULE],
            "health_check": {"protocol": "http", "port": 80, "path": "/healthz"},
        },
    ),
    ("GET", "/v2/load_balancers/{lb_id}"): lambda w: w.api(
        "GET", f"/v2/load_balancers/{w.lb['id']}"
    ),
    ("PUT", "/v2/load_balancers/{lb_id}"): lambda w: w.api(
        "PUT",
        f"/v2/load_balancers/{_lb(w)}",
        {"name": "lb-updated", "region": "nyc3", "forwarding_rules": [_RULE], "droplet_ids": []},
    ),
    ("DELETE", "/v2/load_balancers/{lb_id}"): lambda w: w.api(
        "DELETE", f"/v2/load_balancers/{_lb(w)}"
    ),
    ("POST", "/v2/load_balancers/{lb_id}/droplets"): lambda w: w.api(
        "POST", f"/v2/load_balancers/{_lb(w)}/droplets", {"droplet_ids": [w.droplet["id"]]}
    ),
    ("DELETE", "/v2/load_balancers/{lb_id}/droplets"): lambda w: w.api(
        "DELETE",
        f"/v2/load_balancers/{_lb(w, droplet_ids=[w.droplet['id']])}/droplets",
        {"droplet_ids": [w.droplet["id"]]},
    ),
    ("POST", "/v2/load_balancers/{lb_id}/forwarding_rules"): lambda w: w.api(
        "POST",
        f"/v2/load_balancers/{_lb(w)}/forwarding_rules",
        {"forwarding_rules": [_RULE | {"entry_port": 8080}]},
    ),
    ("DELETE", "/v2/load_balancers/{lb_id}/forwarding_rules"): lambda w: w.api(
        "DELETE",
        f"/v2/load_balancers/{_lb(w, forwarding_rules=[_RULE, _RULE | {'entry_port': 81}])}"
        "/forwarding_rules",
        {"forwarding_rules": [_RULE]},
    ),
    ("GET", "/v2/regions"): lambda w: w.api("GET", "/v2/regions"),
    ("GET", "/v2/sizes"): lambda w: w.api("GET", "/v2/sizes"),
    ("GET", "/v2/snapshots"): lambda w: w.api("GET", "/v2/snapshots", resource_type="droplet"),
    ("GET", "/v2/snapshots/{snapshot_id}"): lambda w: w.api("GET", f"/v2/snapshots/{w.image_id}"),
    ("DELETE", "/v2/snapshots/{snapshot_id}"): lambda w: w.api(
        "DELETE", f"/v2/snapshots/{w.api.snapshot(w.droplet['id'], w.name('gone'))}"
    ),
    ("GET", "/v2/tags"): lambda w: w.api("GET", "/v2/tags"),
    ("POST", "/v2/tags"): lambda w: w.api("POST", "/v2/tags", {"name": w.name("tag")}),
    ("GET", "/v2/tags/{tag_id}"): lambda w: w.api("GET", "/v2/tags/world"),
    ("DELETE", "/v2/tags/{tag_id}"): lambda w: w.api(
        "DELETE",
        "/v2/tags/{}".format(w.api.ok("POST", "/v2/tags", {"name": w.name("t")})["tag"]["name"]),
    ),
    ("POST", "/v2/tags/{tag_id}/resources"): lambda w: w.api(
        "POST",
        "/v2/tags/world/resources",
        {"resources": [{"resource_id": str(w.image_id), "resource_type": "image"}]},
    ),
    ("DELETE", "/v2/tags/{tag_id}/resources"): lambda w: w.api(
        "DELETE",
        "/v2/tags/world/resources",
        {"resources": [{"resource_id": str(w.image_id), "resource_type": "image"}]},
    ),
    **_ip_scenarios("floating_ip"),
    **_ip_scenarios("reserved_ip"),
    ("GET", "/v2/firewalls"): lambda w: w.api("GET", "/v2/firewalls"),
    ("POST", "/v2/firewalls"): lambda w: w.api("POST", "/v2/firewalls", _firewall_body(w)),
    ("GET", "/v2/firewalls/{firewall_id}"): lambda w: w.api("GET", f"/v2/firewalls/{_firewall(w)}"),
    ("PUT", "/v2/firewalls/{firewall_id}"): lambda w: w.api(
        "PUT", f"/v2/firewalls/{_firewall(w)}", _firewall_body(w)
    ),
    ("DELETE", "/v2/firewalls/{firewall_id}"): lambda w: w.api(
        "DELETE", f"/v2/firewalls/{_firewall(w)}"
    ),
    ("POST", "/v2/firewalls/{firewall_id}/droplets"): lambda w: w.api(
        "POST", f"/v2/firewalls/{_firewall(w)}/droplets", {"droplet_ids": [w.droplet["id"]]}
    ),
    ("DELETE", "/v2/firewalls/{firewall_id}/droplets"): lambda w: w.api(
        "DELETE", f"/v2/firewalls/{_firewall(w)}/droplets", {"droplet_ids": [w.droplet["id"]]}
    ),
    ("GET", "/v2/vpcs"): lambda w: w.api("GET", "/v2/vpcs"),
    ("POST", "/v2/vpcs"): lambda w: w.api("POST", "/v2/vpcs", _vpc_body(w)),
    ("GET", "/v2/vpcs/{vpc_id}"): lambda w: w.api("GET", f"/v2/vpcs/{_vpc(w)}"),
    ("PUT", "/v2/vpcs/{vpc_id}"): lambda w: w.api(
        "PUT", f"/v2/vpcs/{_vpc(w)}", {"name": w.name("vpc"), "description": "d"}
    ),
    ("PATCH", "/v2/vpcs/{vpc_id}"): lambda w: w.api(
        "PATCH", f"/v2/vpcs/{_vpc(w)}", {"description": "patched"}
    ),
    ("DELETE", "/v2/vpcs/{vpc_id}"): lambda w: w.api("DELETE", f"/v2/vpcs/{_vpc(w)}"),
    ("GET", "/v2/projects"): lambda w: w.api("GET", "/v2/projects"),
    ("POST", "/v2/projects"): lambda w: w.api("POST", "/v2/projects", _project_body(w)),
    ("GET", "/v2/projects/{project_id}/resources"): lambda w: w.api(
        "GET", f"/v2/projects/{_project(w)}/resources"
    ),
    ("POST", "/v2/projects/{project_id}/resources"): lambda w: w.api(
        "POST",
        f"/v2/projects/{_project(w)}/resources",
        {"resources": [f"do:droplet:{w.droplet['id']}"]},
    ),
    ("GET", "/v2/projects/{project_id}"): lambda w: w.api("GET", f"/v2/projects/{_project(w)}"),
    ("PATCH", "/v2/projects/{project_id}"): lambda w: w.api(
        "PATCH", f"/v2/projects/{_project(w)}", {"description": "patched"}
    ),
    ("PUT", "/v2/projects/{project_id}"): lambda w: w.api(
        "PUT", f"/v2/projects/{_project(w)}", {"name": w.name("p"), "purpose": "Service or API"}
    ),
    ("DELETE", "/v2/projects/{project_id}"): lambda w: w.api(
        "DELETE", f"/v2/projects/{_project(w)}"
    ),
    (
        "GET",
        "/v2/monitoring/metrics/load_balancer/droplets_health_checks",
    ): lambda w: w.api(
        "GET",
        "/v2/monitoring/metrics/load_balancer/droplets_health_checks",
        lb_id=w.lb["id"],
        start=int(time.time()) - 60,
        end=int(time.time()),
    ),
}
# Answered from a running balancer's view: with directory droplets there is none, and the
# answer is a 404 (the 200 is checked on real droplets in test_balancer.py).
_NO_VIEW_HERE = {("GET", "/v2/monitoring/metrics/load_balancer/droplets_health_checks")}
# Paths the real provider uses that DigitalOcean's spec subset does not carry (their answers
# are checked by the provider tests instead).
_OUTSIDE_SUBSET = {
    ("GET", "/v2/projects/{project_id}"),
    ("PATCH", "/v2/projects/{project_id}"),
    ("PUT", "/v2/projects/{project_id}"),
    ("DELETE", "/v2/projects/{project_id}"),
}


def test_every_route_is_in_the_spec_and_has_a_scenario(spec: dict[str, Any]) -> None:
    routes = {(r.method, r.spec_path) for r in ROUTES}
    assert routes == set(SCENARIOS)
    for method, path in routes - _OUTSIDE_SUBSET:
        assert method.lower() in spec["paths"][path], f"{method} {path} is not in the spec"
    assert not any(m.lower() in spec["paths"].get(p, {}) for m, p in _OUTSIDE_SUBSET)


@pytest.mark.parametrize("operation", sorted(SCENARIOS), ids=lambda op: " ".join(op))
def test_answers_conform_to_the_spec(
    operation: tuple[str, str], world: World, spec: dict[str, Any]
) -> None:
    method, template = operation
    resp = SCENARIOS[operation](world)
    if operation in _NO_VIEW_HERE:
        assert resp.status_code == 404, resp.text
        assert resp.json()["message"] == NO_VIEW
    else:
        assert resp.status_code < 300, resp.text
    if operation not in _OUTSIDE_SUBSET:
        conforms(spec, method, template, resp)


def test_creating_many_droplets_conforms(world: World, spec: dict[str, Any]) -> None:
    body = {"names": ["many-1", "many-2"], "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    resp = world.api("POST", "/v2/droplets", body)
    assert resp.status_code == 202
    conforms(spec, "POST", "/v2/droplets", resp)
    assert [d["name"] for d in resp.json()["droplets"]] == ["many-1", "many-2"]
    assert len(resp.json()["links"]["actions"]) == 2


def test_errors_conform_to_the_spec(world: World, spec: dict[str, Any]) -> None:
    anonymous = requests.get(world.api.cloud.url + "/v2/droplets", timeout=5)
    assert anonymous.status_code == 401
    conforms(spec, "GET", "/v2/droplets", anonymous)
    missing = world.api("GET", "/v2/droplets/1")
    assert missing.status_code == 404
    conforms(spec, "GET", "/v2/droplets/{droplet_id}", missing)
    bad = world.api("POST", "/v2/droplets", {"name": "x", "size": "huge", "image": "debian-12-x64"})
    assert bad.status_code == 422
    conforms(spec, "POST", "/v2/droplets", bad)


# --- behaviour -----------------------------------------------------------------------------------


def test_missing_or_empty_token_is_401(fresh_cloud: LocalCloud) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        resp = requests.get(fresh_cloud.url + "/v2/account", headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.json()["id"] == "unauthorized"
        assert resp.json()["message"] == "Unable to authenticate you"
    assert Client(fresh_cloud, token="anything-at-all")("GET", "/v2/account").status_code == 200


def test_unknown_things_are_404_json(api: Client) -> None:
    for path in ("/v2/droplets/424242", "/v2/images/no-such-slug", "/v2/nothing", "/v2/tags/nope"):
        resp = api("GET", path)
        assert resp.status_code == 404, path
        assert resp.json()["id"] == "not_found"
        assert resp.json()["message"] == "The resource you were accessing could not be found."
    assert api("PATCH", "/v2/droplets").status_code == 405
    bad = api.session.post(api.cloud.url + "/v2/tags", data="{nope", timeout=5)
    assert bad.status_code == 400
    assert bad.json()["id"] == "bad_request"


def test_droplet_goes_new_then_active_with_addresses(api: Client) -> None:
    api.cloud.delays = Delays.uniform(0.4)
    droplet = api.droplet("web-1", active=False, tags=["web"])
    assert droplet["status"] == "new"
    assert droplet["locked"] is False
    net = api.cloud.network
    v4 = {n["type"]: n["ip_address"] for n in droplet["networks"]["v4"]}
    assert v4 == {"public": f"127.{net}.1.1", "private": f"127.{net}.2.1"}
    assert droplet["image"]["slug"] == "debian-12-x64"
    assert droplet["size"]["slug"] == droplet["size_slug"] == "s-1vcpu-1gb"
    assert droplet["region"]["slug"] == "nyc3"
    assert droplet["tags"] == ["web"]
    assert droplet["vpc_uuid"]
    assert not _port_open(v4["public"], api.cloud.machines.web_port())
    api.wait(lambda: api.status(droplet["id"]) == "active", "active")
    # active means its insides run: the web listener answers on the public address
    assert _port_open(v4["public"], api.cloud.machines.web_port())
    second = api.droplet("web-2", active=False)
    assert second["networks"]["v4"][0]["ip_address"] == f"127.{net}.1.2"


def test_second_action_while_one_runs_is_422_pending_event(api: Client) -> None:
    api.cloud.delays = Delays.uniform(0.3)
    droplet = api.droplet(active=False)
    creating = api("POST", f"/v2/droplets/{droplet['id']}/actions", {"type": "power_off"})
    assert creating.status_code == 422
    assert creating.json() == creating.json() | {"id": "unprocessable_entity", "message": PENDING}
    api.wait(lambda: api.status(droplet["id"]) == "active", "active")
    shutdown = api.act(droplet["id"], "shutdown")
    assert shutdown["status"] == "in-progress"
    assert api.ok("GET", f"/v2/droplets/{droplet['id']}")["droplet"]["locked"] is True
    again = api("POST", f"/v2/droplets/{droplet['id']}/actions", {"type": "shutdown"})
    assert (again.status_code, again.json()["message"]) == (422, PENDING)
    done = api.finish(shutdown)
    assert done["status"] == "completed"
    assert done["completed_at"] is not None
    after = api.ok("GET", f"/v2/droplets/{droplet['id']}")["droplet"]
    assert (after["status"], after["locked"]) == ("off", False)


def test_power_rename_resize_change_the_droplet(api: Client) -> None:
    droplet = api.droplet()
    web = droplet["networks"]["v4"][0]["ip_address"], api.cloud.machines.web_port()
    resize = api(
        "POST", f"/v2/droplets/{droplet['id']}/actions", {"type": "resize", "size": "s-2vcpu-4gb"}
    )
    assert resize.status_code == 422
    assert resize.json()["message"] == "Droplet must be powered off before it can be resized."
    api.finish(api.act(droplet["id"], "power_off"))
    assert not _port_open(*web)
    api.finish(api.act(droplet["id"], "resize", size="s-2vcpu-4gb"))
    api.finish(api.act(droplet["id"], "rename", name="web-renamed"))
    api.finish(api.act(droplet["id"], "power_on"))
    after = api.ok("GET", f"/v2/droplets/{droplet['id']}")["droplet"]
    assert (after["name"], after["size_slug"], after["status"]) == (
        "web-renamed",
        "s-2vcpu-4gb",
        "active",
    )
    assert (after["memory"], after["vcpus"], after["disk"]) == (4096, 2, 80)
    assert _port_open(*web)
    kinds = [a["type"] for a in api.ok("GET", f"/v2/droplets/{droplet['id']}/actions")["actions"]]
    assert kinds == ["create", "power_off", "resize", "rename", "power_on"]


def test_snapshot_images_transfer_and_reuse(api: Client) -> None:
    droplet = api.droplet()
    root = api.cloud.machines.root(droplet["id"])
    (root / "var/www/html/index.html").write_text("baked\n")
    image_id = api.snapshot(droplet["id"], "wp-1")
    image = api.ok("GET", f"/v2/images/{image_id}")["image"]
    assert image | {"created_at": None, "size_gigabytes": None} == {
        "id": image_id,
        "name": "wp-1",
        "distribution": "Debian",
        "slug": None,
        "public": False,
        "regions": ["nyc3"],
        "created_at": None,
        "min_disk_size": 25,
        "type": "snapshot",
        "size_gigabytes": None,
        "description": "",
        "tags": [],
        "status": "available",
        "error_message": "",
    }
    assert image["size_gigabytes"] > 0
    assert api.ok("GET", f"/v2/droplets/{droplet['id']}")["droplet"]["snapshot_ids"] == [image_id]
    assert [i["id"] for i in api.ok("GET", "/v2/images", private="true")["images"]] == [image_id]
    distros = api.ok("GET", "/v2/images", type="distribution")["images"]
    assert [i["slug"] for i in distros] == [
        "debian-12-x64",
        "ubuntu-22-04-x64",
        "ubuntu-24-04-x64",
        "debian-9-x64",
        "debian-11-x64",
    ]
    assert api.ok("GET", "/v2/images/ubuntu-22-04-x64")["image"]["id"] == 150000002
    snap = api.ok("GET", f"/v2/snapshots/{image_id}")["snapshot"]
    assert (snap["id"], snap["resource_id"], snap["resource_type"]) == (
        str(image_id),
        str(droplet["id"]),
        "droplet",
    )
    body = {"name": "from-snap", "region": "ams3", "size": "s-1vcpu-1gb", "image": image_id}
    elsewhere = api("POST", "/v2/droplets", body)
    assert elsewhere.status_code == 422
    assert elsewhere.json()["message"] == f"The image {image_id} is not available in region ams3."
    transfer = api.ok(
        "POST", f"/v2/images/{image_id}/actions", {"type": "transfer", "region": "ams3"}
    )
    assert transfer["action"]["status"] == "in-progress"
    assert api.finish(transfer["action"])["status"] == "completed"
    assert api.ok("GET", f"/v2/images/{image_id}")["image"]["regions"] == ["nyc3", "ams3"]
    clone = api.ok("POST", "/v2/droplets", body)["droplet"]
    api.wait(lambda: api.status(clone["id"]) == "active", "clone active")
    cloned = api.cloud.machines.root(clone["id"]) / "var/www/html/index.html"
    assert cloned.read_text() == "baked\n"
    renamed = api.ok("PUT", f"/v2/images/{image_id}", {"name": "wp-final"})["image"]
    assert renamed["name"] == "wp-final"
    assert api("DELETE", f"/v2/images/{image_id}").status_code == 204
    assert api("GET", f"/v2/images/{image_id}").status_code == 404
    assert api("GET", f"/v2/snapshots/{image_id}").status_code == 404
    assert api("PUT", "/v2/images/150000001", {"name": "mine"}).status_code == 404


def test_packer_swapped_image_action_lookup_answers(api: Client) -> None:
    # Packer 1.6.6 polls GET /v2/images/<transfer action id>/actions/<snapshot action id>.
    droplet = api.droplet()
    snapshot_action = api.finish(api.act(droplet["id"], "snapshot", name="packer-snap"))
    image_id = api.ok("GET", f"/v2/droplets/{droplet['id']}/snapshots")["snapshots"][0]["id"]
    transfer = api.ok(
        "POST", f"/v2/images/{image_id}/actions", {"type": "transfer", "region": "ams3"}
    )
    resp = api("GET", f"/v2/images/{transfer['action']['id']}/actions/{snapshot_action['id']}")
    assert resp.status_code == 200
    assert resp.json()["action"]["status"] == "completed"


def test_keys_by_id_or_fingerprint(api: Client) -> None:
    line = public_key("alice")
    key = api.ok("POST", "/v2/account/keys", {"name": "alice", "public_key": line})["ssh_key"]
    assert key["id"] == 41000001
    assert key["fingerprint"] == fingerprint(line)
    assert api.ok("GET", f"/v2/account/keys/{key['fingerprint']}")["ssh_key"]["id"] == key["id"]
    dup = api("POST", "/v2/account/keys", {"name": "again", "public_key": line})
    assert (dup.status_code, dup.json()["message"]) == (
        422,
        "SSH Key is already in use on your account",
    )
    bad = api("POST", "/v2/account/keys", {"name": "bad", "public_key": "not a key"})
    assert (bad.status_code, bad.json()["message"]) == (422, "Key invalid, type not supported")
    assert (
        api.ok("PUT", f"/v2/account/keys/{key['id']}", {"name": "bob"})["ssh_key"]["name"] == "bob"
    )
    droplet = api.droplet(ssh_keys=[key["fingerprint"]])
    keys = api.cloud.machines.root(droplet["id"]) / "root/.ssh/authorized_keys"
    assert line in keys.read_text()
    assert api("DELETE", f"/v2/account/keys/{key['fingerprint']}").status_code == 204
    assert api("GET", f"/v2/account/keys/{key['id']}").status_code == 404
    unknown = api(
        "POST",
        "/v2/droplets",
        {"name": "x", "size": "s-1vcpu-1gb", "image": "debian-12-x64", "ssh_keys": [7]},
    )
    assert (unknown.status_code, unknown.json()["message"]) == (
        422,
        "You specified an invalid SSH key: 7.",
    )


def test_tags_select_and_delete_droplets(api: Client) -> None:
    a = api.droplet("a", active=False, tags=["web"])
    b = api.droplet("b", active=False)
    api.ok("POST", "/v2/tags", {"name": "db"})
    tag_b = {"resources": [{"resource_id": str(b["id"]), "resource_type": "droplet"}]}
    assert api("POST", "/v2/tags/web/resources", tag_b).status_code == 204
    listed = api.ok("GET", "/v2/droplets", tag_name="web")["droplets"]
    assert [d["name"] for d in listed] == ["a", "b"]
    tag = api.ok("GET", "/v2/tags/web")["tag"]
    assert tag["resources"]["count"] == 2
    assert tag["resources"]["droplets"] == {
        "count": 2,
        "last_tagged_uri": f"/v2/droplets/{b['id']}",
    }
    assert api("DELETE", "/v2/tags/web/resources", tag_b).status_code == 204
    assert [d["id"] for d in api.ok("GET", "/v2/droplets", tag_name="web")["droplets"]] == [a["id"]]
    assert {t["name"] for t in api.ok("GET", "/v2/tags")["tags"]} == {"web", "db"}
    bad = api("POST", "/v2/tags", {"name": "no spaces"})
    assert bad.status_code == 422
    assert api("DELETE", "/v2/droplets", tag_name="web").status_code == 204
    assert [d["name"] for d in api.ok("GET", "/v2/droplets")["droplets"]] == ["b"]
    assert api("DELETE", "/v2/tags/db").status_code == 204
    assert api("GET", "/v2/tags/db").status_code == 404


def test_load_balancer_by_ids_and_by_tag(api: Client) -> None:
    api.cloud.delays = Delays(droplet_boot=0.05, action=0.05, load_balancer=0.3)
    one = api.droplet("one", active=False, tags=["web"])
    two = api.droplet("two", active=False)
    health = {"protocol": "http", "port": 80, "path": "/wp-login.php", "check_interval_seconds": 3}
    body = {
        "name": "lb",
        "region": "nyc3",
        "droplet_ids": [one["id"]],
        "forwarding_rules": [_RULE],
        "health_check": health,
    }
    lb = api.ok("POST", "/v2/load_balancers", body)["load_balancer"]
    assert lb["status"] == "new"
    assert lb["ip"] == f"127.{api.cloud.network}.4.1"
    assert lb["health_check"] == {
        "protocol": "http",
        "port": 80,
        "path": "/wp-login.php",
        "check_interval_seconds": 3,
        "response_timeout_seconds": 5,
        "unhealthy_threshold": 3,
        "healthy_threshold": 5,
    }
    assert lb["forwarding_rules"] == [_RULE | {"certificate_id": "", "tls_passthrough": False}]
    api.wait(
        lambda: (
            api.ok("GET", f"/v2/load_balancers/{lb['id']}")["load_balancer"]["status"] == "active"
        ),
        "lb active",
    )
    path = f"/v2/load_balancers/{lb['id']}"
    assert api("POST", f"{path}/droplets", {"droplet_ids": [two["id"]]}).status_code == 204
    assert api.ok("GET", path)["load_balancer"]["droplet_ids"] == [one["id"], two["id"]]
    assert api("DELETE", f"{path}/droplets", {"droplet_ids": [one["id"]]}).status_code == 204
    assert api.ok("GET", path)["load_balancer"]["droplet_ids"] == [two["id"]]
    missing = api("POST", f"{path}/droplets", {"droplet_ids": [5]})
    assert (missing.status_code, missing.json()["message"]) == (422, "Droplets not found: 5.")
    updated = api.ok(
        "PUT", path, {"name": "lb", "region": "nyc3", "tag": "web", "forwarding_rules": [_RULE]}
    )
    assert updated["load_balancer"]["tag"] == "web"
    assert updated["load_balancer"]["droplet_ids"] == [one["id"]]
    api.ok(
        "POST",
        "/v2/tags/web/resources",
        {"resources": [{"resource_id": str(two["id"]), "resource_type": "droplet"}]},
    )
    assert api.ok("GET", path)["load_balancer"]["droplet_ids"] == [one["id"], two["id"]]
    both = api("POST", "/v2/load_balancers", body | {"tag": "web"})
    assert (both.status_code, both.json()["message"]) == (
        422,
        "Specify either droplet_ids or tag, not both.",
    )
    assert api("DELETE", path).status_code == 204
    assert api("GET", path).status_code == 404


@pytest.mark.parametrize("kind", ["floating_ip", "reserved_ip"])
def test_floating_ip_assign_and_unassign(api: Client, kind: str) -> None:
    droplet = api.droplet()
    base = f"/v2/{kind}s"
    ip = api.ok("POST", base, {"region": "nyc3"})[kind]
    assert ip["ip"] == f"127.{api.cloud.network}.3.1"
    assert ip["droplet"] is None
    action = api.ok(
        "POST", f"{base}/{ip['ip']}/actions", {"type": "assign", "droplet_id": droplet["id"]}
    )["action"]
    assert action["status"] == "in-progress"
    busy = api("POST", f"{base}/{ip['ip']}/actions", {"type": "unassign"})
    assert busy.status_code == 422
    api.wait(
        lambda: (
            api.ok("GET", f"{base}/{ip['ip']}/actions/{action['id']}")["action"]["status"]
            == "completed"
        ),
        "assign",
    )
    assert api.ok("GET", f"{base}/{ip['ip']}")[kind]["droplet"]["id"] == droplet["id"]
    other = "reserved_ip" if kind == "floating_ip" else "floating_ip"
    assert api.ok("GET", f"/v2/{other}s/{ip['ip']}")[other]["droplet"]["id"] == droplet["id"]
    api.finish(api.ok("POST", f"{base}/{ip['ip']}/actions", {"type": "unassign"})["action"])
    assert api.ok("GET", f"{base}/{ip['ip']}")[kind]["droplet"] is None
    direct = api.ok("POST", base, {"droplet_id": droplet["id"]})
    assert direct["links"]["actions"][0]["rel"] == "assign_ip"
    api.finish(direct["links"]["actions"][0] | {"type": "assign"})
    assert api.ok("GET", f"{base}/{direct[kind]['ip']}")[kind]["droplet"]["id"] == droplet["id"]
    assert api("DELETE", f"{base}/{ip['ip']}").status_code == 204
    assert [i["ip"] for i in api.ok("GET", base)[f"{kind}s"]] == [direct[kind]["ip"]]
    far = api.droplet("far", region="ams3")
    wrong = api(
        "POST", f"{base}/{direct[kind]['ip']}/actions", {"type": "assign", "droplet_id": far["id"]}
    )
    assert wrong.status_code == 422


def test_deleting_a_droplet_frees_it_everywhere(api: Client) -> None:
    droplet = api.droplet()
    ip = api.ok("POST", "/v2/floating_ips", {"droplet_id": droplet["id"]})["floating_ip"]["ip"]
    time.sleep(0.2)
    lb = _lb_for(api, [droplet["id"]])
    root = api.cloud.machines.root(droplet["id"])
    assert root.is_dir()
    assert api("DELETE", f"/v2/droplets/{droplet['id']}").status_code == 204
    assert api("GET", f"/v2/droplets/{droplet['id']}").status_code == 404
    assert not root.exists()
    assert api.ok("GET", f"/v2/floating_ips/{ip}")["floating_ip"]["droplet"] is None
    assert api.ok("GET", f"/v2/load_balancers/{lb}")["load_balancer"]["droplet_ids"] == []


def _lb_for(api: Client, ids: list[int]) -> str:
    body = {"name": "lb", "region": "nyc3", "droplet_ids": ids, "forwarding_rules": [_RULE]}
    return str(api.ok("POST", "/v2/load_balancers", body)["load_balancer"]["id"])


def test_pagination_links_and_meta(api: Client) -> None:
    first = api.ok("GET", "/v2/regions", per_page=4)
    assert len(first["regions"]) == 4
    assert first["meta"] == {"total": 11}
    base = f"{api.cloud.url}/v2/regions"
    assert first["links"] == {
        "pages": {"next": f"{base}?page=2&per_page=4", "last": f"{base}?page=3&per_page=4"}
    }
    middle = api.ok("GET", "/v2/regions", per_page=4, page=2)
    assert middle["links"]["pages"] == {
        "first": f"{base}?page=1&per_page=4",
        "prev": f"{base}?page=1&per_page=4",
        "next": f"{base}?page=3&per_page=4",
        "last": f"{base}?page=3&per_page=4",
    }
    last = api.ok("GET", "/v2/regions", per_page=4, page=3)
    assert len(last["regions"]) == 3
    assert set(last["links"]["pages"]) == {"first", "prev"}
    # following next links from the first page yields everything once
    seen, url = [], f"{base}?per_page=4"
    while url:
        page = api.session.get(url, timeout=5).json()
        seen += [r["slug"] for r in page["regions"]]
        url = page["links"].get("pages", {}).get("next")
    assert len(seen) == len(set(seen)) == 11
    assert api.ok("GET", "/v2/regions")["links"] == {}
    big = api.ok("GET", "/v2/sizes", per_page=500)
    assert "pages" not in big["links"]
    api.ok("POST", "/v2/tags", {"name": "web"})
    for n in range(3):
        api.droplet(f"d{n}", active=False, tags=["web"])
    tagged = api.ok("GET", "/v2/droplets", tag_name="web", per_page=2)
    assert (
        tagged["links"]["pages"]["next"]
        == f"{api.cloud.url}/v2/droplets?tag_name=web&page=2&per_page=2"
    )


def test_rate_limit_headers_and_429_with_retry_after(tmp_path: Path) -> None:
    with LocalCloud(tmp_path, rate_limit_per_minute=5) as cloud:
        api = Client(cloud)
        remaining = []
        for _ in range(5):
            resp = api("GET", "/v2/account")
            assert resp.status_code == 200
            assert resp.headers["ratelimit-limit"] == "5000"
            assert int(resp.headers["ratelimit-reset"]) > time.time()
            remaining.append(int(resp.headers["ratelimit-remaining"]))
        assert remaining == [4999, 4998, 4997, 4996, 4995]
        limited = api("GET", "/v2/droplets")
        assert limited.status_code == 429
        assert limited.json()["id"] == "too_many_requests"
        assert limited.json()["message"] == "API Rate limit exceeded."
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # budgets are per token; control endpoints are not limited
        assert Client(cloud, token="other")("GET", "/v2/account").status_code == 200
        with urllib.request.urlopen(cloud.url + "/_local/counters", timeout=5) as resp:
            assert json.loads(resp.read())["counters"]["GET /v2/droplets"] == 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    delays = Delays.uniform(0.05)
    with LocalCloud(tmp_path, delays=delays) as cloud:
        api = Client(cloud)
        key = api.ok("POST", "/v2/account/keys", {"name": "k", "public_key": public_key("k")})[
            "ssh_key"
        ]
        droplet = api.droplet("keep", tags=["web"], ssh_keys=[key["id"]])
        image_id = api.snapshot(droplet["id"], "kept")
        off = api.droplet("sleeper")
        api.finish(api.act(off["id"], "power_off"))
        lb = _lb_for(api, [droplet["id"]])
        ip = api.ok("POST", "/v2/reserved_ips", {"droplet_id": droplet["id"]})["reserved_ip"]["ip"]
        booting = api.droplet("late", active=False)
        cloud.delays = Delays.uniform(0.3)  # the next creation finishes while the cloud is down
        late = api.droplet("later", active=False)
        before = {
            p: api.ok("GET", p)
            for p in ("/v2/droplets", "/v2/images", "/v2/account/keys", "/v2/tags")
        }
    web = droplet["networks"]["v4"][0]["ip_address"]
    time.sleep(0.4)
    with LocalCloud(tmp_path, delays=delays) as cloud:
        api = Client(cloud)
        assert api.status(late["id"]) == "active"
        assert api.status(booting["id"]) == "active"
        for path, body in before.items():
            now = api.ok("GET", path)
            key_name = path.rsplit("/", 1)[-1].replace("account/", "")
            key_name = {"keys": "ssh_keys"}.get(key_name, key_name)
            if key_name == "droplets":
                assert {d["id"] for d in now[key_name]} == {d["id"] for d in body[key_name]}
            else:
                assert now[key_name] == body[key_name], path
        assert api.status(off["id"]) == "off"
        assert api.ok("GET", f"/v2/droplets/{droplet['id']}")["droplet"]["snapshot_ids"] == [
            image_id
        ]
        assert api.ok("GET", f"/v2/load_balancers/{lb}")["load_balancer"]["droplet_ids"] == [
            droplet["id"]
        ]
        assert (
            api.ok("GET", f"/v2/reserved_ips/{ip}")["reserved_ip"]["droplet"]["id"] == droplet["id"]
        )
        assert _port_open(web, cloud.machines.web_port())
        assert not _port_open(off["networks"]["v4"][0]["ip_address"], cloud.machines.web_port())
        # ids go on counting, addresses are not handed out twice
        fresh = api.droplet("fresh", active=False)
        assert fresh["id"] == late["id"] + 1
        assert fresh["networks"]["v4"][0]["ip_address"] == f"127.{cloud.network}.1.5"


def test_faults_fail_nth_request_then_recover(api: Client) -> None:
    droplet = api.droplet(active=False)
    api.cloud.faults.fail("GET", r"/v2/droplets/\d+", 503, nth=2, times=2, message="try later")
    path = f"/v2/droplets/{droplet['id']}"
    statuses = [api(*("GET", path)).status_code for _ in range(4)]
    assert statuses == [200, 503, 503, 200]
    assert api.cloud.faults.describe() == []
    api.cloud.faults.fail("*", "/v2/account", 429, retry_after=7)
    limited = api("GET", "/v2/account")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    assert api("GET", "/v2/droplets").status_code == 200


def test_faults_latency(api: Client) -> None:
    api.cloud.faults.latency("GET", "/v2/regions", 0.3, times=1)
    started = time.monotonic()
    api.ok("GET", "/v2/regions")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    api.ok("GET", "/v2/regions")
    assert time.monotonic() - started < 0.3


def test_faults_errored_actions_and_stalled_droplets(api: Client) -> None:
    droplet = api.droplet()
    api.cloud.faults.error_action(action_type="snapshot")
    errored = api.finish(api.act(droplet["id"], "snapshot", name="broken"))
    assert errored["status"] == "errored"
    assert api.ok("GET", "/v2/images", private="true")["images"] == []
    assert api.finish(api.act(droplet["id"], "snapshot", name="fine"))["status"] == "completed"
    api.cloud.faults.error_action(droplet_id=droplet["id"])
    assert api.finish(api.act(droplet["id"], "power_off"))["status"] == "errored"
    assert api.status(droplet["id"]) == "active"
    api.cloud.faults.stall(name="^stuck-")
    stuck = api.droplet("stuck-1", active=False)
    normal = api.droplet("normal-1")
    assert api.status(stuck["id"]) == "new"
    actions = api.ok("GET", f"/v2/droplets/{stuck['id']}/actions")["actions"]
    assert [a["status"] for a in actions] == ["in-progress"]
    assert api.status(normal["id"]) == "active"
    api.cloud.delays = Delays.uniform(0.3)
    held = api.droplet("held", active=False)
    api.cloud.faults.stall(droplet_id=held["id"])
    time.sleep(0.4)
    assert api.status(held["id"]) == "new"


def test_faults_over_http(api: Client) -> None:
    url = api.cloud.url + "/_local/faults"
    fault = {"kind": "fail", "method": "GET", "path": "/v2/sizes", "status": 500}
    added = requests.post(url, json=fault, timeout=5)
    assert added.status_code == 200
    assert added.json()["faults"][0] | {"seen": 0} == fault | {
        "nth": 1,
        "times": 1,
        "message": None,
        "retry_after": None,
        "seen": 0,
    }
    failed = api("GET", "/v2/sizes")
    assert (failed.status_code, failed.json()["id"]) == (500, "server_error")
    requests.post(url, json={"kind": "stall", "name": "^slow"}, timeout=5)
    requests.post(url, json={"kind": "error_action", "action_type": "power_off"}, timeout=5)
    requests.post(url, json={"kind": "latency", "path": "/v2/tags", "seconds": 0.01}, timeout=5)
    kinds = [f["kind"] for f in requests.get(url, timeout=5).json()["faults"]]
    assert kinds == ["stall", "error_action", "latency"]
    bad = requests.post(url, json={"kind": "meteor"}, timeout=5)
    assert bad.status_code == 422
    assert "unknown fault kind 'meteor'" in bad.json()["message"]
    assert requests.delete(url, timeout=5).status_code == 204
    assert requests.get(url, timeout=5).json() == {"faults": []}


def test_request_log_and_counters(api: Client) -> None:
    droplet = api.droplet(active=False)
    api("GET", f"/v2/droplets/{droplet['id']}")
    api("GET", f"/v2/droplets/{droplet['id']}/")
    api("GET", "/v2/droplets/999")
    api("GET", "/v2/droplets", tag_name="web")
    counters = api.cloud.counters()
    assert counters == {"POST /v2/droplets": 1, "GET /v2/droplets/{id}": 3, "GET /v2/droplets": 1}
    log = api.cloud.requests()
    assert [(r.method, r.path, r.status) for r in log][-2:] == [
        ("GET", "/v2/droplets/999", 404),
        ("GET", "/v2/droplets", 200),
    ]
    assert log[-1].query == "tag_name=web"
    assert log[-1].template == "GET /v2/droplets"
    over_http = requests.get(api.cloud.url + "/_local/requests", timeout=5).json()["requests"]
    assert over_http[-1] | {"time": 0, "duration": 0} == {
        "method": "GET",
        "path": "/v2/droplets",
        "query": "tag_name=web",
        "status": 200,
        "time": 0,
        "template": "GET /v2/droplets",
        "duration": 0,
    }
    assert requests.get(api.cloud.url + "/_local/counters", timeout=5).json() == {
        "counters": counters
    }
    assert requests.delete(api.cloud.url + "/_local/counters", timeout=5).status_code == 204
    assert requests.delete(api.cloud.url + "/_local/requests", timeout=5).status_code == 204
    assert api.cloud.counters() == {} and api.cloud.requests() == []


def test_delays_and_reset_over_http(api: Client) -> None:
    url = api.cloud.url + "/_local/delays"
    set_ = requests.put(url, json={"droplet_boot": 0.5}, timeout=5).json()["delays"]
    assert set_["droplet_boot"] == 0.5 and set_["action"] == 0.1
    assert api.cloud.delays.droplet_boot == 0.5
    assert requests.put(url, json={"warp": 1}, timeout=5).status_code == 422
    api.droplet(active=False)
    health = requests.get(api.cloud.url + "/_local/health", timeout=5).json()
    assert (health["ok"], health["pid"], health["droplets"]) == (True, os.getpid(), 1)
    # A separate process (`scaler bake --connection local`) finds droplet roots through these.
    assert health["state_dir"] == str(api.cloud.state_dir.resolve())
    assert health["web_port"] == api.cloud.machines.web_port()
    assert health["ssh_port"] == api.cloud.machines.ssh_port()
    assert requests.post(api.cloud.url + "/_local/reset", timeout=5).status_code == 204
    assert api.ok("GET", "/v2/droplets")["droplets"] == []


def test_session_fixture_is_a_running_cloud_of_this_worker(local_cloud: LocalCloud) -> None:
    from scaler.local.netclaim import AUTO_RANGE, NetworkInUse, claim_network

    # its network number was claimed from the allocator, and is held while it runs
    assert local_cloud.network in AUTO_RANGE
    with pytest.raises(NetworkInUse, match=f"network {local_cloud.network} is in use"):
        claim_network(local_cloud.network)
    env = local_cloud.env()
    assert env["DIGITALOCEAN_END_POINT"] == f"{local_cloud.url}/v2/" == local_cloud.endpoint
    assert env["DIGITALOCEAN_API_URL"] == env["SCALER_LOCAL_URL"] == local_cloud.url
    assert env["SCALER_LOCAL_WEB_PORT"] == str(local_cloud.machines.web_port())
    assert local_cloud.url.startswith("http://127.0.0.1:")
    assert local_cloud.delays == Delays.uniform(0.2)
    resp = Client(local_cloud, env["DIGITALOCEAN_TOKEN"])("GET", "/v2/account")
    assert resp.json()["account"]["status"] == "active"


def test_every_fault_kind_takes_effect_over_http(api: Client) -> None:
    """What a subprocess (Terraform's provider, Packer, a chaos run) can do via /_local/faults."""
    url = api.cloud.url + "/_local/faults"

    def arm(fault: dict[str, Any]) -> None:
        resp = requests.post(url, json=fault, timeout=5)
        assert resp.status_code == 200, resp.text

    droplet = api.droplet("target")
    path = f"/v2/droplets/{droplet['id']}"
    arm({"kind": "fail", "method": "GET", "path": r"/v2/droplets/\d+", "status": 502, "nth": 2})
    assert [api("GET", path).status_code for _ in range(3)] == [200, 502, 200]

    arm({"kind": "latency", "method": "GET", "path": "/v2/sizes", "seconds": 0.3, "times": 1})
    started = time.monotonic()
    api.ok("GET", "/v2/sizes")
    assert time.monotonic() - started >= 0.3

    arm({"kind": "error_action", "droplet_id": droplet["id"], "action_type": "power_off"})
    assert api.finish(api.act(droplet["id"], "power_off"))["status"] == "errored"
    assert api.status(droplet["id"]) == "active"

    arm({"kind": "stall", "name": "^stuck-"})
    stuck = api.droplet("stuck-1", active=False)
    arm({"kind": "stall", "droplet_id": api.droplet("held", active=False)["id"]})
    time.sleep(0.3)  # well past the 0.1 s boot delay
    held = api.ok("GET", "/v2/droplets", name="held")["droplets"][0]
    assert (api.status(stuck["id"]), held["status"]) == ("new", "new")
    assert api.status(api.droplet("free-1")["id"]) == "active"
    assert requests.get(url, timeout=5).json() == {"faults": []}


def test_default_budget_is_250_requests_a_minute(fresh_cloud: LocalCloud) -> None:
    api = Client(fresh_cloud, token="budget")
    assert fresh_cloud.rate_limit_per_minute == 250
    statuses = [api("GET", "/v2/account").status_code for _ in range(251)]
    assert statuses == [200] * 250 + [429]
    assert 1 <= int(api("GET", "/v2/account").headers["retry-after"]) <= 60


def test_per_page_is_capped_at_200(api: Client) -> None:
    second = api.ok("GET", "/v2/regions", per_page=1000, page=2)
    assert second["regions"] == []
    assert second["links"]["pages"]["first"] == f"{api.cloud.url}/v2/regions?page=1&per_page=200"
