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
import hashlib
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, ClassVar

import tf.provider as tf_provider
from tf import runner
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    Provider,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.provider import ProviderServicer, _decode_state, _encode_state, _encode_state_d
from tf.schema import Attribute, Block, NestedBlock, NestMode, Schema
from tf.types import Bool, List, Map, Number, Set, String, Unknown
from tf.utils import Diagnostics, _to_attribute_path, read_dynamic_value

from scaler.local import provider_schema as specs
from scaler.local.provider_schema import A, B, Spec

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
        timeout: float | None = None,
    ) -> None:
        """Look with `done` at the real provider's cadence until it holds; raise on timeout.

        timeout: a resource's `timeouts` value, when it is shorter than the provider's bound.
        """
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        deadline = time.monotonic() + limit
        time.sleep(delay * self.scale)
        wait = 0.0
        while not done():
            if time.monotonic() > deadline:
                raise ProviderError(f"timed out after {limit:g} s waiting for {what}")
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


# ---------------------------------------------------------------- schema (from provider_schema)


def _tf_type(kind: str) -> Any:
    outer, _, inner = kind.partition(":")
    if inner:
        wrap = {"list": List, "set": Set, "map": Map}[outer]
        return wrap(_tf_type(inner))
    return {"string": String, "int": Number, "float": Number, "bool": Bool}[outer]()


class Object:
    """An object type (tf has none): what Terraform sees of a computed-only nested schema."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def encode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {k: t.encode(value.get(k)) for k, t in self.fields.items()}

    def decode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {k: t.decode(value.get(k)) for k, t in self.fields.items()}

    def semantically_equal(self, a: Any, b: Any) -> bool:
        return bool(a == b)

    def tf_type(self) -> bytes:
        inner = ",".join(f'"{k}":{t.tf_type().decode()}' for k, t in self.fields.items())
        return f'["object",{{{inner}}}]'.encode()


class Nested(NestedBlock):  # type: ignore[misc]
    """A nested block with list, set or single nesting (tf offers set nesting only)."""

    _MODES: ClassVar[dict[str, str]] = {"list": "LIST", "set": "SET", "single": "SINGLE"}

    def __init__(self, spec: B) -> None:
        args, blocks = _members(spec.args, spec.blocks)
        super().__init__(spec.name, NestMode.Set, Block(attributes=args, block_types=blocks))
        self.nesting = spec.nesting
        self.min_items = spec.min_items
        self.max_items = spec.max_items

    def to_pb(self) -> Any:
        """The block's schema with its own nesting mode."""
        from tf.gen import tfplugin_pb2 as pb

        return pb.Schema.NestedBlock(
            type_name=self.type_name,
            block=self.block.to_pb(),
            min_items=self.min_items,
            max_items=self.max_items,
            nesting=getattr(pb.Schema.NestedBlock.NestingMode, self._MODES[self.nesting]),
        )

    def encode(self, value: Any) -> Any:
        if self.nesting == "single":
            return (
                None if value is None else _encode_state_d(self._amap(), self._bmap(), value, None)
            )
        return [_encode_state_d(self._amap(), self._bmap(), v, None) for v in value or []]

    def decode(self, value: Any) -> Any:
        diags = Diagnostics()
        if self.nesting == "single":
            return (
                None
                if value is None
                else _decode_state(diags, self._amap(), self._bmap(), value)[1]
            )
        return [_decode_state(diags, self._amap(), self._bmap(), v)[1] for v in value or []]

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        """Lists and single blocks compare as they are; sets in any order."""
        if self.nesting != "set":
            return bool(a_decoded == b_decoded)
        a, b = a_decoded or [], b_decoded or []
        return len(a) == len(b) and all(x in b for x in a) and all(y in a for y in b)


def _attribute(a: A) -> Attribute:
    return Attribute(
        a.name,
        _tf_type(a.type),
        required=a.required,
        optional=a.optional,
        computed=a.computed,
        sensitive=a.is_sensitive,
        requires_replace=a.force_new,
    )


def _members(args: tuple[A, ...], blocks: tuple[B, ...]) -> tuple[list[Attribute], list[Any]]:
    """Attributes and blocks as tf declares them; computed-only nested schemas are attributes."""
    attributes = [_attribute(a) for a in args]
    nested: list[Any] = []
    for b in blocks:
        if b.computed_only:
            fields = {a.name: _tf_type(a.type) for a in b.args}
            kind = Set if b.nesting == "set" else List
            attributes.append(Attribute(b.name, kind(Object(fields)), computed=True))
        else:
            nested.append(Nested(b))
    return attributes, nested


def tf_schema(spec: Spec) -> Schema:
    """The Terraform schema of a resource or data source spec."""
    attributes, blocks = _members(spec.all_args(), spec.all_blocks())
    return Schema(version=spec.version, attributes=attributes, block_types=blocks)


def _problems(
    args: tuple[A, ...], blocks: tuple[B, ...], config: Any, prefix: str = ""
) -> list[tuple[str, str]]:
    """What the real provider's validations refuse in a configuration: (key, message) pairs."""
    found: list[tuple[str, str]] = []
    if not isinstance(config, dict):
        return found
    for a in args:
        value = config.get(a.name)
        if a.check is None or value is None or value is Unknown:
            continue
        if isinstance(value, list) and any(v is Unknown for v in value):
            continue
        message = a.check.problem(prefix + a.name, value)
        if message:
            found.append((prefix + a.name, message))
    for b in blocks:
        items = config.get(b.name)
        if items is None or items is Unknown or b.computed_only:
            continue
        for i, item in enumerate([items] if isinstance(items, dict) else items):
            found += _problems(b.args, b.blocks, item, f"{prefix}{b.name}.{i}.")
    return found


