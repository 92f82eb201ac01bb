"""A Terraform provider for the local cloud, built with `tf`, posing as the DigitalOcean provider.

It implements the resources scaler's `terraform/` uses with the real provider's (2.x) argument
names, types and replacement rules, and speaks plain HTTP to the DigitalOcean API v2 at
`DIGITALOCEAN_API_URL` (the local cloud) with the token from `DIGITALOCEAN_TOKEN` (or the provider's
`api_endpoint`/`token` arguments). There is no default endpoint: it never talks to a real cloud by
accident.

Run it as `scaler-provider-digitalocean --dev` to get a TF_REATTACH_PROVIDERS line (reattach mode),
or let Terraform start it through a dev_overrides directory.

Polling follows the real provider (its StateChangeConf waits), so the local cloud sees the request
pattern DigitalOcean would: droplet and action waits first look after 10 s, then every 3 s, 6 s,
then 10 s; a load balancer's creation is looked at at once, then every 15 s; a delete waits for the
droplet to be unlocked, deletes it, and looks again for it to be gone. An update ends with one read.
SCALER_LOCAL_PROVIDER_POLL scales every one of those waits (default 1; tests use e.g. 0.02, with
the local cloud's delays shortened to match). One deviation: a droplet still `new` at a look also
has its create action looked at, so a creation the cloud failed ends at once instead of at the
timeout. SCALER_POLL_TIMEOUT (default 300 s) bounds every wait.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from tf import runner
from tf.blocks import SetNestedBlock
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    PlanContext,
    Provider,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.schema import Attribute, Block, Schema
from tf.types import Bool, Number, Set, String, Unknown
from tf.utils import Diagnostics

PROVIDER_ADDRESS = "registry.terraform.io/digitalocean/digitalocean"
POLL_SCALE_ENV = "SCALER_LOCAL_PROVIDER_POLL"
# The real provider's StateChangeConf: Delay before the first look, MinTimeout between looks
# (the wait starts at 0.1 s, doubles after each look, is raised to MinTimeout, capped at 10 s).
STATE_DELAY = 10.0
STATE_MIN_TIMEOUT = 3.0
STATE_MAX_WAIT = 10.0
LB_MIN_TIMEOUT = 15.0
_ids = itertools.count(1)


class ProviderError(Exception):
    """A failure the provider reports to Terraform; str() is one line and never holds the token."""


class ApiError(ProviderError):
    """The API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"DigitalOcean API {method} {path} answered {status}: {message}")


class Api:
    """A small, thread-safe DigitalOcean API v2 client with paced polling and 429/5xx retries."""

    def __init__(self, url: str, token: str, *, scale: float = 1.0, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.scale = scale
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; returns the decoded JSON body ({} when empty)."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(8):
            req = urllib.request.Request(self.url + path, data=data, method=method)
            req.add_header("Authorization", f"Bearer {self._token}")
            req.add_header("Accept", "application/json")
            req.add_header("User-Agent", "scaler-local-provider")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    raw = resp.read()
                return dict(json.loads(raw)) if raw.strip() else {}
            except urllib.error.HTTPError as err:
                raw = err.read()
                if err.code == 429 or (err.code >= 500 and attempt < 4):
                    # The API's own pacing: honour retry-after, else back off.
                    wait = _float(err.headers.get("retry-after"), 0.5 * 2**attempt)
                    time.sleep(min(wait, 60.0))
                    continue
                raise ApiError(method, path, err.code, _api_message(raw)) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if attempt < 3:
                    time.sleep(0.2 * 2**attempt)
                    continue
                reason = getattr(err, "reason", err)
                raise ProviderError(f"cannot reach the API at {self.url}: {reason}") from None
        raise ApiError(method, path, 429, "still rate limited after 8 attempts")

    def get(self, path: str) -> dict[str, Any] | None:
        """GET; None when the object is gone (404)."""
        try:
            return self.call("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def delete(self, path: str, body: dict[str, Any] | None = None) -> None:
        """DELETE; an object already gone counts as deleted."""
        try:
            self.call("DELETE", path, body)
        except ApiError as err:
            if err.status != 404:
                raise

    def wait(
        self,
        done: Callable[[], bool],
        what: str,
        *,
        delay: float = STATE_DELAY,
        min_timeout: float = STATE_MIN_TIMEOUT,
    ) -> None:
        """Look with `done` at the real provider's cadence until it holds; raise on timeout."""
        deadline = time.monotonic() + self.timeout
        time.sleep(delay * self.scale)
        wait = 0.0
        while not done():
            if time.monotonic() > deadline:
                raise ProviderError(f"timed out after {self.timeout:g} s waiting for {what}")
            wait = 0.1 if wait == 0 else wait
            wait = min(max(wait * 2, min_timeout), STATE_MAX_WAIT)
            time.sleep(wait * self.scale)

    def wait_action(self, action: dict[str, Any], what: str) -> None:
        """Wait for an action to complete; raise if it errors."""
        action_id = action["id"]

        def done() -> bool:
            got = self.call("GET", f"/v2/actions/{action_id}")["action"]
            if got.get("status") == "errored":
                raise ProviderError(f"action {action_id} ({what}) errored")
            return bool(got.get("status") == "completed")

        self.wait(done, f"action {action_id} ({what})")

    def droplet_action(self, droplet_id: str, body: dict[str, Any]) -> None:
        """Run one droplet action and wait for it."""
        path = f"/v2/droplets/{droplet_id}/actions"
        action = self.call("POST", path, body)["action"]
        self.wait_action(action, f"{body['type']} droplet {droplet_id}")


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _api_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        return f"{body.get('id', 'error')}: {body.get('message', '')}".strip()
    except (ValueError, AttributeError):
        return raw.decode(errors="replace").strip().splitlines()[0][:200] if raw.strip() else ""


def _known(value: Any) -> bool:
    return value is not Unknown and value is not None


def _settle(state: State) -> State:
    """After apply nothing may stay unknown: what the API did not say is null."""
    return {k: (None if v is Unknown else v) for k, v in state.items()}


def _fill(planned: State, actual: dict[str, Any]) -> State:
    """Planned values win (they must come back exactly); unknowns take what the API reports."""
    out = dict(planned)
    for key, value in actual.items():
        if key in out and out[key] is Unknown:
            out[key] = value
    return _settle(out)


def _image(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _attr(name: str, kind: Any, **flags: Any) -> Attribute:
    return Attribute(name, kind, **flags)


class ListBlock(SetNestedBlock):  # type: ignore[misc]
    """A list-nested block (the real provider's `TypeList, MaxItems: 1`, e.g. healthcheck)."""

    def __init__(self, type_name: str, block: Block, max_items: int | None = None) -> None:
        super().__init__(type_name, block)
        self.max_items = max_items

    def to_pb(self) -> Any:
        """The schema with LIST nesting, which `tf` does not offer itself."""
        from tf.gen import tfplugin_pb2 as pb

        return pb.Schema.NestedBlock(
            type_name=self.type_name,
            block=self.block.to_pb(),
            min_items=self.min_items,
            max_items=self.max_items,
            nesting=pb.Schema.NestedBlock.NestingMode.LIST,
        )

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        """Lists compare in order."""
        return bool(a_decoded == b_decoded)


class _Base(Resource):  # type: ignore[misc]
    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider

    @property
    def api(self) -> Api:
        if self.provider.api is None:
            raise ProviderError("the provider is not configured")
        return self.provider.api

    def _guard(
        self,
        ctx: Any,
        fn: Callable[[], State | None],
        fallback: State | None,
        created: dict[str, Any] | None = None,
    ) -> State | None:
        """Turn API failures into Terraform diagnostics (one line, no token).

        On a failed create, what `fn` recorded in `created` (the new id) goes back with the plan, so
        Terraform keeps the half-made object as tainted and a later apply or destroy deals with it.
        """
        try:
            return fn()
        except ProviderError as err:
            ctx.diagnostics.add_error(str(err))
            if created is not None:
                return _settle({**(fallback or {}), **created}) if created else None
            return _settle(fallback) if fallback is not None else None


# ---------------------------------------------------------------- droplet

_DROPLET_SIZE_DERIVED = ("disk", "memory", "vcpus", "price_hourly", "price_monthly")


def _droplet_values(d: dict[str, Any]) -> dict[str, Any]:
    nets = d.get("networks") or {}
    v4 = nets.get("v4") or []
    v6 = nets.get("v6") or []
    size = d.get("size") or {}
    region = d.get("region") or {}
    public = next((n["ip_address"] for n in v4 if n.get("type") == "public"), "")
    private = next((n["ip_address"] for n in v4 if n.get("type") == "private"), "")
    out: dict[str, Any] = {
        "id": str(d["id"]),
        "urn": f"do:droplet:{d['id']}",
        "name": d.get("name"),
        "region": region.get("slug") if isinstance(region, dict) else region,
        "size": d.get("size_slug") or size.get("slug"),
        "status": d.get("status"),
        "locked": bool(d.get("locked", False)),
        "created_at": d.get("created_at"),
        "disk": d.get("disk"),
        "memory": d.get("memory"),
        "vcpus": d.get("vcpus"),
        "price_hourly": size.get("price_hourly"),
        "price_monthly": size.get("price_monthly"),
        "ipv4_address": public,
        "ipv4_address_private": private,
        "ipv6_address": next((n["ip_address"] for n in v6 if n.get("type") == "public"), ""),
        "vpc_uuid": d.get("vpc_uuid"),
        "volume_ids": [str(v) for v in d.get("volume_ids") or []],
        "private_networking": bool(private),
        "tags": list(d.get("tags") or []),
    }
    features = d.get("features")
    if isinstance(features, list):
        out["backups"] = "backups" in features
        out["monitoring"] = "monitoring" in features
        out["ipv6"] = "ipv6" in features
    return out


class Droplet(_Base):
    """digitalocean_droplet: image, region, user_data, ssh_keys replace; size, name, tags update."""

    @classmethod
    def get_name(cls) -> str:
        return "droplet"

    @classmethod
    def get_schema(cls) -> Schema:
        replace = {"requires_replace": True}
        return Schema(
            version=1,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("urn", String(), computed=True),
                _attr("image", String(), required=True, **replace),
                _attr("name", String(), required=True),
                _attr("region", String(), optional=True, computed=True, **replace),
                _attr("size", String(), required=True),
                _attr("ssh_keys", Set(String()), optional=True, **replace),
                _attr("tags", Set(String()), optional=True),
                _attr("user_data", String(), optional=True, **replace),
                _attr("vpc_uuid", String(), optional=True, computed=True, **replace),
                _attr("monitoring", Bool(), optional=True, computed=True, default=False, **replace),
                _attr("ipv6", Bool(), optional=True, computed=True, default=False),
                _attr("backups", Bool(), optional=True, computed=True, default=False),
                _attr("resize_disk", Bool(), optional=True, computed=True, default=True),
                _attr("graceful_shutdown", Bool(), optional=True, computed=True, default=False),
                _attr("droplet_agent", Bool(), optional=True),
                _attr("private_networking", Bool(), optional=True, computed=True),
                _attr("volume_ids", Set(String()), optional=True, computed=True),
                _attr("ipv4_address", String(), computed=True),
                _attr("ipv4_address_private", String(), computed=True),
                _attr("ipv6_address", String(), computed=True),
                _attr("status", String(), computed=True),
                _attr("locked", Bool(), computed=True),
                _attr("created_at", String(), computed=True),
                _attr("disk", Number(), computed=True),
                _attr("memory", Number(), computed=True),
                _attr("vcpus", Number(), computed=True),
                _attr("price_hourly", Number(), computed=True),
                _attr("price_monthly", Number(), computed=True),
            ],
        )

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State:
        """A resize changes what the size implies; enabling IPv6 gives an address."""
        if current is not None and "size" in ctx.changed_fields:
            for key in _DROPLET_SIZE_DERIVED:
                planned[key] = Unknown
        if current is not None and "ipv6" in ctx.changed_fields:
            planned["ipv6_address"] = Unknown
        return planned

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the droplet and wait until it is active."""
        created: dict[str, Any] = {}

        def go() -> State:
            body: dict[str, Any] = {
                "name": planned["name"],
                "size": planned["size"],
                "image": _image(planned["image"]),
                "ssh_keys": [_image(k) for k in planned.get("ssh_keys") or []],
                "backups": bool(planned.get("backups")),
                "ipv6": bool(planned.get("ipv6")),
                "monitoring": bool(planned.get("monitoring")),
                "tags": list(planned.get("tags") or []),
            }
            for key in ("region", "user_data", "vpc_uuid"):
                if _known(planned.get(key)):
                    body[key] = planned[key]
            if planned.get("droplet_agent") is not None:
                body["with_droplet_agent"] = planned["droplet_agent"]
            resp = self.api.call("POST", "/v2/droplets", body)
            created["id"] = str(resp["droplet"]["id"])
            links = (resp.get("links") or {}).get("actions") or []
            actions = [str(link["id"]) for link in links if link.get("id")]
            return self._fill(planned, self._wait_active(created["id"], actions))

        return self._guard(ctx, go, planned, created)

    def _wait_active(self, droplet_id: str, create_actions: list[str]) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def done() -> bool:
            got = self.api.call("GET", f"/v2/droplets/{droplet_id}")["droplet"]
            seen.update(got)
            if got.get("status") == "active":
                return True
            # Still new: a creation that errored would keep it so until the timeout.
            for action_id in create_actions:
                action = self.api.call("GET", f"/v2/actions/{action_id}")["action"]
                if action.get("status") == "errored":
                    raise ProviderError(f"action {action_id} (create droplet {droplet_id}) errored")
            return False

        self.api.wait(done, f"droplet {droplet_id} to become active")
        return seen

    def _read(self, droplet_id: str) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v2/droplets/{droplet_id}")["droplet"])

    def _fill(self, planned: State, droplet: dict[str, Any]) -> State:
        values = _droplet_values(droplet)
        if values["tags"] == [] and planned.get("tags") is None:
            values["tags"] = None
        return _fill(planned, values)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh from the API; a droplet that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/droplets/{current['id']}")
            if got is None or got["droplet"].get("status") == "archive":
                return None
            values = _droplet_values(got["droplet"])
            if not values["tags"] and not current.get("tags"):
                values["tags"] = current.get("tags")
            out = dict(current)
            out.update({k: v for k, v in values.items() if k in out or k in _DROPLET_KEYS})
            return _settle(out)

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Rename, resize (power off, resize, power on), retag or toggle backups/IPv6 in place."""

        def go() -> State:
            did = current["id"]
            api = self.api
            if planned["name"] != current["name"]:
                api.droplet_action(did, {"type": "rename", "name": planned["name"]})
            if planned["size"] != current["size"]:
                self._resize(did, planned)
            old_tags = set(current.get("tags") or [])
            new_tags = set(planned.get("tags") or [])
            resources = {"resources": [{"resource_id": did, "resource_type": "droplet"}]}
            for tag in sorted(new_tags - old_tags):
                _ensure_tag(api, tag)
                api.call("POST", f"/v2/tags/{tag}/resources", resources)
            for tag in sorted(old_tags - new_tags):
                api.delete(f"/v2/tags/{tag}/resources", resources)
            if bool(planned.get("backups")) != bool(current.get("backups")):
                kind = "enable_backups" if planned.get("backups") else "disable_backups"
                api.droplet_action(did, {"type": kind})
            if planned.get("ipv6") and not current.get("ipv6"):
                api.droplet_action(did, {"type": "enable_ipv6"})
            # Each action above was waited for; the real provider ends an update with one read.
            return self._fill(planned, self._read(did))

        return self._guard(ctx, go, current)

    def _resize(self, did: str, planned: State) -> None:
        api = self.api
        droplet = api.call("GET", f"/v2/droplets/{did}")["droplet"]
        if droplet.get("status") == "active":
            off = "shutdown" if planned.get("graceful_shutdown") else "power_off"
            api.droplet_action(did, {"type": off})
        resize_disk = planned.get("resize_disk") is not False
        api.droplet_action(did, {"type": "resize", "size": planned["size"], "disk": resize_disk})
        api.droplet_action(did, {"type": "power_on"})

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the droplet and wait until the API no longer has it."""

        def go() -> None:
            did = current["id"]
            missing = False

            def unlocked() -> bool:
                nonlocal missing
                got = self.api.get(f"/v2/droplets/{did}")
                missing = got is None
                return missing or not (got or {}).get("droplet", {}).get("locked")

            # As the real provider: wait until no action holds it, delete, wait until it is gone.
            self.api.wait(unlocked, f"droplet {did} to be unlocked for destroy")
            if missing:
                return
            self.api.delete(f"/v2/droplets/{did}")

            def gone() -> bool:
                got = self.api.get(f"/v2/droplets/{did}")
                return got is None or got["droplet"].get("status") == "archive"

            self.api.wait(gone, f"droplet {did} to be deleted")

        self._guard(ctx, go, None)


_DROPLET_KEYS = {a.name for a in Droplet.get_schema().attributes}


def _ensure_tag(api: Api, name: str) -> None:
    try:
        api.call("POST", "/v2/tags", {"name": name})
    except ApiError as err:
        if err.status != 422:  # 422: it exists already
            raise


# ---------------------------------------------------------------- load balancer

_FORWARDING = ("entry_protocol", "entry_port", "target_protocol", "target_port")
_HEALTH = (
    "protocol",
    "port",
    "path",
    "check_interval_seconds",
    "response_timeout_seconds",
    "healthy_threshold",
    "unhealthy_threshold",
)


def _opt(name: str, kind: Any) -> Attribute:
    return _attr(name, kind, optional=True)


class LoadBalancer(_Base):
    """digitalocean_loadbalancer: forwarding rules, a health check and the droplets behind it."""

    @classmethod
    def get_name(cls) -> str:
        return "loadbalancer"

    @classmethod
    def get_schema(cls) -> Schema:
        forwarding = Block(
            attributes=[
                _attr("entry_protocol", String(), required=True),
                _attr("entry_port", Number(), required=True),
                _attr("target_protocol", String(), required=True),
                _attr("target_port", Number(), required=True),
                _opt("certificate_id", String()),
                _opt("certificate_name", String()),
                _opt("tls_passthrough", Bool()),
            ]
        )
        health = Block(
            attributes=[
                _attr("protocol", String(), required=True),
                _opt("port", Number()),
                _opt("path", String()),
                _opt("check_interval_seconds", Number()),
                _opt("response_timeout_seconds", Number()),
                _opt("healthy_threshold", Number()),
                _opt("unhealthy_threshold", Number()),
            ]
        )
        sticky = Block(
            attributes=[
                _opt("type", String()),
                _opt("cookie_name", String()),
                _opt("cookie_ttl_seconds", Number()),
            ]
        )
        oc = {"optional": True, "computed": True}
        return Schema(
            version=0,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("urn", String(), computed=True),
                _attr("ip", String(), computed=True),
                _attr("status", String(), computed=True),
                _attr("name", String(), required=True),
                _attr("region", String(), requires_replace=True, **oc),
                _attr("size", String(), **oc),
                _attr("size_unit", Number(), **oc),
                _attr("droplet_ids", Set(Number()), **oc),
                _opt("droplet_tag", String()),
                _attr("vpc_uuid", String(), requires_replace=True, **oc),
                _attr("project_id", String(), **oc),
                _attr("redirect_http_to_https", Bool(), default=False, **oc),
                _attr("enable_proxy_protocol", Bool(), default=False, **oc),
                _attr("enable_backend_keepalive", Bool(), default=False, **oc),
                _attr("disable_lets_encrypt_dns_records", Bool(), default=False, **oc),
                _attr("http_idle_timeout_seconds", Number(), **oc),
            ],
            block_types=[
                SetNestedBlock("forwarding_rule", forwarding),
                ListBlock("healthcheck", health, max_items=1),
                ListBlock("sticky_sessions", sticky, max_items=1),
            ],
        )

    def _body(self, planned: State) -> dict[str, Any]:
        body: dict[str, Any] = {"name": planned["name"]}
        for key in (
            "region",
            "size",
            "size_unit",
            "vpc_uuid",
            "project_id",
            "http_idle_timeout_seconds",
        ):
            if _known(planned.get(key)):
                body[key] = planned[key]
        for key in (
            "redirect_http_to_https",
            "enable_proxy_protocol",
            "enable_backend_keepalive",
            "disable_lets_encrypt_dns_records",
        ):
            body[key] = bool(planned.get(key))
        body["forwarding_rules"] = [
            {k: v for k, v in rule.items() if v is not None}
            for rule in planned.get("forwarding_rule") or []
        ]
        for block, key in (("healthcheck", "health_check"), ("sticky_sessions", "sticky_sessions")):
            items = planned.get(block) or []
            if items:
                body[key] = {k: v for k, v in items[0].items() if v is not None}
        if _known(planned.get("droplet_tag")):
            body["tag"] = planned["droplet_tag"]
        elif _known(planned.get("droplet_ids")):
            body["droplet_ids"] = sorted(int(i) for i in planned["droplet_ids"])
        return body

    def _wait_active(self, lb_id: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def done() -> bool:
            got = self.api.call("GET", f"/v2/load_balancers/{lb_id}")["load_balancer"]
            seen.update(got)
            if got.get("status") == "errored":
                raise ProviderError(f"load balancer {lb_id} errored")
            return bool(got.get("status") == "active")

        self.api.wait(
            done, f"load balancer {lb_id} to become active", delay=0, min_timeout=LB_MIN_TIMEOUT
        )
        return seen

    @staticmethod
    def _values(lb: dict[str, Any]) -> dict[str, Any]:
        region = lb.get("region") or {}
        out = {
            "id": lb["id"],
            "urn": f"do:loadbalancer:{lb['id']}",
            "ip": lb.get("ip") or "",
            "status": lb.get("status"),
            "name": lb.get("name"),
            "region": region.get("slug") if isinstance(region, dict) else region,
            "droplet_ids": sorted(int(i) for i in lb.get("droplet_ids") or []),
        }
        for key in (
            "size",
            "size_unit",
            "vpc_uuid",
            "project_id",
            "redirect_http_to_https",
            "enable_proxy_protocol",
            "enable_backend_keepalive",
            "disable_lets_encrypt_dns_records",
            "http_idle_timeout_seconds",
        ):
            if key in lb:
                out[key] = lb[key]
        return out

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the load balancer and wait until it is active."""
        created: dict[str, Any] = {}

        def go() -> State:
            lb = self.api.call("POST", "/v2/load_balancers", self._body(planned))["load_balancer"]
            created["id"] = lb["id"]
            return _fill(planned, self._values(self._wait_active(lb["id"])))

        return self._guard(ctx, go, planned, created)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh name, region, droplets, address and status; blocks stay as configured."""

        def go() -> State | None:
            got = self.api.get(f"/v2/load_balancers/{current['id']}")
            if got is None:
                return None
            out = dict(current)
            for key, value in self._values(got["load_balancer"]).items():
                if value is not None or current.get(key) is None:
                    out[key] = value
            return _settle(out)

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Replace the load balancer's settings (PUT) and wait until it is active again."""

        def go() -> State:
            path = f"/v2/load_balancers/{current['id']}"
            self.api.call("PUT", path, self._body(planned))
            # The real provider reads it back once; it does not wait for a status.
            got = self.api.call("GET", path)["load_balancer"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the load balancer."""

        def go() -> None:
            self.api.delete(f"/v2/load_balancers/{current['id']}")

        self._guard(ctx, go, None)


# ---------------------------------------------------------------- floating IPs


def _fip_droplet(fip: dict[str, Any]) -> int | None:
    droplet = fip.get("droplet")
    return int(droplet["id"]) if isinstance(droplet, dict) and droplet.get("id") else None


def _fip_action(api: Api, ip: str, body: dict[str, Any]) -> None:
    action = api.call("POST", f"/v2/floating_ips/{ip}/actions", body)["action"]
    api.wait_action(action, f"{body['type']} floating IP {ip}")


class FloatingIp(_Base):
    """digitalocean_floating_ip: a floating IP in a region, optionally assigned to a droplet."""

    @classmethod
    def get_name(cls) -> str:
        return "floating_ip"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("urn", String(), computed=True),
                _attr("ip_address", String(), optional=True, computed=True, requires_replace=True),
                _attr("region", String(), required=True, requires_replace=True),
                _attr("droplet_id", Number(), optional=True, computed=True),
            ],
        )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Reserve the IP (assigned at once when droplet_id is set) and wait for the assignment."""
        created: dict[str, Any] = {}

        def go() -> State:
            api = self.api
            droplet_id = planned.get("droplet_id")
            body: dict[str, Any] = {"region": planned["region"]}
            if _known(droplet_id):
                body = {"droplet_id": int(droplet_id)}
            resp = api.call("POST", "/v2/floating_ips", body)
            ip = resp["floating_ip"]["ip"]
            created.update(id=ip, ip_address=ip)
            for link in (resp.get("links") or {}).get("actions") or []:
                api.wait_action(link, f"assign floating IP {ip}")
            got = api.call("GET", f"/v2/floating_ips/{ip}")["floating_ip"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, planned, created)

    @staticmethod
    def _values(fip: dict[str, Any]) -> dict[str, Any]:
        region = fip.get("region") or {}
        return {
            "id": fip["ip"],
            "ip_address": fip["ip"],
            "urn": f"do:floatingip:{fip['ip']}",
            "region": region.get("slug") if isinstance(region, dict) else region,
            "droplet_id": _fip_droplet(fip),
        }

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh the assignment; an IP that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/floating_ips/{current['id']}")
            if got is None:
                return None
            return _settle({**current, **self._values(got["floating_ip"])})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Move the IP to another droplet, or unassign it."""

        def go() -> State:
            ip = current["id"]
            new = planned.get("droplet_id")
            if _known(new):
                _fip_action(self.api, ip, {"type": "assign", "droplet_id": int(new)})
            elif new is None and current.get("droplet_id") is not None:
                _fip_action(self.api, ip, {"type": "unassign"})
            got = self.api.call("GET", f"/v2/floating_ips/{ip}")["floating_ip"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Unassign, then release the IP."""

        def go() -> None:
            ip = current["id"]
            got = self.api.get(f"/v2/floating_ips/{ip}")
            if got is None:
                return
            if _fip_droplet(got["floating_ip"]) is not None:
                _fip_action(self.api, ip, {"type": "unassign"})
            self.api.delete(f"/v2/floating_ips/{ip}")

        self._guard(ctx, go, None)


class FloatingIpAssignment(_Base):
    """digitalocean_floating_ip_assignment: binds a floating IP to a droplet; both replace."""

    @classmethod
    def get_name(cls) -> str:
        return "floating_ip_assignment"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("ip_address", String(), required=True, requires_replace=True),
                _attr("droplet_id", Number(), required=True, requires_replace=True),
            ],
        )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Assign and wait for the action."""

        def go() -> State:
            ip, droplet_id = planned["ip_address"], int(planned["droplet_id"])
            _fip_action(self.api, ip, {"type": "assign", "droplet_id": droplet_id})
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
            return _fill(planned, {"id": f"{droplet_id}-{ip}-{stamp}{next(_ids):08d}"})

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Gone when the IP is gone or points at another droplet."""

        def go() -> State | None:
            got = self.api.get(f"/v2/floating_ips/{current['ip_address']}")
            if got is None or _fip_droplet(got["floating_ip"]) != int(current["droplet_id"]):
                return None
            return dict(current)

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Nothing updates in place."""
        return planned

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Unassign when still assigned to this droplet."""

        def go() -> None:
            ip = current["ip_address"]
            got = self.api.get(f"/v2/floating_ips/{ip}")
            if got is not None and _fip_droplet(got["floating_ip"]) == int(current["droplet_id"]):
                _fip_action(self.api, ip, {"type": "unassign"})

        self._guard(ctx, go, None)


# ---------------------------------------------------------------- SSH keys and tags


class SshKey(_Base):
    """digitalocean_ssh_key: name updates in place, a new public key replaces."""

    @classmethod
    def get_name(cls) -> str:
        return "ssh_key"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("name", String(), required=True),
                _attr("public_key", String(), required=True, requires_replace=True),
                _attr("fingerprint", String(), computed=True),
            ],
        )

    @staticmethod
    def _values(key: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(key["id"]),
            "fingerprint": key.get("fingerprint"),
            "name": key.get("name"),
        }

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Upload the key."""

        def go() -> State:
            body = {"name": planned["name"], "public_key": planned["public_key"]}
            key = self.api.call("POST", "/v2/account/keys", body)["ssh_key"]
            return _fill(planned, self._values(key))

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh name and fingerprint."""

        def go() -> State | None:
            got = self.api.get(f"/v2/account/keys/{current['id']}")
            if got is None:
                return None
            return _settle({**current, **self._values(got["ssh_key"])})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Rename the key."""

        def go() -> State:
            path = f"/v2/account/keys/{current['id']}"
            key = self.api.call("PUT", path, {"name": planned["name"]})["ssh_key"]
            return _fill(planned, self._values(key))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the key."""
        self._guard(ctx, lambda: self.api.delete(f"/v2/account/keys/{current['id']}"), None)