def _fill_defaults(args: tuple[A, ...], blocks: tuple[B, ...], planned: Any) -> None:
    """Null arguments that have a default take it, in nested blocks too, as the SDK plans them."""
    if not isinstance(planned, dict):
        return
    for a in args:
        if a.default is not None and a.name in planned and planned[a.name] is None:
            planned[a.name] = a.default
    for b in blocks:
        items = planned.get(b.name)
        if isinstance(items, dict):
            _fill_defaults(b.args, b.blocks, items)
        elif isinstance(items, list):
            for item in items:
                _fill_defaults(b.args, b.blocks, item)


_APPLYING = threading.local()


def applying_config() -> dict[str, Any]:
    """The configuration of the resource being applied (user_data before it is hashed)."""
    config = getattr(_APPLYING, "config", None)
    return config if isinstance(config, dict) else {}


class _Servicer(ProviderServicer):  # type: ignore[misc]
    """tf's gRPC service, planning and applying as the real provider (terraform-plugin-sdk v2).

    tf plans a create without asking the resource and compares attributes only by value; the SDK
    plans defaults (nested ones too), StateFuncs (user_data's hash) and conditional replacements,
    and tells Terraform it uses the legacy type system, which lets a plan differ from the
    configuration in those ways. The resources' `shape_plan` does that here, for creates too.
    """

    def PlanResourceChange(self, request: Any, context: Any) -> Any:
        resp = super().PlanResourceChange(request, context)
        type_name = request.type_name
        attrs = self._get_res_attrs(type_name)
        blocks = self._get_res_blocks(type_name)
        diags = Diagnostics()
        _, prior = _decode_state(diags, attrs, blocks, request.prior_state)
        planned_enc, planned = _decode_state(diags, attrs, blocks, resp.planned_state)
        if planned is None or diags.has_errors() or any(d.severity == 1 for d in resp.diagnostics):
            return resp
        config = read_dynamic_value(request.config) or {}
        inst = self.app.new_resource(self._get_res_cls(type_name))
        planned, extra = inst.shape_plan(prior, planned, config)
        replace: list[Any] = []
        if prior is not None:
            for name in sorted(set(attrs) | set(blocks)):
                if name in extra or (
                    name in attrs
                    and attrs[name].requires_replace
                    and _changed(attrs[name], prior.get(name), planned.get(name))
                ):
                    replace.append(_to_attribute_path([name]))
        return type(resp)(
            planned_state=_encode_state(attrs, blocks, planned, planned_enc),
            requires_replace=replace,
            diagnostics=resp.diagnostics,
            legacy_type_system=True,
        )

    def ApplyResourceChange(self, request: Any, context: Any) -> Any:
        _APPLYING.config = read_dynamic_value(request.config)
        try:
            resp = super().ApplyResourceChange(request, context)
        finally:
            _APPLYING.config = None
        resp.legacy_type_system = True
        return resp


def _changed(attr: Attribute, old: Any, new: Any) -> bool:
    if new is Unknown:
        return old is not None
    return not attr.type.semantically_equal(old, new)


def _attr(name: str, kind: Any, **flags: Any) -> Attribute:
    return Attribute(name, kind, **flags)


class _Base(Resource):  # type: ignore[misc]
    spec: ClassVar[Spec]

    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return cls.spec.name.removeprefix("digitalocean_")

    @classmethod
    def get_schema(cls) -> Schema:
        return tf_schema(cls.spec)

    @property
    def api(self) -> Api:
        if self.provider.api is None:
            raise ProviderError("the provider is not configured")
        return self.provider.api

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        """The schema's checks, then the real provider's validations and cross-argument rules."""
        Resource.validate(self, diags, type_name, config)
        for key, message in _problems(self.spec.all_args(), self.spec.all_blocks(), config):
            diags.add_error(message, path=_path(key))
        for message in self.config_errors(config or {}):
            diags.add_error(message)

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        """Rules across arguments (the real provider's CustomizeDiff); none by default."""
        return []

    def shape_plan(
        self, prior: State | None, planned: State, config: dict[str, Any]
    ) -> tuple[State, set[str]]:
        """Plan as the SDK does: defaults, then the resource's own rules; returns the plan and
        the arguments whose change replaces the resource beyond the ForceNew ones."""
        _fill_defaults(self.spec.all_args(), self.spec.all_blocks(), planned)
        return planned, self.adjust_plan(prior, planned, config)

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """The resource's own plan rules; no extra replacements by default."""
        return set()

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


def _path(key: str) -> list[Any]:
    """A dotted key (healthcheck.0.port) as a tf attribute path."""
    return [(int(part),) if part.isdigit() else part for part in key.split(".")]


def _lower(planned: State, *keys: str) -> None:
    """The StateFunc that lowercases region and size slugs."""
    for key in keys:
        if isinstance(planned.get(key), str):
            planned[key] = planned[key].lower()


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _timeout(state: State, which: str) -> float | None:
    """A `timeouts` block's value in seconds, when set."""
    block = state.get("timeouts")
    raw = block.get(which) if isinstance(block, dict) else None
    return _duration(raw) if isinstance(raw, str) and raw else None


def _duration(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", text):
        total += float(number) * units[unit]
    return total


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
        "public_networking": bool(public),
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

    spec = specs.DROPLET

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        """backup_policy needs backups on."""
        if config.get("backup_policy") and config.get("backups") is False:
            return ["backup_policy can only be set when backups are enabled"]
        return []

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """Slugs lowercased, user_data as its SHA1; a resize changes what the size implies;
        enabling IPv6 gives an address, turning it off replaces the droplet."""
        _lower(planned, "region", "size")
        raw = config.get("user_data")
        if isinstance(raw, str):
            planned["user_data"] = _sha1(raw)
        if prior is None:
            return set()
        if planned.get("size") != prior.get("size"):
            for key in _DROPLET_SIZE_DERIVED:
                planned[key] = Unknown
        if bool(planned.get("ipv6")) != bool(prior.get("ipv6")):
            if not planned.get("ipv6"):
                return {"ipv6"}
            planned["ipv6_address"] = Unknown
        return set()

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
            for key in ("region", "vpc_uuid"):
                if _known(planned.get(key)):
                    body[key] = planned[key]
            # The state keeps user_data's hash; the API gets what the configuration says.
            raw = applying_config().get("user_data")
            if isinstance(raw, str):
                body["user_data"] = raw
            if planned.get("droplet_agent") is not None:
                body["with_droplet_agent"] = planned["droplet_agent"]
            policy = planned.get("backup_policy") or []
            if policy and planned.get("backups"):
                body["backup_policy"] = {k: v for k, v in policy[0].items() if v is not None}
            resp = self.api.call("POST", "/v2/droplets", body)
            created["id"] = str(resp["droplet"]["id"])
            links = (resp.get("links") or {}).get("actions") or []
            actions = [str(link["id"]) for link in links if link.get("id")]
            seen = self._wait_active(created["id"], actions, _timeout(planned, "create"))
            return self._fill(planned, seen)

        return self._guard(ctx, go, planned, created)

    def _wait_active(
        self, droplet_id: str, create_actions: list[str], timeout: float | None = None
    ) -> dict[str, Any]:
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

        self.api.wait(done, f"droplet {droplet_id} to become active", timeout=timeout)
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

            # As the real provider: wait until no action holds it, shut it down when asked to,
            # delete, wait until it is gone.
            self.api.wait(unlocked, f"droplet {did} to be unlocked for destroy")
            if missing:
                return
            if current.get("graceful_shutdown"):
                got = self.api.get(f"/v2/droplets/{did}")
                if got is not None and got["droplet"].get("status") == "active":
                    self.api.droplet_action(did, {"type": "shutdown"})
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

    spec = specs.LOADBALANCER

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        """The real provider's CustomizeDiff: the check's path, sticky cookies, region and type."""
        errors = []
        for check in config.get("healthcheck") or []:
            protocol, path = check.get("protocol"), check.get("path")
            if protocol in ("http", "https") and path in (None, ""):
                errors.append(f"health check `path` is required for when protocol is `{protocol}`")
            elif protocol == "tcp" and path not in (None, ""):
                errors.append("health check `path` is not allowed for when protocol is `tcp`")
        for sticky in config.get("sticky_sessions") or []:
            cookies = sticky.get("type") == "cookies"
            for key in ("cookie_name", "cookie_ttl_seconds"):
                if cookies and sticky.get(key) is None:
                    errors.append(f"sticky_sessions `{key}` is required when type is `cookies`")
                elif not cookies and sticky.get(key) is not None:
                    errors.append(
                        f"sticky_sessions `{key}` is not allowed when type is not `cookies`"
                    )
        kind = config.get("type")
        kind = kind.upper() if isinstance(kind, str) else kind
        region = config.get("region")
        if kind == "GLOBAL" and region not in (None, ""):
            errors.append("'region' must be empty or not set when 'type' is 'GLOBAL'")
        elif kind is None and region in (None, ""):
            errors.append("missing 'region' value")
        elif kind in ("REGIONAL", "REGIONAL_NETWORK") and region in (None, ""):
            errors.append(f"'region' must be set when 'type' is '{kind}'")
        return errors

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """The region slug is lowercased."""
        _lower(planned, "region")
        return set()

    def upgrade(self, ctx: Any, version: int, state: State) -> State:
        """Schema v0 -> v1: certificate_name beside certificate_id (no certificates here)."""
        for rule in state.get("forwarding_rule") or []:
            rule.setdefault("certificate_name", rule.get("certificate_id") or "")
        return state

    def _body(self, planned: State, *, creating: bool) -> dict[str, Any]:
        """The whole request, built from the configuration, as the real provider sends it."""
        body: dict[str, Any] = {"name": planned["name"]}
        # size_unit when set, otherwise size.
        if _known(planned.get("size_unit")):
            body["size_unit"] = int(planned["size_unit"])
        elif _known(planned.get("size")):
            body["size"] = planned["size"]
        for key in (
            "region",
            "vpc_uuid",
            "project_id",
            "algorithm",
            "type",
            "network",
            "network_stack",
            "tls_cipher_policy",
            "http_idle_timeout_seconds",
        ):
            if _known(planned.get(key)):
                body[key] = planned[key]
        if creating and _known(planned.get("ip")):
            body["ip"] = planned["ip"]
        for key in (
            "redirect_http_to_https",
            "enable_proxy_protocol",
            "enable_backend_keepalive",
            "disable_lets_encrypt_dns_records",
        ):
            body[key] = bool(planned.get(key))
        body["forwarding_rules"] = [
            {k: v for k, v in rule.items() if v is not None and k != "certificate_name"}
            for rule in planned.get("forwarding_rule") or []
        ]
        for block, key in (("healthcheck", "health_check"), ("sticky_sessions", "sticky_sessions")):
            items = planned.get(block) or []
            if items:
                body[key] = {k: v for k, v in items[0].items() if v is not None}
        firewall = planned.get("firewall") or []
        if firewall:
            body["firewall"] = {k: list(v or []) for k, v in firewall[0].items()}
        domains = planned.get("domains") or []
        if domains:
            body["domains"] = [
                {
                    k: d[k]
                    for k in ("name", "is_managed", "certificate_name")
                    if d.get(k) is not None
                }
                for d in domains
            ]
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
            "ipv6": lb.get("ipv6") or "",
        }
        for key in (
            "size",
            "size_unit",
            "vpc_uuid",
            "project_id",
            "type",
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
            lb = self.api.call("POST", "/v2/load_balancers", self._body(planned, creating=True))[
                "load_balancer"
            ]
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
            self.api.call("PUT", path, self._body(planned, creating=False))
            # The real provider reads it back once; it does not wait for a status.
            got = self.api.call("GET", path)["load_balancer"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the load balancer."""

        def go() -> None:
            self.api.delete(f"/v2/load_balancers/{current['id']}")

        self._guard(ctx, go, None)


# ---------------------------------------------------------------- floating and reserved IPs


def _ip_droplet(ip: dict[str, Any]) -> int | None:
    droplet = ip.get("droplet")
    return int(droplet["id"]) if isinstance(droplet, dict) and droplet.get("id") else None


def _wait_droplet_idle(api: Api, droplet_id: int) -> None:
    """Before an assignment, as the real provider: until no action of the droplet is pending."""

    def idle() -> bool:
        got = api.call("GET", f"/v2/droplets/{droplet_id}/actions?per_page=50")
        return not any(a.get("status") == "in-progress" for a in got.get("actions") or [])

    api.wait(idle, f"droplet {droplet_id} to have no pending action", delay=3.0, min_timeout=2.0)


def _ip_action(api: Api, ip: str, body: dict[str, Any]) -> None:
    """Assign or unassign through /v2/reserved_ips (both IP resources do) and wait for it."""
    if body["type"] == "assign":
        _wait_droplet_idle(api, int(body["droplet_id"]))
    action = api.call("POST", f"/v2/reserved_ips/{ip}/actions", body)["action"]
    action_id = action["id"]

    def done() -> bool:
        got = api.get(f"/v2/reserved_ips/{ip}/actions/{action_id}")
        if got is None:
            # The action is gone: done when the IP is where it was sent.
            held = api.get(f"/v2/reserved_ips/{ip}")
            target = body.get("droplet_id")
            return held is not None and _ip_droplet(held["reserved_ip"]) == target
        status = got["action"].get("status")
        if status == "errored":
            raise ProviderError(f"action {action_id} ({body['type']} IP {ip}) errored")
        return bool(status == "completed")

    api.wait(done, f"action {action_id} ({body['type']} IP {ip})")


class ReservedIp(_Base):
    """digitalocean_reserved_ip: an address in a region, optionally assigned to a droplet."""

    spec = specs.RESERVED_IP
    urn = "do:reservedip"

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """The region slug is lowercased."""
        _lower(planned, "region")
        return set()

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Reserve the IP in the region, then assign it when droplet_id is set."""
        created: dict[str, Any] = {}

        def go() -> State:
            api = self.api
            resp = api.call("POST", "/v2/reserved_ips", {"region": planned["region"]})
            ip = resp["reserved_ip"]["ip"]
            created.update(id=ip, ip_address=ip)
            if _known(planned.get("droplet_id")):
                _ip_action(api, ip, {"type": "assign", "droplet_id": int(planned["droplet_id"])})
            got = api.call("GET", f"/v2/reserved_ips/{ip}")["reserved_ip"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, planned, created)

    def _values(self, ip: dict[str, Any]) -> dict[str, Any]:
        region = ip.get("region") or {}
        return {
            "id": ip["ip"],
            "ip_address": ip["ip"],
            "urn": f"{self.urn}:{ip['ip']}",
            "region": region.get("slug") if isinstance(region, dict) else region,
            "droplet_id": _ip_droplet(ip),
        }

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh; the assignment only when this resource manages it (droplet_id set)."""

        def go() -> State | None:
            got = self.api.get(f"/v2/reserved_ips/{current['id']}")
            if got is None:
                return None
            values = self._values(got["reserved_ip"])
            if current.get("droplet_id") is None:
                values.pop("droplet_id")  # assigned elsewhere (an assignment resource)
            return _settle({**current, **values})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Move the IP to another droplet, or unassign it."""

        def go() -> State:
            ip = current["id"]
            new = planned.get("droplet_id")
            if _known(new):
                _ip_action(self.api, ip, {"type": "assign", "droplet_id": int(new)})
            elif new is None and current.get("droplet_id") is not None:
                _ip_action(self.api, ip, {"type": "unassign"})
            got = self.api.call("GET", f"/v2/reserved_ips/{ip}")["reserved_ip"]
            values = self._values(got)
            if new is None:
                values["droplet_id"] = None
            return _fill(planned, values)

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Unassign first when droplet_id is set (a 422 is fine), then release the IP."""

        def go() -> None:
            ip = current["id"]
            if current.get("droplet_id") is not None:
                try:
                    _ip_action(self.api, ip, {"type": "unassign"})
                except ApiError as err:
                    if err.status not in (404, 422):
                        raise
            self.api.delete(f"/v2/reserved_ips/{ip}")

        self._guard(ctx, go, None)


class FloatingIp(ReservedIp):
    """digitalocean_floating_ip: the reserved IP resource under its old name (same API calls)."""

    spec = specs.FLOATING_IP
    urn = "do:floatingip"


class ReservedIpAssignment(_Base):
    """digitalocean_reserved_ip_assignment: binds an IP to a droplet; both replace."""

    spec = specs.RESERVED_IP_ASSIGNMENT

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Wait for the droplet to be idle, assign and wait for the action."""

        def go() -> State:
            ip, droplet_id = planned["ip_address"], int(planned["droplet_id"])
            _ip_action(self.api, ip, {"type": "assign", "droplet_id": droplet_id})
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
            return _fill(planned, {"id": f"{droplet_id}-{ip}-{stamp}{next(_ids):08d}"})

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Gone when the IP is gone or points at another droplet."""

        def go() -> State | None:
            got = self.api.get(f"/v2/reserved_ips/{current['ip_address']}")
            if got is None or _ip_droplet(got["reserved_ip"]) != int(current["droplet_id"]):
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
            got = self.api.get(f"/v2/reserved_ips/{ip}")
            if got is not None and _ip_droplet(got["reserved_ip"]) == int(current["droplet_id"]):
                _ip_action(self.api, ip, {"type": "unassign"})

        self._guard(ctx, go, None)


class FloatingIpAssignment(ReservedIpAssignment):
    """digitalocean_floating_ip_assignment: the same, under the old name."""

    spec = specs.FLOATING_IP_ASSIGNMENT


# ---------------------------------------------------------------- SSH keys and tags


class SshKey(_Base):
    """digitalocean_ssh_key: name updates in place, a new public key replaces."""

    spec = specs.SSH_KEY

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """A public key that differs only by surrounding whitespace is the same key."""
        new, old = planned.get("public_key"), (prior or {}).get("public_key")
        if isinstance(new, str) and isinstance(old, str) and new.strip() == old.strip():
            planned["public_key"] = old
        return set()

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
            path = f"/v2/account/keys/{key['id']}"
            # As the real provider: read it back until the API has it (bounded by create's timeout).
            self.api.wait(
                lambda: self.api.get(path) is not None,
                f"SSH key {key['id']}",
                delay=0,
                timeout=_timeout(planned, "create"),
            )
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
    """digitalocean_tag: a tag by name (its id is the name), with the counts of what carries it."""

    spec = specs.TAG

    @staticmethod
    def _values(tag: dict[str, Any]) -> dict[str, Any]:
        res = tag.get("resources") or {}

        def count(kind: str) -> int:
            return int((res.get(kind) or {}).get("count") or 0)

        return {
            "id": tag["name"],
            "total_resource_count": int(res.get("count") or 0),
            "droplets_count": count("droplets"),
            "images_count": count("images"),
            "volumes_count": count("volumes"),
            "volume_snapshots_count": count("volume_snapshots"),
            "databases_count": count("databases"),
        }

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the tag (an existing tag is fine)."""

        def go() -> State:
            _ensure_tag(self.api, planned["name"])
            got = self.api.call("GET", f"/v2/tags/{planned['name']}")["tag"]
            return _fill(planned, self._values(got))

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """A tag that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/tags/{current['id']}")
            return None if got is None else _settle({**current, **self._values(got["tag"])})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Nothing updates in place."""
        return planned

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the tag."""
        self._guard(ctx, lambda: self.api.delete(f"/v2/tags/{current['id']}"), None)


class DropletSnapshot(_Base):
    """digitalocean_droplet_snapshot: a snapshot of a droplet; name and droplet replace."""

    spec = specs.DROPLET_SNAPSHOT

    @staticmethod
    def _values(snap: dict[str, Any], droplet_id: str | None = None) -> dict[str, Any]:
        return {
            "id": str(snap["id"]),
            "name": snap.get("name"),
            "droplet_id": droplet_id or str(snap.get("resource_id") or ""),
            "regions": list(snap.get("regions") or []),
            "size": snap.get("size_gigabytes"),
            "created_at": snap.get("created_at"),
            "min_disk_size": snap.get("min_disk_size"),
        }

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Run the droplet's snapshot action, then find the image it made by its start time."""

        def go() -> State:
            did = planned["droplet_id"]
            body = {"type": "snapshot", "name": planned["name"]}
            action = self.api.call("POST", f"/v2/droplets/{did}/actions", body)["action"]
            self.api.wait_action(action, f"snapshot droplet {did}")
            listed = self.api.call("GET", f"/v2/droplets/{did}/snapshots?per_page=200")
            for snap in listed.get("snapshots") or []:
                if snap.get("created_at") == action["started_at"]:
                    return _fill(planned, self._values(snap, did))
            raise ProviderError(f"no snapshot of droplet {did} was made at {action['started_at']}")

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh; a snapshot that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/snapshots/{current['id']}")
            if got is None:
                return None
            return _settle({**current, **self._values(got["snapshot"])})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Nothing updates in place."""
        return planned

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the snapshot."""
        self._guard(ctx, lambda: self.api.delete(f"/v2/snapshots/{current['id']}"), None)


# ---------------------------------------------------------------- firewalls

_PEERS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


class Firewall(_Base):
    """digitalocean_firewall: inbound and outbound rules for droplets and tags (PUT on change)."""

    spec = specs.FIREWALL

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        """A firewall needs a rule; a tcp or udp rule needs its port_range."""
        errors = []
        if not config.get("inbound_rule") and not config.get("outbound_rule"):
            errors.append("At least one rule must be specified")
        for side in ("inbound_rule", "outbound_rule"):
            for rule in config.get(side) or []:
                if rule.get("protocol") != "icmp" and rule.get("port_range") in (None, ""):
                    errors.append(
                        "`port_range` of firewall rules is required if protocol is `tcp` or `udp`"
                    )
        return errors

    @staticmethod
    def _rules(planned: State, side: str, peer: str, prefix: str) -> list[dict[str, Any]]:
        out = []
        for rule in planned.get(side) or []:
            peers = {}
            for key in _PEERS:
                value = rule.get(f"{prefix}_{key}")
                if value:
                    peers[key] = [int(v) for v in value] if key == "droplet_ids" else list(value)
            out.append(
                {"protocol": rule["protocol"], "ports": rule.get("port_range") or "0", peer: peers}
            )
        return out

    def _body(self, planned: State) -> dict[str, Any]:
        return {
            "name": planned["name"],
            "inbound_rules": self._rules(planned, "inbound_rule", "sources", "source"),
            "outbound_rules": self._rules(planned, "outbound_rule", "destinations", "destination"),
            "droplet_ids": sorted(int(i) for i in planned.get("droplet_ids") or []),
            "tags": list(planned.get("tags") or []),
        }

    @staticmethod
    def _values(fw: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": fw["id"],
            "status": fw.get("status"),
            "created_at": fw.get("created_at"),
            "pending_changes": [
                {
                    "droplet_id": p.get("droplet_id"),
                    "removing": p.get("removing"),
                    "status": p.get("status"),
                }
                for p in fw.get("pending_changes") or []
            ],
        }

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the firewall (no wait, as the real provider)."""

        def go() -> State:
            fw = self.api.call("POST", "/v2/firewalls", self._body(planned))["firewall"]
            return _fill(planned, self._values(fw))

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh its status; rules and droplets stay as configured."""

        def go() -> State | None:
            got = self.api.get(f"/v2/firewalls/{current['id']}")
            if got is None:
                return None
            return _settle({**current, **self._values(got["firewall"])})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Send the whole firewall (PUT)."""

        def go() -> State:
            path = f"/v2/firewalls/{current['id']}"
            fw = self.api.call("PUT", path, self._body(planned))["firewall"]
            return _fill(planned, self._values(fw))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete the firewall."""
        self._guard(ctx, lambda: self.api.delete(f"/v2/firewalls/{current['id']}"), None)


# ---------------------------------------------------------------- VPCs and projects


class Vpc(_Base):
    """digitalocean_vpc: a VPC in a region (its ip_range is data here, never dialled)."""

    spec = specs.VPC

    @staticmethod
    def _values(vpc: dict[str, Any]) -> dict[str, Any]:
        keep = ("id", "urn", "name", "description", "region", "ip_range", "default", "created_at")
        return {k: vpc.get(k) for k in keep}

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the VPC."""

        def go() -> State:
            body = {k: planned[k] for k in ("name", "region") if _known(planned.get(k))}
            for key in ("description", "ip_range"):
                if _known(planned.get(key)) and planned[key] != "":
                    body[key] = planned[key]
            vpc = self.api.call("POST", "/v2/vpcs", body)["vpc"]
            return _fill(planned, self._values(vpc))

        return self._guard(ctx, go, None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh; a VPC that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/vpcs/{current['id']}")
            if got is None:
                return None
            values = self._values(got["vpc"])
            if not values["description"] and current.get("description") is None:
                values["description"] = None
            return _settle({**current, **values})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Rename or describe it (PUT)."""

        def go() -> State:
            body = {"name": planned["name"], "description": planned.get("description") or ""}
            vpc = self.api.call("PUT", f"/v2/vpcs/{current['id']}", body)["vpc"]
            return _fill(planned, self._values(vpc))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Delete it, retrying while its members are still going (403/409), as the real one."""

        def go() -> None:
            def deleted() -> bool:
                try:
                    self.api.delete(f"/v2/vpcs/{current['id']}")
                except ApiError as err:
                    if err.status in (403, 409):
                        return False
                    raise
                return True

            limit = _timeout(current, "delete") or 120.0
            self.api.wait(deleted, f"VPC {current['id']} to be deleted", delay=0, timeout=limit)

        self._guard(ctx, go, None)


_PROJECT_KEYS = ("name", "description", "purpose", "environment", "is_default")


class Project(_Base):
    """digitalocean_project: a project and the resources (URNs) in it."""

    spec = specs.PROJECT

    def adjust_plan(self, prior: State | None, planned: State, config: dict[str, Any]) -> set[str]:
        """An environment that differs only by case is the same."""
        old, new = (prior or {}).get("environment"), planned.get("environment")
        if isinstance(old, str) and isinstance(new, str) and old.lower() == new.lower():
            planned["environment"] = old
        return set()

    def _values(self, project: dict[str, Any]) -> dict[str, Any]:
        out = {k: project.get(k) for k in ("id", "owner_uuid", "owner_id", *_PROJECT_KEYS)}
        out.update(created_at=project.get("created_at"), updated_at=project.get("updated_at"))
        out["purpose"] = str(out.get("purpose") or "").removeprefix("Other: ")
        path = f"/v2/projects/{project['id']}/resources?per_page=200"
        listed = self.api.call("GET", path).get("resources") or []
        out["resources"] = sorted(r["urn"] for r in listed)
        return out

    def _assign(self, project_id: str, urns: list[str]) -> None:
        if urns:
            body = {"resources": urns}
            self.api.call("POST", f"/v2/projects/{project_id}/resources", body)

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        """Create the project, then move its resources into it."""
        created: dict[str, Any] = {}

        def go() -> State:
            body = {k: planned[k] for k in _PROJECT_KEYS if _known(planned.get(k))}
            project = self.api.call("POST", "/v2/projects", body)["project"]
            created["id"] = project["id"]
            if _known(planned.get("resources")):
                self._assign(project["id"], sorted(planned["resources"]))
            return _fill(planned, self._values(project))

        return self._guard(ctx, go, planned, created)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        """Refresh; a project that is gone leaves the state."""

        def go() -> State | None:
            got = self.api.get(f"/v2/projects/{current['id']}")
            if got is None:
                return None
            values = self._values(got["project"])
            if not values["resources"] and current.get("resources") is None:
                values["resources"] = None
            return _settle({**current, **values})

        return self._guard(ctx, go, current)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        """Change its settings (PATCH); resources taken out go back to the default project."""

        def go() -> State:
            pid = current["id"]
            body = {k: planned[k] for k in _PROJECT_KEYS if _known(planned.get(k))}
            project = self.api.call("PATCH", f"/v2/projects/{pid}", body)["project"]
            old = set(current.get("resources") or [])
            new = set(planned.get("resources") or []) if _known(planned.get("resources")) else old
            self._assign(pid, sorted(new - old))
            if old - new:
                default = self.api.call("GET", "/v2/projects/default")["project"]
                self._assign(default["id"], sorted(old - new))
            return _fill(planned, self._values(project))

        return self._guard(ctx, go, current)

    def delete(self, ctx: DeleteContext, current: State) -> None:
        """Move its resources to the default project, then delete it (retrying on 412)."""

        def go() -> None:
            pid = current["id"]
            got = self.api.get(f"/v2/projects/{pid}")
            if got is None:
                return
            urns = self._values(got["project"])["resources"]
            if urns:
                default = self.api.call("GET", "/v2/projects/default")["project"]
                self._assign(default["id"], urns)

            def deleted() -> bool:
                try:
                    self.api.delete(f"/v2/projects/{pid}")
                except ApiError as err:
                    if err.status == 412:
                        return False
                    raise
                return True

            limit = _timeout(current, "delete") or 180.0
            self.api.wait(deleted, f"project {pid} to be deleted", delay=0, timeout=limit)

        self._guard(ctx, go, None)


# ---------------------------------------------------------------- data sources


def _complete(spec: Spec, values: dict[str, Any], config: dict[str, Any]) -> State:
    """A data source's whole state: every attribute and block, from the API or the config."""
    out: State = {}
    for a in spec.all_args():
        out[a.name] = values[a.name] if a.name in values else config.get(a.name)
    for b in spec.all_blocks():
        default: Any = None if b.nesting == "single" else []
        out[b.name] = values.get(b.name, config.get(b.name, default))
    return out


def _image_values(image: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(image["id"]),
        "name": image.get("name"),
        "type": image.get("type"),
        "distribution": image.get("distribution"),
        "slug": image.get("slug") or "",
        "image": str(image["id"]),
        "private": not image.get("public", False),
        "min_disk_size": image.get("min_disk_size"),
        "size_gigabytes": image.get("size_gigabytes"),
        "regions": list(image.get("regions") or []),
        "created": image.get("created_at"),
        "tags": list(image.get("tags") or []),
        "status": image.get("status"),
        "error_message": image.get("error_message") or "",
        "description": image.get("description") or "",
    }


def _all_pages(api: Api, path: str, key: str) -> list[dict[str, Any]]:
    """Every item of a list, page by page (per_page 200, as the real provider asks)."""
    items: list[dict[str, Any]] = []
    page = 1
    sep = "&" if "?" in path else "?"
    while True:
        got = api.call("GET", f"{path}{sep}page={page}&per_page=200")
        items += got.get(key) or []
        if not (got.get("links") or {}).get("pages", {}).get("next"):
            return items
        page += 1


def _filtered(records: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """datalist's filter and sort blocks over the records."""
    import re as _re

    out = list(records)
    for f in config.get("filter") or []:
        key, values = f["key"], [str(v) for v in f.get("values") or []]
        mode, need_all = f.get("match_by") or "exact", bool(f.get("all"))

        def hit(value: Any, wanted: str, mode: str = mode) -> bool:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if mode == "re":
                return _re.search(wanted, text) is not None
            if mode == "substring":
                return wanted in text
            return text == wanted

        def keep(
            record: dict[str, Any],
            key: str = key,
            values: list[str] = values,
            every: bool = need_all,
        ) -> bool:
            value = record.get(key)
            items = value if isinstance(value, list) else [value]
            if every:
                return all(any(hit(i, w) for i in items) for w in values)
            return any(hit(i, w) for i in items for w in values)

        out = [r for r in out if keep(r)]
    for order in reversed(config.get("sort") or []):
        key = str(order["key"])
        out.sort(key=lambda r: _sortable(r.get(key)))
        if order.get("direction") == "desc":
            out.reverse()
    return out


def _sortable(value: Any) -> tuple[int, float, str]:
    """Numbers in order, then text, then nulls."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value)) if value is not None else (2, 0.0, "")


def _list_id(kind: str, records: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode())
    return f"{kind}/{digest.hexdigest()[:16]}"


class _Data(_Base):
    """A data source: read once per plan from the API (no create, update or delete)."""

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        """The schema's checks and the lookup's exactly-one-of rule."""
        for key, message in _problems(self.spec.all_args(), self.spec.all_blocks(), config):
            diags.add_error(message, path=_path(key))
        for message in self.config_errors(config or {}):
            diags.add_error(message)

    def read(self, ctx: Any, config: Config) -> State | None:
        """Look the object up as the real provider does."""
        try:
            return _complete(self.spec, self.lookup(config or {}), config or {})
        except ProviderError as err:
            ctx.diagnostics.add_error(str(err))
            return None

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        """The values of the object the configuration names."""
        raise NotImplementedError

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        return None

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        return None

    def delete(self, ctx: DeleteContext, current: State) -> None:
        return None


def _exactly_one(config: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    given = [k for k in keys if config.get(k) is not None]
    if len(given) == 1 or any(config.get(k) is Unknown for k in keys):
        return []
    names = ",".join(keys)
    if not given:
        return [f"one of `{names}` must be specified"]
    return [f"only one of `{names}` can be specified, but `{','.join(given)}` were specified."]


class ImageData(_Data):
    """data digitalocean_image: one image by id, slug, or name (within a source)."""

    spec = specs.DS_IMAGE

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        errors = _exactly_one(config, ("id", "slug", "name"))
        if config.get("source") is not None and (config.get("id") or config.get("slug")):
            errors.append('"source": conflicts with id and slug')
        return errors

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        api = self.api
        if config.get("id") is not None or config.get("slug") is not None:
            ident = config.get("id") if config.get("id") is not None else config["slug"]
            ident = int(ident) if isinstance(ident, float) else ident
            got = api.get(f"/v2/images/{ident}")
            if got is None:
                raise ProviderError(f"image not found: {ident}")
            return _image_values(got["image"])
        name = config["name"]
        source = str(config.get("source") or "user").lower()
        query = {
            "user": "?private=true",
            "distributions": "?type=distribution",
            "applications": "?type=application",
            "all": "",
        }[source]
        found = [i for i in _all_pages(api, f"/v2/images{query}", "images") if i["name"] == name]
        if not found:
            raise ProviderError(f"no image found with name {name}")
        if len(found) > 1:
            raise ProviderError(
                f"too many images found with name {name} (found {len(found)}, expected 1)"
            )
        return _image_values(found[0])


class ImagesData(_Data):
    """data digitalocean_images: every image, filtered and sorted."""

    spec = specs.DS_IMAGES

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        records = [_image_values(i) for i in _all_pages(self.api, "/v2/images", "images")]
        records = _filtered(records, config)
        return {"id": _list_id("images", records), "images": records}


def _droplet_data(d: dict[str, Any]) -> dict[str, Any]:
    values = _droplet_values(d)
    image = d.get("image") or {}
    values.update(
        id=int(d["id"]),
        image=image.get("slug") or str(image.get("id", "")),
        backups="backups" in (d.get("features") or []),
        ipv6_address_private="",
        gpu_partition_mode="",
    )
    return values


class DropletData(_Data):
    """data digitalocean_droplet: one droplet by id, name or tag."""

    spec = specs.DS_DROPLET

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        return _exactly_one(config, ("id", "tag", "name"))

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("id") is not None:
            got = self.api.get(f"/v2/droplets/{int(config['id'])}")
            if got is None:
                raise ProviderError(f"Error retrieving Droplet: droplet {config['id']} not found")
            return _droplet_data(got["droplet"])
        key, wanted = ("name", config["name"]) if config.get("name") else ("tag", config["tag"])
        found = [
            d
            for d in _all_pages(self.api, "/v2/droplets", "droplets")
            if (d["name"] == wanted if key == "name" else wanted in (d.get("tags") or []))
        ]
        if not found:
            raise ProviderError(f"no droplet found with {key} {wanted}")
        if len(found) > 1:
            raise ProviderError(
                f"too many droplets found with {key} {wanted} (found {len(found)}, expected 1)"
            )
        return _droplet_data(found[0])


class DropletsData(_Data):
    """data digitalocean_droplets: every droplet, filtered and sorted."""

    spec = specs.DS_DROPLETS

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        droplets = _all_pages(self.api, "/v2/droplets", "droplets")
        fields = {a.name for b in self.spec.blocks if b.name == "droplets" for a in b.args}
        records = [{k: v for k, v in _droplet_data(d).items() if k in fields} for d in droplets]
        for r in records:
            for name in fields - set(r):
                r[name] = None
        records = _filtered(records, config)
        return {"id": _list_id("droplets", records), "droplets": records}


class SshKeyData(_Data):
    """data digitalocean_ssh_key: the one key with that name."""

    spec = specs.DS_SSH_KEY

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        name = config["name"]
        keys = [
            k for k in _all_pages(self.api, "/v2/account/keys", "ssh_keys") if k["name"] == name
        ]
        if len(keys) != 1:
            raise ProviderError(f"expected one SSH key named {name}, found {len(keys)}")
        key = keys[0]
        return {
            "id": int(key["id"]),
            "name": name,
            "public_key": key["public_key"],
            "fingerprint": key["fingerprint"],
        }


class LoadBalancerData(_Data):
    """data digitalocean_loadbalancer: one load balancer by id or name."""

    spec = specs.DS_LOADBALANCER

    def config_errors(self, config: dict[str, Any]) -> list[str]:
        return _exactly_one(config, ("id", "name"))

    def lookup(self, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("id") is not None:
            got = self.api.get(f"/v2/load_balancers/{config['id']}")
            if got is None:
                raise ProviderError(f"load balancer {config['id']} not found")
            lb = got["load_balancer"]
        else:
            found = [
                lb
                for lb in _all_pages(self.api, "/v2/load_balancers", "load_balancers")
                if lb["name"] == config["name"]
            ]
            if len(found) != 1:
                raise ProviderError(
                    f"expected one load balancer named {config['name']}, found {len(found)}"
                )
            lb = found[0]
        return _lb_data(self.spec, lb)


def _lb_data(spec: Spec, lb: dict[str, Any]) -> dict[str, Any]:
    values = LoadBalancer._values(lb)
    values.update(
        algorithm=lb.get("algorithm"),
        droplet_tag=lb.get("tag") or "",
        network=lb.get("network"),
        network_stack=lb.get("network_stack"),
        tls_cipher_policy=lb.get("tls_cipher_policy") or "",
        size_unit=lb.get("size_unit"),
        size=lb.get("size") or "",
    )
    blocks = {b.name: b for b in spec.blocks}

    def rows(name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fields = [a.name for a in blocks[name].args] if name in blocks else []
        return [{f: item.get(f) for f in fields} for item in items]

    health = lb.get("health_check") or {}
    sticky = lb.get("sticky_sessions") or {}
    values["forwarding_rule"] = rows(
        "forwarding_rule",
        [
            {**r, "certificate_name": r.get("certificate_id") or ""}
            for r in lb.get("forwarding_rules") or []
        ],
    )
    values["healthcheck"] = rows("healthcheck", [health] if health else [])
    values["sticky_sessions"] = rows("sticky_sessions", [sticky] if sticky else [])
    for name in blocks:
        values.setdefault(name, [])
    known = {a.name for a in spec.all_args()}
    return {k: v for k, v in values.items() if k in known or k in blocks}


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
        """The data sources current stacks use."""
        return [ImageData, ImagesData, DropletData, DropletsData, SshKeyData, LoadBalancerData]

    def get_resources(self) -> list[Any]:
        """The resource types scaler's stack uses."""
        return [
            Droplet,
            LoadBalancer,
            FloatingIp,
            FloatingIpAssignment,
            ReservedIp,
            ReservedIpAssignment,
            SshKey,
            Tag,
            Vpc,
            Project,
            DropletSnapshot,
            Firewall,
        ]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Console script `scaler-provider-digitalocean`: serve the provider (`--dev` for reattach)."""
    # tf's runner builds its gRPC service from this name; ours plans as the real provider does.
    tf_provider.ProviderServicer = _Servicer
    # Line-buffered so a parent reading the reattach line over a pipe sees it at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # SIGTERM unwinds like Ctrl-C, so the socket's temporary directory is removed.
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        runner.run_provider(LocalProvider(), sys.argv)


if __name__ == "__main__":
    main()