class Tag(_Base):
    """digitalocean_tag: a tag by name (its id is the name)."""

    @classmethod
    def get_name(cls) -> str:
        return "tag"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            attributes=[
                _attr("id", String(), computed=True),
                _attr("name", String(), required=True, requires_replace=True),
            ],
        )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the tag (an existing tag is fine)."""

        def go() -> State:
            _ensure_tag(self.api, planned["name"])
            return _fill(planned, {"id": planned["name"]})

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """A tag that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/tags/{current['id']}")
            return None if got is None else dict(current)

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Nothing updates in place."""
        return planned

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the tag."""
        self._guard(ctx, lambda: self.api.delete(f"/v2/tags/{current['id']}"), None)


# ---------------------------------------------------------------- provider


class LocalProvider(Provider):  # type: ignore[misc]
    """The provider: configuration, schema and the resource types."""

    def __init__(self) -> None:
        self.api: Api | None = None

    def get_model_prefix(self) -> str:
        """Resource type names start with `digitalocean_`."""
        return "digitalocean_"

    def full_name(self) -> str:
        """The address Terraform knows the provider by."""
        return PROVIDER_ADDRESS

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        """The real provider's arguments; only token and api_endpoint matter here."""
        secret = {"optional": True, "sensitive": True}
        return Schema(
            attributes=[
                _attr("token", String(), **secret),
                _opt("api_endpoint", String()),
                _opt("spaces_endpoint", String()),
                _attr("spaces_access_id", String(), **secret),
                _attr("spaces_secret_key", String(), **secret),
                _opt("requests_per_second", Number()),
                _opt("http_retry_max", Number()),
                _opt("http_retry_wait_min", Number()),
                _opt("http_retry_wait_max", Number()),
            ]
        )

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        """Nothing to check before configure."""

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        """Resolve endpoint and token (arguments first, then the real provider's env names)."""
        env = os.environ
        token = _str(config.get("token")) or env.get("DIGITALOCEAN_TOKEN")
        token = token or env.get("DIGITALOCEAN_ACCESS_TOKEN")
        url = _str(config.get("api_endpoint")) or env.get("DIGITALOCEAN_API_URL")
        if not token:
            diags.add_error("no DigitalOcean token: set DIGITALOCEAN_TOKEN or the token argument")
            return
        if not url:
            diags.add_error(
                "no API endpoint: set DIGITALOCEAN_API_URL (the local cloud's URL) or api_endpoint"
            )
            return
        scale = max(_float(env.get(POLL_SCALE_ENV), 1.0), 0.0)
        timeout = _float(env.get("SCALER_POLL_TIMEOUT"), 300.0)
        self.api = Api(url, token, scale=scale, timeout=timeout)

    def get_data_sources(self) -> list[Any]:
        """No data sources."""
        return []

    def get_resources(self) -> list[Any]:
        """The resource types scaler's stack uses."""
        return [Droplet, LoadBalancer, FloatingIp, FloatingIpAssignment, SshKey, Tag]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Console script `scaler-provider-digitalocean`: serve the provider (`--dev` for reattach)."""
    # Line-buffered so a parent reading the reattach line over a pipe sees it at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # SIGTERM unwinds like Ctrl-C, so the socket's temporary directory is removed.
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        runner.run_provider(LocalProvider(), sys.argv)


if __name__ == "__main__":
    main()
