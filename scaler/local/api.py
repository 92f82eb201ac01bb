"""A stateful DigitalOcean API v2 stand-in on loopback: the local cloud's control plane.

Run it with `scaler local up` (background; prints `export K=V` lines), with
`scaler local up --foreground` (both take `--delay SECONDS` for every delay and `--rate-limit N`
for the per-minute budget), or in Python::

    with LocalCloud(Path(".scaler/local"), port=0, network=42) as cloud:
        os.environ.update(cloud.env())  # python-digitalocean, Packer, Terraform find it there

It listens on 127.0.0.1 only. Any non-empty `Authorization: Bearer <token>` is accepted (missing
or empty: 401). Answers follow DigitalOcean's published OpenAPI schema (the tests check them).

Endpoints (under /v2; a trailing slash is ignored; HEAD answers like GET without a body):
  account             GET /account
  SSH keys            GET|POST /account/keys, GET|PUT|DELETE /account/keys/{id or fingerprint}
  droplets            GET /droplets (tag_name, name), POST /droplets (name, or names for many),
                      DELETE /droplets?tag_name=, GET|DELETE /droplets/{id},
                      GET /droplets/{id}/snapshots
  droplet actions     GET|POST /droplets/{id}/actions, GET /droplets/{id}/actions/{action_id},
                      POST /droplets/actions?tag_name=; types: shutdown, power_off, power_on,
                      reboot, power_cycle, snapshot, rename, resize, enable_backups,
                      disable_backups, enable_ipv6, password_reset
  actions             GET /actions, GET /actions/{id}
  images              GET /images (private=true, type=distribution|application|snapshot,
                      tag_name), GET|PUT|DELETE /images/{id or slug}
  image actions       GET|POST /images/{id}/actions (transfer), GET /images/{id}/actions/{aid}
  snapshots           GET /snapshots (resource_type), GET|DELETE /snapshots/{id}
  regions, sizes      GET /regions, GET /sizes
  tags                GET|POST /tags, GET|DELETE /tags/{name}, POST|DELETE /tags/{name}/resources
  load balancers      GET|POST /load_balancers, GET|PUT|DELETE /load_balancers/{id},
                      POST|DELETE /load_balancers/{id}/droplets and .../forwarding_rules
  floating IPs        GET|POST /floating_ips, GET|DELETE /floating_ips/{ip},
                      GET|POST /floating_ips/{ip}/actions (assign, unassign),
                      GET /floating_ips/{ip}/actions/{action_id}
  reserved IPs        the same under /reserved_ips (one pool: an address shows under both)

Like the real API: lists are paginated (`page`, `per_page` default 20, at most 200,
`links.pages` first/prev/next/last as absolute URLs, `meta.total`); errors are JSON
`{"id", "message", "request_id"}`; every /v2 answer carries `ratelimit-limit` (the hourly
budget, 5,000), `ratelimit-remaining` and `ratelimit-reset` (epoch seconds); past
`rate_limit_per_minute` requests (default 250) in the last 60 s a token gets 429 with
`retry-after` (seconds). A droplet with an action in progress (its creation included) refuses
another action with 422 `Droplet already has a pending event.`. Action look-ups under
/images/{id}/actions and the IP actions go by action id alone: Packer 1.6.6 polls its image
transfer with the two ids swapped.

Time (class Delays, seconds, changeable at run time): a droplet is `new` for `droplet_boot`,
then `active`; actions stay `in-progress` for `action` (`snapshot` for snapshots, `transfer`
for image transfers); a load balancer is `new` for `load_balancer`. Nothing runs in the
background: each request first settles what is due by the clock, in order, so a restart
picks up where time has gone.

Effects, done when the action completes: creation lays out the droplet's root and starts its
listeners (Machines.create); shutdown and power_off stop them (halt), power_on starts them
(boot); snapshot copies the root into a new private image (type snapshot, min_disk_size = the
droplet's disk, size_gigabytes from the bytes copied, regions = the droplet's); transfer adds
a region to an image; rename and resize change the droplet (resize wants it off); assign and
unassign move a floating IP.

Addresses, for network number N (1-254; default 42; two clouds never share one): droplet k
has public 127.N.1.k and private 127.N.2.k, floating/reserved IPs are 127.N.3.k, load
balancers 127.N.4.k (k = 1..253, reused after a delete once the range wraps). Base images
(public, type base, fixed ids): debian-12-x64 150000001, ubuntu-22-04-x64 150000002,
ubuntu-24-04-x64 150000003, debian-9-x64 150000004, debian-11-x64 150000005. New ids
count up from: droplets 100000001, SSH keys 41000001, snapshots 170000001, actions 900000001.

State: `state_dir/state.json` (written atomically after every change) and
`state_dir/machines/` (Machines'); a restart restores droplets, images, keys, tags, load
balancers and IPs and boots the active droplets' listeners again. A server started by
`scaler local up` also writes `state_dir/server.json` (pid, port, network) and logs to
`state_dir/server.log`.

Control API under /_local/ (no auth, not rate-limited, not logged or counted), for tests,
benchmarks and subprocesses (LocalCloud has the same in Python):
  GET /_local/health            {"ok", "pid", "url", "network", "droplets", "images", ...}
  GET|DELETE /_local/requests   the request log, oldest first (the last 10,000):
                                {"requests": [{method, path, query, status, time, template,
                                duration}]}; DELETE empties it
  GET|DELETE /_local/counters   {"counters": {"GET /v2/droplets/{id}": n, ...}}; DELETE resets
                                (a template names its first path parameter {id})
  GET|PUT /_local/delays        {"delays": {...}}; PUT any subset of the Delays fields
  GET|POST|DELETE /_local/faults  list, add one, clear all. POST bodies, by "kind":
    {"kind": "fail", "method": "GET" or "*", "path": regex (full match, no query),
     "status": 500, "nth": 1, "times": 1, "message": opt., "retry_after": opt. seconds}
        the nth matching request from now fails with status, and the `times - 1` after it
    {"kind": "latency", "method": "*", "path": regex, "seconds": 0.5, "times": null}
        matching requests wait that long first (null: forever)
    {"kind": "error_action", "droplet_id": opt., "action_type": opt., "times": 1}
        the next matching droplet action (creation is type "create") ends errored, no effect
    {"kind": "stall", "droplet_id": id} or {"kind": "stall", "name": regex, "times": 1}
        that droplet (still new), or the next created droplets whose name matches, stay new
    {"kind": "drop", "method": "POST", "path": regex, "seconds": 0, "times": 1}
        the request is carried out, then its answer is lost: after `seconds` the connection
        closes with no response (a dropped connection, or a stall past the client's timeout)
  POST /_local/reset            forget every resource, fault, log entry and counter
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic
from scaler.local.droplets import DropletKind, RealMachines
from scaler.local.droplets import unavailable as real_droplets_unavailable
from scaler.local.images import REAL_IMAGES
from scaler.local.machines import MachineError, Machines
from scaler.local.netclaim import DEFAULT_NETWORK, NetworkClaim, claim_network

JSON = dict[str, Any]

TOKEN = "scaler-local-token"
"""The token env() hands out; the local cloud accepts any non-empty one."""

DEFAULT_PORT = 8642
DEFAULT_STATE_DIR = Path(".scaler/local")
DROPLET_LIMIT = 100
HOURLY_LIMIT = 5000
LOG_LIMIT = 10_000

_EPOCH_ISO = "2024-01-02T03:04:05Z"


class LocalCloudError(ScalerError):
    """The local cloud cannot start, stop or be reached."""


@dataclass(frozen=True)
class Delays:
    """How long things take in the local cloud, in seconds."""

    droplet_boot: float = 2.0
    action: float = 1.0
    snapshot: float = 2.0
    transfer: float = 1.0
    load_balancer: float = 1.0

    @classmethod
    def uniform(cls, seconds: float) -> Delays:
        """Every delay the same (tests use a small one)."""
        return cls(*(seconds for _ in fields(cls)))


@dataclass(frozen=True)
class RequestRecord:
    """One /v2 request as the local cloud answered it."""

    method: str
    path: str
    query: str
    status: int
    time: float
    template: str
    duration: float


@dataclass(frozen=True)
class ServerInfo:
    """A local cloud server process started by `scaler local up`."""

    pid: int
    port: int
    network: int
    state_dir: Path
    web_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that points DigitalOcean clients at this server."""
        return _env(self.url, self.web_port)


def _env(url: str, web_port: int) -> dict[str, str]:
    return {
        "DIGITALOCEAN_TOKEN": TOKEN,
        "DIGITALOCEAN_ACCESS_TOKEN": TOKEN,
        "DIGITALOCEAN_END_POINT": f"{url}/v2/",
        "DIGITALOCEAN_API_URL": url,
        "SCALER_LOCAL_URL": url,
        # Where a droplet's port 80 is served (80 as root, else 8080): health checks dial it.
        "SCALER_LOCAL_WEB_PORT": str(web_port),
    }


class ApiError(Exception):
    """An error answer: HTTP status, DigitalOcean error id, message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_id = error_id or _ERROR_IDS.get(status, "error")
        self.headers = headers or {}


_ERROR_IDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
}
_DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    401: "Unable to authenticate you",
    403: "You do not have access for the attempted action.",
    404: "The resource you were accessing could not be found.",
    429: "API Rate limit exceeded.",
    500: "Server was unable to give you a response.",
    503: "Service is temporarily unavailable.",
}


def _not_found() -> ApiError:
    return ApiError(404, _DEFAULT_MESSAGES[404])


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message)


# --- the catalogue: regions, sizes, base images --------------------------------------------------

_REGIONS: dict[str, str] = {
    "nyc1": "New York 1",
    "nyc3": "New York 3",
    "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3",
    "ams3": "Amsterdam 3",
    "sgp1": "Singapore 1",
    "lon1": "London 1",
    "fra1": "Frankfurt 1",
    "tor1": "Toronto 1",
    "blr1": "Bangalore 1",
    "syd1": "Sydney 1",
}
_REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
DEFAULT_REGION = "nyc3"

# slug -> memory MB, vcpus, disk GB, transfer TB, price monthly, description
_SIZES: dict[str, tuple[int, int, int, float, float, str]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
    "512mb": (512, 1, 20, 1.0, 5.0, "Legacy Basic"),
    "1gb": (1024, 1, 30, 2.0, 10.0, "Legacy Basic"),
    "2gb": (2048, 2, 40, 3.0, 20.0, "Legacy Basic"),
}

# slug -> id, name, distribution, min_disk_size, size_gigabytes
_BASE_IMAGES: dict[str, tuple[int, str, str, int, float]] = {
    "debian-12-x64": (150000001, "12 x64", "Debian", 10, 1.12),
    "ubuntu-22-04-x64": (150000002, "22.04 (LTS) x64", "Ubuntu", 10, 2.28),
    "ubuntu-24-04-x64": (150000003, "24.04 (LTS) x64", "Ubuntu", 10, 2.44),
    # The tutorial's variables.json builds from debian-9-x64; it gets the same small tree.
    "debian-9-x64": (150000004, "9 x64", "Debian", 10, 1.0),
    "debian-11-x64": (150000005, "11 x64", "Debian", 10, 1.1),
}

_NAME_RE = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
_TAG_RE = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
_DROPLET_ACTIONS = {
    "shutdown",
    "power_off",
    "power_on",
    "reboot",
    "power_cycle",
    "snapshot",
    "rename",
    "resize",
    "enable_backups",
    "disable_backups",
    "enable_ipv6",
    "password_reset",
}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _region_json(slug: str) -> JSON:
    return {
        "name": _REGIONS.get(slug, slug),
        "slug": slug,
        "features": list(_REGION_FEATURES),
        "available": True,
        "sizes": list(_SIZES),
    }


def _size_json(slug: str) -> JSON:
    memory, vcpus, disk, transfer, monthly, description = _SIZES[slug]
    return {
        "slug": slug,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": transfer,
        "price_monthly": monthly,
        "price_hourly": round(monthly / 672, 5),
        "regions": list(_REGIONS),
        "available": True,
        "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }


def _vpc_uuid(region: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scaler-local-vpc-{region}"))


def fingerprint(public_key: str) -> str:
    """The MD5 fingerprint DigitalOcean shows for an OpenSSH public key (aa:bb:...)."""
    parts = public_key.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key")
    blob = base64.b64decode(parts[1], validate=True)
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _unprocessable(f"{what} must be an integer, got {value!r}") from None


# --- faults --------------------------------------------------------------------------------------


@dataclass
class _Fault:
    kind: str
    method: str = "*"
    path: str = ""
    status: int = 500
    nth: int = 1
    times: int | None = 1
    message: str | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    droplet_id: int | None = None
    action_type: str | None = None
    name: str | None = None
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.fullmatch(self.path, path) is not None

    def describe(self) -> JSON:
        keep = {
            "fail": ("method", "path", "status", "nth", "times", "message", "retry_after", "seen"),
            "latency": ("method", "path", "seconds", "times"),
            "error_action": ("droplet_id", "action_type", "times"),
            "stall": ("droplet_id", "name", "times"),
            "drop": ("method", "path", "seconds", "times"),
        }[self.kind]
        return {"kind": self.kind, **{k: getattr(self, k) for k in keep}}


class Faults:
    """Fault injection for tests and chaos runs (also reachable as /_local/faults)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._stalled: set[int] = set()

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        nth: int = 1,
        times: int = 1,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Fail `times` requests from the nth one from now whose method and path (regex) match."""
        re.compile(path)
        if nth < 1 or times < 1 or not 400 <= status <= 599:
            raise ValueError("nth and times must be >= 1 and status an HTTP error (400-599)")
        fault = _Fault("fail", method.upper(), path, status, nth, times, message, retry_after)
        self._add(fault)

    def latency(self, method: str, path: str, seconds: float, *, times: int | None = None) -> None:
        """Delay matching requests by `seconds` (every one, or the next `times`)."""
        re.compile(path)
        self._add(_Fault("latency", method.upper(), path, seconds=seconds, times=times))

    def error_action(
        self, *, droplet_id: int | None = None, action_type: str | None = None, times: int = 1
    ) -> None:
        """End the next droplet action(s) matching droplet and/or type as `errored`."""
        self._add(
            _Fault("error_action", droplet_id=droplet_id, action_type=action_type, times=times)
        )

    def stall(
        self, *, droplet_id: int | None = None, name: str | None = None, times: int = 1
    ) -> None:
        """Keep a droplet `new` forever: one by id, or the next created ones by name regex."""
        if (droplet_id is None) == (name is None):
            raise ValueError("stall needs exactly one of droplet_id or name")
        if droplet_id is not None:
            with self._lock:
                self._stalled.add(droplet_id)
            return
        assert name is not None
        re.compile(name)
        self._add(_Fault("stall", name=name, times=times))

    def drop(self, method: str, path: str, seconds: float = 0.0, *, times: int = 1) -> None:
        """Carry out the next `times` matching requests, then close without an answer."""
        re.compile(path)
        if times < 1 or seconds < 0:
            raise ValueError("times must be >= 1 and seconds >= 0")
        self._add(_Fault("drop", method.upper(), path, seconds=seconds, times=times))

    def dropped(self, method: str, path: str) -> float | None:
        """Seconds to wait before closing without an answer, or None to answer."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == "drop" and fault.matches(method, path):
                    self._take(fault)
                    return fault.seconds
        return None

    def clear(self) -> None:
        """Remove every fault (stalled droplets stay as they are)."""
        with self._lock:
            self._faults.clear()

    def describe(self) -> list[JSON]:
        """The faults still armed, as JSON."""
        with self._lock:
            return [f.describe() for f in self._faults]

    def add_json(self, spec: JSON) -> None:
        """Add a fault from its /_local/faults JSON form."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        adders: dict[str, Callable[..., None]] = {
            "fail": self.fail,
            "latency": self.latency,
            "error_action": self.error_action,
            "stall": self.stall,
            "drop": self.drop,
        }
        if kind not in adders:
            raise ValueError(f"unknown fault kind {kind!r} (have: {', '.join(adders)})")
        if kind == "drop":
            spec.setdefault("method", "*")
            adders[kind](**spec)
        elif kind in ("fail", "latency"):
            args = [spec.pop("method", "*"), spec.pop("path")]
            args.append(spec.pop("status") if kind == "fail" else float(spec.pop("seconds")))
            adders[kind](*args, **spec)
        else:
            adders[kind](**spec)

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, fault: _Fault) -> None:
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)

    def failure(self, method: str, path: str) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind != "fail" or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen < fault.nth:
                    continue
                self._take(fault)
                headers = {}
                if fault.status == 429 or fault.retry_after is not None:
                    headers["retry-after"] = str(fault.retry_after or 1)
                message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "Injected failure.")
                return ApiError(fault.status, message, headers=headers)
        return None

    def delay(self, method: str, path: str) -> float:
        total = 0.0
        with self._lock:
            for fault in list(self._faults):
                if fault.kind == "latency" and fault.matches(method, path):
                    total += fault.seconds
                    self._take(fault)
        return total

    def action_errors(self, droplet_id: int, action_type: str) -> bool:
        with self._lock:
            for fault in self._faults:
                if fault.kind != "error_action":
                    continue
                if fault.droplet_id not in (None, droplet_id):
                    continue
                if fault.action_type not in (None, action_type):
                    continue
                self._take(fault)
                return True
        return False

    def stalls(self, droplet_id: int, name: str) -> bool:
        with self._lock:
            if droplet_id in self._stalled:
                return True
            for fault in self._faults:
                if fault.kind == "stall" and fault.name is not None and re.search(fault.name, name):
                    self._take(fault)
                    self._stalled.add(droplet_id)
                    return True
        return False

    def is_stalled(self, droplet_id: int) -> bool:
        with self._lock:
            return droplet_id in self._stalled


# --- requests and routing ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    body: Any
    params: dict[str, str]
    base: str


Handler = Callable[["LocalCloud", _Request], tuple[int, JSON | None]]


@dataclass(frozen=True)
class Route:
    """One API operation: its method, the spec's path template, and the counter's template."""

    method: str
    spec_path: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler


ROUTES: list[Route] = []


def _route(method: str, spec_path: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", spec_path)
        template = re.sub(r"\{\w+\}", "{id}", spec_path, count=1)
        ROUTES.append(Route(method, spec_path, template, re.compile(regex), handler))
        return handler

    return register


def _match(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """The route for a request, its path parameters, and whether another method has the path."""
    other = False
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is None:
            continue
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}, False
        other = True
    return None, {}, other


def _paginate(req: _Request, key: str, items: list[JSON], extra: JSON | None = None) -> JSON:
    try:
        per_page = min(max(int(req.query.get("per_page", 20)), 1), 200)
        page = max(int(req.query.get("page", 1)), 1)
    except ValueError:
        raise ApiError(400, "page and per_page must be positive integers") from None
    total = len(items)
    last = max(math.ceil(total / per_page), 1)
    body: JSON = {key: items[(page - 1) * per_page : page * per_page]}
    if extra:
        body.update(extra)

    def link(number: int) -> str:
        query = {k: v for k, v in req.query.items() if k not in ("page", "per_page")}
        query.update(page=str(number), per_page=str(per_page))
        return f"{req.base}{req.path}?{urllib.parse.urlencode(query)}"

    pages: dict[str, str] = {}
    if page > 1:
        pages.update(first=link(1), prev=link(min(page - 1, last)))
    if page < last:
        pages.update(next=link(page + 1), last=link(last))
    body["links"] = {"pages": pages} if pages else {}
    body["meta"] = {"total": total}
    return body


# --- the cloud -----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cloud: LocalCloud) -> None:
        self.cloud = cloud
        super().__init__(address, _HTTPHandler)


class _HTTPHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "scaler-local-cloud"
    # Headers and body go out in two writes: with Nagle on, a kept-alive client (requests,
    # python-digitalocean) waits for a delayed ACK, about 40 ms per call.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.server.cloud._handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log (and verbose mode) report traffic


class LocalCloud:
    """A DigitalOcean API v2 stand-in on 127.0.0.1, its state in state_dir (see the module doc)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 0,
        network: int | None = None,
        delays: Delays | None = None,
        rate_limit_per_minute: int = 250,
        web_port: int | None = None,
        verbose: bool = False,
        droplets: DropletKind = "directory",
    ) -> None:
        if network is not None and not 1 <= network <= 254:
            raise LocalCloudError(f"network must be 1-254 (droplets get 127.N.1.k), got {network}")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # No number given: the one this state folder used last, if free, else any free one.
        self._claim: NetworkClaim | None = claim_network(network, prefer=self._last_network())
        self.network = self._claim.number
        write_atomic(self.state_dir / "network", f"{self.network}\n")
        self.rate_limit_per_minute = rate_limit_per_minute
        self.verbose = verbose
        self.faults = Faults()
        self._delays = delays or Delays()
        self._port = port
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=LOG_LIMIT)
        self._counters: collections.Counter[str] = collections.Counter()
        self._minute: dict[str, collections.deque[float]] = {}
        self._hour: dict[str, collections.deque[float]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dirty = False
        self.machines: Machines | RealMachines
        self.droplets_note = ""
        if droplets == "auto":
            why = real_droplets_unavailable()
            droplets = "directory" if why else "real"
            self.droplets_note = why or ""
        elif droplets == "real" and (why := real_droplets_unavailable()):
            raise LocalCloudError(f"{why}; or start the local cloud with directory droplets")
        if droplets == "real":
            self.machines = RealMachines(self.state_dir, self.network, warn=self._warn)
        else:
            self.machines = Machines(self.state_dir, web_port=web_port)
        self._state = self._load()

    # -- lifecycle

    def _last_network(self) -> int | None:
        try:
            number = int((self.state_dir / "network").read_text().strip())
        except (OSError, ValueError):
            return None
        return number if 1 <= number <= 254 else None

    def start(self) -> None:
        """Serve HTTP on 127.0.0.1:port in a thread, and boot the active droplets' listeners."""
        if self._server is not None:
            return
        if self._claim is None:
            self._claim = claim_network(self.network)
        try:
            self._server = _Server(("127.0.0.1", self._port), self)
        except OSError as err:
            raise LocalCloudError(
                f"cannot listen on 127.0.0.1:{self._port} ({err.strerror}); "
                "pick another port with --port"
            ) from err
        self._port = self._server.server_address[1]
        try:
            self.machines.prepare()
        except ScalerError:
            self._server.server_close()
            self._server = None
            raise
        with self._lock:
            self._advance()
            for droplet in self._state["droplets"].values():
                if droplet["status"] == "active" and droplet["machine"]:
                    try:
                        self.machines.boot(droplet["id"])
                    except (MachineError, OSError) as err:
                        self._warn(f"droplet {droplet['id']} did not boot: {err}")
            self._save()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="local-cloud",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop HTTP and every droplet listener; the state stays on disk."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            self._save()
        self.machines.close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (Packer's api_url, the provider's DIGITALOCEAN_API_URL)."""
        if self._port == 0:
            raise LocalCloudError("the local cloud has no port yet; start() it first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT/v2/ (python-digitalocean's DIGITALOCEAN_END_POINT)."""
        return f"{self.url}/v2/"

    def env(self) -> dict[str, str]:
        """The variables DigitalOcean clients read: token, end point, API URL, SCALER_LOCAL_*."""
        return _env(self.url, self.machines.web_port())

    # -- control (Python side of /_local/)

    @property
    def delays(self) -> Delays:
        return self._delays

    @delays.setter
    def delays(self, value: Delays) -> None:
        self._delays = value

    def requests(self) -> list[RequestRecord]:
        """The request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def counters(self) -> dict[str, int]:
        """Requests per endpoint, e.g. {"GET /v2/droplets/{id}": 3}."""
        with self._log_lock:
            return dict(self._counters)

    def reset_log(self) -> None:
        """Empty the request log and the counters."""
        with self._log_lock:
            self._log.clear()
            self._counters.clear()

    def reset(self) -> None:
        """Forget every resource, fault, log entry and counter (removing roots and images)."""
        with self._lock:
            for droplet_id in list(self._state["droplets"]):
                self.machines.destroy(droplet_id)
            for image_id in list(self._state["images"]):
                self.machines.delete_image(image_id)
            self._state = _empty_state()
            self.faults = Faults()
            self._minute.clear()
            self._hour.clear()
            self._save()
        self.reset_log()

    def settle(self) -> None:
        """Apply whatever is due by now (requests do this themselves)."""
        with self._lock:
            self._advance()
            self._save_if_dirty()

    def summary(self) -> JSON:
        """Counts of what the cloud holds."""
        with self._lock:
            s = self._state
            return {
                "droplets": len(s["droplets"]),
                "images": len(s["images"]),
                "ssh_keys": len(s["keys"]),
                "load_balancers": len(s["lbs"]),
                "floating_ips": len(s["ips"]),
                "tags": len(s["tags"]),
            }

    # -- persistence

    def _load(self) -> JSON:
        path = self.state_dir / "state.json"
        if not path.is_file():
            return _empty_state()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LocalCloudError(
                f"cannot read {path} ({err}); move it away to start afresh"
            ) from err
        state = _empty_state()
        state["next"].update(raw.get("next", {}))
        for key, id_key in (
            ("droplets", "id"),
            ("actions", "id"),
            ("images", "id"),
            ("keys", "id"),
        ):
            state[key] = {int(o[id_key]): o for o in raw.get(key, [])}
        state["lbs"] = {o["id"]: o for o in raw.get("lbs", [])}
        state["ips"] = {o["ip"]: o for o in raw.get("ips", [])}
        state["tags"] = {o["name"]: o for o in raw.get("tags", [])}
        return state

    def _save(self) -> None:
        s = self._state
        raw = {"version": 1, "next": s["next"]}
        for key in ("droplets", "actions", "images", "keys", "lbs", "ips", "tags"):
            raw[key] = list(s[key].values())
        write_atomic(
            self.state_dir / "state.json", json.dumps(raw, indent=1, sort_keys=True) + "\n"
        )
        self._dirty = False

    def _save_if_dirty(self) -> None:
        if self._dirty:
            self._save()

    def _next(self, kind: str) -> int:
        value = int(self._state["next"][kind])
        self._state["next"][kind] = value + 1
        return value

    def _address(self, kind: str, octet: int, used: set[str]) -> tuple[int, str]:
        start = int(self._state["next"][kind])
        for step in range(1, 254):
            k = (start + step - 1) % 253 + 1
            ip = f"127.{self.network}.{octet}.{k}"
            if ip not in used:
                self._state["next"][kind] = k
                return k, ip
        raise _unprocessable(
            "The local cloud has no free addresses left in that range (253 at most)."
        )

    def _warn(self, message: str) -> None:
        print(f"scaler local: {message}", file=sys.stderr, flush=True)

    # -- HTTP

    def _handle(self, h: _HTTPHandler) -> None:
        started = time.time()
        split = urllib.parse.urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        method = h.command
        try:
            raw = _read_body(h)
        except (ValueError, OSError):
            raw = b""
        if path.startswith("/_local"):
            status, payload, headers = self._control(method, path, raw)
            _respond(h, status, payload, headers)
            return
        route, params, other = _match(method, path)
        template = route.template if route else path
        token = _bearer(h.headers.get("Authorization", ""))
        status, payload, headers = self._api(
            method, path, split.query, raw, route, params, other, token, h
        )
        # Logged before the answer goes out: a client that has its answer sees it in the log.
        record = RequestRecord(
            method,
            path,
            split.query,
            status,
            started,
            f"{method} {template}",
            time.time() - started,
        )
        with self._log_lock:
            self._log.append(record)
            self._counters[record.template] += 1
        lost = self.faults.dropped(method, path)
        if lost is not None:
            # done, but the client never hears: the case a create call must survive
            time.sleep(lost)
            h.close_connection = True
            return
        _respond(h, status, None if method == "HEAD" else payload, headers)
        if self.verbose:
            query = f"?{split.query}" if split.query else ""
            print(f"{method} {path}{query} -> {status}", file=sys.stderr, flush=True)

    def _api(
        self,
        method: str,
        path: str,
        raw_query: str,
        raw: bytes,
        route: Route | None,
        params: dict[str, str],
        other: bool,
        token: str,
        h: _HTTPHandler,
    ) -> tuple[int, JSON | None, dict[str, str]]:
        headers: dict[str, str] = {}
        try:
            if not token:
                reset = str(int(time.time()) + 3600)
                headers.update({"ratelimit-limit": str(HOURLY_LIMIT), "ratelimit-reset": reset})
                headers["ratelimit-remaining"] = str(HOURLY_LIMIT)
                raise ApiError(401, _DEFAULT_MESSAGES[401])
            headers.update(self._rate_limit(token))
            pause = self.faults.delay(method, path)
            if pause > 0:
                time.sleep(pause)
            injected = self.faults.failure(method, path)
            if injected is not None:
                raise injected
            if route is None:
                if other:
                    raise ApiError(405, f"Method {method} is not allowed on {path}.")
                raise _not_found()
            body = _parse_body(raw) if method in ("POST", "PUT", "PATCH", "DELETE") else {}
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query).items()}
            host = h.headers.get("Host") or f"127.0.0.1:{self._port}"
            req = _Request(method, path, query, raw_query, body, params, f"http://{host}")
            with self._lock:
                self._advance()
                try:
                    status, payload = route.handler(self, req)
                finally:
                    self._save_if_dirty()
            return status, payload, headers
        except ApiError as err:
            headers.update(err.headers)
            error = {"id": err.error_id, "message": err.message, "request_id": str(uuid.uuid4())}
            return err.status, error, headers

    def _rate_limit(self, token: str) -> dict[str, str]:
        now = time.time()
        with self._log_lock:
            minute = self._minute.setdefault(token, collections.deque())
            hour = self._hour.setdefault(token, collections.deque())
            while minute and minute[0] <= now - 60:
                minute.popleft()
            while hour and hour[0] <= now - 3600:
                hour.popleft()
            reset = int(hour[0] + 3600) if hour else int(now + 3600)
            headers = {
                "ratelimit-limit": str(HOURLY_LIMIT),
                "ratelimit-remaining": str(max(HOURLY_LIMIT - len(hour), 0)),
                "ratelimit-reset": str(reset),
            }
            if len(minute) >= self.rate_limit_per_minute or len(hour) >= HOURLY_LIMIT:
                window = minute if len(minute) >= self.rate_limit_per_minute else hour
                span = 60 if window is minute else 3600
                wait = max(math.ceil(window[0] + span - now), 1)
                raise ApiError(
                    429, _DEFAULT_MESSAGES[429], headers={**headers, "retry-after": str(wait)}
                )
            minute.append(now)
            hour.append(now)
            headers["ratelimit-remaining"] = str(max(HOURLY_LIMIT - len(hour), 0))
            return headers

    def _control(
        self, method: str, path: str, raw: bytes
    ) -> tuple[int, JSON | None, dict[str, str]]:
        try:
            body = _parse_body(raw)
            if path == "/_local/health" and method == "GET":
                status = {"ok": True, "pid": os.getpid(), "url": self.url, "network": self.network}
                status["state_dir"] = str(self.state_dir.resolve())
                status["web_port"] = self.machines.web_port()
                status["ssh_port"] = self.machines.ssh_port()
                status["droplet_kind"] = self.machines.kind
                if self.machines.kind == "real":
                    status["real_images"] = list(REAL_IMAGES)
                if self.droplets_note:
                    status["droplet_kind_note"] = self.droplets_note
                status["rate_limit_per_minute"] = self.rate_limit_per_minute
                return 200, status | self.summary(), {}
            if path == "/_local/requests" and method in ("GET", "DELETE"):
                if method == "DELETE":
                    with self._log_lock:
                        self._log.clear()
                    return 204, None, {}
                return 200, {"requests": [asdict(r) for r in self.requests()]}, {}
            if path == "/_local/counters" and method in ("GET", "DELETE"):
                if method == "DELETE":
                    with self._log_lock:
                        self._counters.clear()
                    return 204, None, {}
                return 200, {"counters": self.counters()}, {}
            if path == "/_local/delays" and method in ("GET", "PUT", "PATCH"):
                if method != "GET":
                    known = {f.name for f in fields(Delays)}
                    unknown = set(body) - known
                    if unknown:
                        raise ApiError(
                            422, f"unknown delays {sorted(unknown)} (have: {sorted(known)})"
                        )
                    self.delays = replace(self.delays, **{k: float(v) for k, v in body.items()})
                return 200, {"delays": asdict(self.delays)}, {}
            if path == "/_local/faults" and method in ("GET", "POST", "DELETE"):
                if method == "POST":
                    try:
                        self.faults.add_json(body)
                    except (KeyError, TypeError, ValueError, re.error) as err:
                        raise ApiError(422, f"bad fault {body!r}: {err}") from err
                elif method == "DELETE":
                    self.faults.clear()
                    return 204, None, {}
                return 200, {"faults": self.faults.describe()}, {}
            if path == "/_local/reset" and method == "POST":
                self.reset()
                return 204, None, {}
            raise _not_found()
        except ApiError as err:
            return err.status, {"id": err.error_id, "message": err.message}, {}

    # -- time

    def _advance(self) -> None:
        """Complete every action whose time has come, in order, with its effects."""
        now = time.time()
        due = [
            a
            for a in self._state["actions"].values()
            if a["status"] == "in-progress" and a["done_at"] is not None and a["done_at"] <= now
        ]
        for action in sorted(due, key=lambda a: (a["done_at"], a["id"])):
            if action["type"] == "create" and self.faults.is_stalled(action["resource_id"]):
                continue  # a stalled droplet stays new, its creation in progress, until reset
            ok = action["outcome"] == "completed"
            if ok:
                try:
                    ok = self._effect(action)
                except (MachineError, OSError) as err:
                    self._warn(f"action {action['id']} ({action['type']}) errored: {err}")
                    ok = False
            action["status"] = "completed" if ok else "errored"
            action["completed_at"] = _iso(action["done_at"])
            self._dirty = True

    def _start_action(
        self,
        kind: str,
        resource_type: str,
        resource_id: int,
        region: str,
        delay: float,
        **params: Any,
    ) -> JSON:
        now = time.time()
        action_id = self._next("action")
        outcome = "completed"
        done_at: float | None = now + delay
        if resource_type == "droplet":
            droplet = self._state["droplets"].get(resource_id)
            if self.faults.action_errors(resource_id, kind):
                outcome = "errored"
            elif (
                kind == "create"
                and droplet is not None
                and self.faults.stalls(resource_id, droplet["name"])
            ):
                done_at = None
        action = {
            "id": action_id,
            "type": kind,
            "status": "in-progress",
            "resource_type": resource_type,
            "resource_id": resource_id,
            "region": region,
            "started_at": _iso(now),
            "completed_at": None,
            "done_at": done_at,
            "outcome": outcome,
            "params": params,
        }
        self._state["actions"][action_id] = action
        self._dirty = True
        return action

    def _pending(self, resource_type: str, resource_id: int) -> bool:
        return any(
            a["status"] == "in-progress"
            and a["resource_type"] == resource_type
            and a["resource_id"] == resource_id
            for a in self._state["actions"].values()
        )

    def _effect(self, action: JSON) -> bool:
        kind, params = action["type"], action["params"]
        if action["resource_type"] == "image":
            held = self._state["images"].get(action["resource_id"])
            if held is None:
                return False
            if kind == "transfer" and params["to_region"] not in held["regions"]:
                held["regions"].append(params["to_region"])
            return True
        if action["resource_type"] in ("floating_ip", "reserved_ip"):
            ip = self._state["ips"].get(params["ip"])
            if ip is None:
                return False
            target = params.get("droplet_id")
            if kind == "assign" and target not in self._state["droplets"]:
                return False
            ip["droplet_id"] = target if kind == "assign" else None
            return True
        droplet = self._state["droplets"].get(action["resource_id"])
        if droplet is None:
            return False
        did = droplet["id"]
        if kind == "create":
            image: str | int = droplet["image"]["slug"] or droplet["image"]["id"]
            self.machines.create(
                did,
                droplet["public_ip"],
                droplet["private_ip"],
                image,
                droplet["keys"],
                droplet["user_data"],
                hostname=droplet["name"],
            )
            droplet["machine"] = True
            droplet["status"] = "active"
        elif kind in ("shutdown", "power_off"):
            self.machines.halt(did)
            droplet["status"] = "off"
        elif kind == "power_on":
            self.machines.boot(did)
            droplet["status"] = "active"
        elif kind in ("reboot", "power_cycle"):
            self.machines.halt(did)
            self.machines.boot(did)
            droplet["status"] = "active"
        elif kind == "snapshot":
            self._snapshot(droplet, params.get("name"))
        elif kind == "rename":
            droplet["name"] = params["name"]
        elif kind == "resize":
            droplet["size"] = params["size"]
        elif kind in ("enable_backups", "enable_ipv6"):
            feature = {"enable_backups": "backups", "enable_ipv6": "ipv6"}[kind]
            if feature not in droplet["features"]:
                droplet["features"].append(feature)
        elif kind == "disable_backups" and "backups" in droplet["features"]:
            droplet["features"].remove("backups")
        return True

    def _snapshot(self, droplet: JSON, name: str | None) -> None:
        image_id = self._next("image")
        size = self.machines.snapshot(droplet["id"], image_id)
        now = time.time()
        self._state["images"][image_id] = {
            "id": image_id,
            "name": name or f"{droplet['name']}-{int(now)}",
            "distribution": droplet["image"]["distribution"],
            "regions": [droplet["region"]],
            "created_at": _iso(now),
            "min_disk_size": _SIZES[droplet["size"]][2],
            "size_gigabytes": max(round(size / 1024**3, 2), 0.01),
            "description": "",
            "tags": [],
            "droplet_id": droplet["id"],
        }
        droplet["snapshot_ids"].append(image_id)

    # -- rendering

    def _image_json(self, image: JSON) -> JSON:
        return {
            "id": image["id"],
            "name": image["name"],
            "distribution": image["distribution"],
            "slug": None,
            "public": False,
            "regions": list(image["regions"]),
            "created_at": image["created_at"],
            "min_disk_size": image["min_disk_size"],
            "type": "snapshot",
            "size_gigabytes": image["size_gigabytes"],
            "description": image["description"],
            "tags": list(image["tags"]),
            "status": "available",
            "error_message": "",
        }

    def _droplet_json(self, d: JSON) -> JSON:
        memory, vcpus, disk = _SIZES[d["size"]][:3]
        image_now = self._state["images"].get(d["image"]["id"])
        image = self._image_json(image_now) if image_now else dict(d["image"])
        locked = any(
            a["status"] == "in-progress"
            and a["resource_type"] == "droplet"
            and a["resource_id"] == d["id"]
            and a["type"] != "create"
            for a in self._state["actions"].values()
        )
        net = self.network
        return {
            "id": d["id"],
            "name": d["name"],
            "memory": memory,
            "vcpus": vcpus,
            "disk": disk,
            "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
            "locked": locked,
            "status": d["status"],
            "kernel": None,
            "created_at": d["created_at"],
            "features": list(d["features"]),
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": list(d["snapshot_ids"]),
            "image": image,
            "volume_ids": [],
            "size": _size_json(d["size"]),
            "size_slug": d["size"],
            "networks": {
                "v4": [
                    {
                        "ip_address": d["public_ip"],
                        "netmask": "255.255.255.0",
                        "gateway": f"127.{net}.1.254",
                        "type": "public",
                    },
                    {
                        "ip_address": d["private_ip"],
                        "netmask": "255.255.255.0",
                        "gateway": f"127.{net}.2.254",
                        "type": "private",
                    },
                ],
                "v6": [],
            },
            "region": _region_json(d["region"]),
            "tags": list(d["tags"]),
            "vpc_uuid": d["vpc_uuid"],
        }

    def _action_json(self, a: JSON) -> JSON:
        return {
            "id": a["id"],
            "status": a["status"],
            "type": a["type"],
            "started_at": a["started_at"],
            "completed_at": a["completed_at"],
            "resource_id": a["resource_id"],
            "resource_type": a["resource_type"],
            "region": _region_json(a["region"]),
            "region_slug": a["region"],
        }

    def _ip_json(self, ip: JSON, kind: str) -> JSON:
        droplet = self._state["droplets"].get(ip["droplet_id"]) if ip["droplet_id"] else None
        return {
            "ip": ip["ip"],
            "region": _region_json(ip["region"]),
            "droplet": self._droplet_json(droplet) if droplet else None,
            "locked": self._pending(kind, _ip_int(ip["ip"])),
            "project_id": _project_id(),
        }

    def _lb_json(self, lb: JSON) -> JSON:
        if lb["tag"]:
            droplet_ids = sorted(
                i for i, d in self._state["droplets"].items() if lb["tag"] in d["tags"]
            )
        else:
            droplet_ids = [i for i in lb["droplet_ids"] if i in self._state["droplets"]]
        status = "active" if time.time() >= lb["active_at"] else "new"
        return {
            "id": lb["id"],
            "name": lb["name"],
            "project_id": _project_id(),
            "ip": lb["ip"],
            "size_unit": 1,
            "size": lb["size"],
            "algorithm": lb["algorithm"],
            "status": status,
            "created_at": lb["created_at"],
            "forwarding_rules": [dict(r) for r in lb["forwarding_rules"]],
            "health_check": dict(lb["health_check"]),
            "sticky_sessions": dict(lb["sticky_sessions"]),
            "redirect_http_to_https": lb["redirect_http_to_https"],
            "enable_proxy_protocol": lb["enable_proxy_protocol"],
            "enable_backend_keepalive": lb["enable_backend_keepalive"],
            "http_idle_timeout_seconds": 60,
            "vpc_uuid": lb["vpc_uuid"],
            "disable_lets_encrypt_dns_records": False,
            "network": "EXTERNAL",
            "network_stack": "IPV4",
            "type": "REGIONAL",
            "region": _region_json(lb["region"]),
            "droplet_ids": droplet_ids,
            "tag": lb["tag"] or "",
        }

    def _tag_json(self, name: str) -> JSON:
        droplets = [d for d in self._state["droplets"].values() if name in d["tags"]]
        images = [i for i in self._state["images"].values() if name in i["tags"]]
        base = f"/v2/droplets/{droplets[-1]['id']}" if droplets else ""
        return {
            "name": name,
            "resources": {
                "count": len(droplets) + len(images),
                "last_tagged_uri": base,
                "droplets": {"count": len(droplets), "last_tagged_uri": base},
                "images": {"count": len(images)},
                "volumes": {"count": 0},
                "volume_snapshots": {"count": 0},
                "databases": {"count": 0},
            },
        }

    # -- lookups

    def _droplet(self, value: str) -> JSON:
        droplet: JSON | None = self._state["droplets"].get(_maybe_int(value))
        if droplet is None:
            raise _not_found()
        return droplet

    def _any_image(self, value: Any) -> JSON:
        """An image as JSON, by id or slug (base or snapshot)."""
        key = _maybe_int(value)
        for slug in _BASE_IMAGES:
            if key in (slug, _BASE_IMAGES[slug][0]):
                return _base_image_json(slug)
        image = self._state["images"].get(key)
        if image is None:
            raise _not_found()
        return self._image_json(image)

    def _private_image(self, value: str) -> JSON:
        image: JSON | None = self._state["images"].get(_maybe_int(value))
        if image is None:
            raise _not_found()
        return image

    def _key(self, value: str) -> JSON:
        ident = _maybe_int(value)
        key: JSON
        for key in self._state["keys"].values():
            if ident in (key["id"], key["fingerprint"]):
                return key
        raise _not_found()

    def _ip(self, value: str) -> JSON:
        ip: JSON | None = self._state["ips"].get(value)
        if ip is None:
            raise _not_found()
        return ip

    def _lb(self, value: str) -> JSON:
        lb: JSON | None = self._state["lbs"].get(value)
        if lb is None:
            raise _not_found()
        return lb

    def _ensure_tag(self, name: Any) -> None:
        if not isinstance(name, str) or not _TAG_RE.fullmatch(name):
            raise _unprocessable(
                f"Tag name {name!r} is invalid: use at most 255 letters, digits, '_', '-' and ':'."
            )
        if name not in self._state["tags"]:
            self._state["tags"][name] = {"name": name, "created_at": _iso(time.time())}
            self._dirty = True


# --- handlers ------------------------------------------------------------------------------------


@_route("GET", "/v2/account")
def _account(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    account = {
        "droplet_limit": DROPLET_LIMIT,
        "floating_ip_limit": 25,
        "email": "scaler@localhost",
        "name": "scaler local cloud",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "scaler-local-account")),
        "email_verified": True,
        "status": "active",
        "status_message": "",
        "team": {"uuid": _project_id(), "name": "scaler local"},
    }
    return 200, {"account": account}


@_route("GET", "/v2/account/keys")
def _keys_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    keys = [_key_json(k) for k in cloud._state["keys"].values()]
    return 200, _paginate(req, "ssh_keys", keys)


@_route("POST", "/v2/account/keys")
def _keys_create(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    body = _object(req.body)
    name, public_key = body.get("name"), body.get("public_key")
    if not isinstance(name, str) or not name:
        raise _unprocessable("Name is required.")
    if not isinstance(public_key, str):
        raise _unprocessable("Public Key is required.")
    try:
        print_ = fingerprint(public_key)
    except (ValueError, binascii.Error):
        raise _unprocessable("Key invalid, type not supported") from None
    if any(k["fingerprint"] == print_ for k in cloud._state["keys"].values()):
        raise _unprocessable("SSH Key is already in use on your account")
    key_id = cloud._next("key")
    key = {"id": key_id, "name": name, "public_key": public_key.strip(), "fingerprint": print_}
    cloud._state["keys"][key_id] = key
    cloud._dirty = True
    return 201, {"ssh_key": _key_json(key)}


@_route("GET", "/v2/account/keys/{ssh_key_identifier}")
def _keys_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"ssh_key": _key_json(cloud._key(req.params["ssh_key_identifier"]))}


@_route("PUT", "/v2/account/keys/{ssh_key_identifier}")
def _keys_update(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    key = cloud._key(req.params["ssh_key_identifier"])
    name = _object(req.body).get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise _unprocessable("Name must be a non-empty string.")
        key["name"] = name
        cloud._dirty = True
    return 200, {"ssh_key": _key_json(key)}


@_route("DELETE", "/v2/account/keys/{ssh_key_identifier}")
def _keys_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    key = cloud._key(req.params["ssh_key_identifier"])
    del cloud._state["keys"][key["id"]]
    cloud._dirty = True
    return 204, None


@_route("GET", "/v2/actions")
def _actions_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    actions = [cloud._action_json(a) for a in cloud._state["actions"].values()]
    return 200, _paginate(req, "actions", actions)


@_route("GET", "/v2/actions/{action_id}")
def _actions_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"action": cloud._action_json(_action(cloud, req.params["action_id"]))}


@_route("GET", "/v2/droplets")
def _droplets_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    tag, name = req.query.get("tag_name"), req.query.get("name")
    droplets = [
        cloud._droplet_json(d)
        for d in cloud._state["droplets"].values()
        if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)
    ]
    return 200, _paginate(req, "droplets", droplets)


@_route("POST", "/v2/droplets")
def _droplets_create(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    body = _object(req.body)
    many = "names" in body
    names = body.get("names") if many else [body.get("name")]
    if not isinstance(names, list) or not names or len(names) > 10:
        raise _unprocessable("names must be a list of 1 to 10 droplet names.")
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise _unprocessable(
                "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
            )
    if len(cloud._state["droplets"]) + len(names) > DROPLET_LIMIT:
        raise _unprocessable(
            f"creating this/these droplet(s) will exceed your droplet limit ({DROPLET_LIMIT})"
        )
    size = body.get("size")
    if size not in _SIZES:
        raise _unprocessable("You specified an invalid size for Droplet creation.")
    region = body.get("region") or DEFAULT_REGION
    if region not in _REGIONS:
        raise _unprocessable("You specified an invalid region for Droplet creation.")
    try:
        image = cloud._any_image(body.get("image"))
    except ApiError:
        raise _unprocessable("You specified an invalid image for Droplet creation.") from None
    if region not in image["regions"]:
        raise _unprocessable(f"The image {image['id']} is not available in region {region}.")
    if (image["min_disk_size"] or 0) > _SIZES[size][2]:
        raise _unprocessable(
            "The image you specified requires a larger disk than this size offers."
        )
    keys: list[str] = []
    for ident in body.get("ssh_keys") or []:
        try:
            keys.append(cloud._key(str(ident))["public_key"])
        except ApiError:
            raise _unprocessable(f"You specified an invalid SSH key: {ident}.") from None
    tags = body.get("tags") or []
    if not isinstance(tags, list):
        raise _unprocessable("tags must be a list of tag names.")
    for tag in tags:
        cloud._ensure_tag(tag)
    user_data = body.get("user_data")
    if user_data is not None and not isinstance(user_data, str):
        raise _unprocessable("user_data must be a string.")
    features = ["private_networking"]
    features += [f for f in ("backups", "ipv6", "monitoring") if body.get(f)]
    used = {d["public_ip"] for d in cloud._state["droplets"].values()}
    created, links = [], []
    for name in names:
        droplet_id = cloud._next("droplet")
        k, public_ip = cloud._address("droplet_addr", 1, used)
        used.add(public_ip)
        now = time.time()
        droplet = {
            "id": droplet_id,
            "name": name,
            "size": size,
            "region": region,
            "image": image,
            "status": "new",
            "created_at": _iso(now),
            "features": list(features),
            "snapshot_ids": [],
            "tags": list(dict.fromkeys(tags)),
            "vpc_uuid": body.get("vpc_uuid") or _vpc_uuid(region),
            "public_ip": public_ip,
            "private_ip": f"127.{cloud.network}.2.{k}",
            "keys": keys,
            "user_data": user_data,
            "machine": False,
        }
        cloud._state["droplets"][droplet_id] = droplet
        action = cloud._start_action(
            "create", "droplet", droplet_id, region, cloud.delays.droplet_boot
        )
        created.append(cloud._droplet_json(droplet))
        links.append(
            {"id": action["id"], "rel": "create", "href": f"{req.base}/v2/actions/{action['id']}"}
        )
    cloud._dirty = True
    if many:
        return 202, {"droplets": created, "links": {"actions": links}}
    return 202, {"droplet": created[0], "links": {"actions": links}}


@_route("DELETE", "/v2/droplets")
def _droplets_delete_by_tag(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    tag = req.query.get("tag_name")
    if not tag:
        raise _unprocessable("tag_name is required to delete droplets by tag.")
    for droplet in [d for d in cloud._state["droplets"].values() if tag in d["tags"]]:
        _destroy_droplet(cloud, droplet)
    return 204, None


@_route("GET", "/v2/droplets/{droplet_id}")
def _droplets_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"droplet": cloud._droplet_json(cloud._droplet(req.params["droplet_id"]))}


@_route("DELETE", "/v2/droplets/{droplet_id}")
def _droplets_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    _destroy_droplet(cloud, cloud._droplet(req.params["droplet_id"]))
    return 204, None


@_route("GET", "/v2/droplets/{droplet_id}/snapshots")
def _droplet_snapshots(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    droplet = cloud._droplet(req.params["droplet_id"])
    snapshots = []
    for image_id in droplet["snapshot_ids"]:
        image = cloud._state["images"].get(image_id)
        if image is not None:
            entry = {
                k: image[k] for k in ("id", "name", "created_at", "min_disk_size", "size_gigabytes")
            }
            snapshots.append(entry | {"regions": list(image["regions"]), "type": "snapshot"})
    return 200, _paginate(req, "snapshots", snapshots)


@_route("GET", "/v2/droplets/{droplet_id}/actions")
def _droplet_actions_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    droplet = cloud._droplet(req.params["droplet_id"])
    actions = [
        cloud._action_json(a)
        for a in cloud._state["actions"].values()
        if a["resource_type"] == "droplet" and a["resource_id"] == droplet["id"]
    ]
    return 200, _paginate(req, "actions", actions)


@_route("POST", "/v2/droplets/{droplet_id}/actions")
def _droplet_actions_post(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    droplet = cloud._droplet(req.params["droplet_id"])
    return 201, {"action": cloud._action_json(_droplet_action(cloud, droplet, _object(req.body)))}


@_route("POST", "/v2/droplets/actions")
def _droplet_actions_by_tag(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    tag = req.query.get("tag_name")
    if not tag:
        raise _unprocessable("tag_name is required for actions by tag.")
    body = _object(req.body)
    droplets = [d for d in cloud._state["droplets"].values() if tag in d["tags"]]
    for droplet in droplets:
        _check_action(cloud, droplet, body)
    actions = [cloud._action_json(_droplet_action(cloud, d, body)) for d in droplets]
    return 201, {"actions": actions}


@_route("GET", "/v2/droplets/{droplet_id}/actions/{action_id}")
def _droplet_actions_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    droplet = cloud._droplet(req.params["droplet_id"])
    action = _action(cloud, req.params["action_id"])
    if action["resource_type"] != "droplet" or action["resource_id"] != droplet["id"]:
        raise _not_found()
    return 200, {"action": cloud._action_json(action)}


@_route("GET", "/v2/images")
def _images_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    private = req.query.get("private", "").lower() == "true"
    kind = req.query.get("type")
    tag = req.query.get("tag_name")
    images: list[JSON] = []
    if not private and kind in (None, "distribution") and tag is None:
        images += [_base_image_json(slug) for slug in _BASE_IMAGES]
    if kind in (None, "snapshot"):
        images += [
            cloud._image_json(i)
            for i in cloud._state["images"].values()
            if tag is None or tag in i["tags"]
        ]
    return 200, _paginate(req, "images", images)


@_route("GET", "/v2/images/{image_id}")
def _images_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"image": cloud._any_image(req.params["image_id"])}


@_route("PUT", "/v2/images/{image_id}")
def _images_update(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    image = cloud._private_image(req.params["image_id"])
    body = _object(req.body)
    for field in ("name", "description", "distribution"):
        if field in body:
            if not isinstance(body[field], str):
                raise _unprocessable(f"{field} must be a string.")
            image[field] = body[field]
    cloud._dirty = True
    return 200, {"image": cloud._image_json(image)}


@_route("DELETE", "/v2/images/{image_id}")
def _images_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    _delete_image(cloud, cloud._private_image(req.params["image_id"]))
    return 204, None


@_route("GET", "/v2/images/{image_id}/actions")
def _image_actions_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    image = cloud._any_image(req.params["image_id"])
    actions = [
        cloud._action_json(a)
        for a in cloud._state["actions"].values()
        if a["resource_type"] == "image" and a["resource_id"] == image["id"]
    ]
    return 200, _paginate(req, "actions", actions)


@_route("POST", "/v2/images/{image_id}/actions")
def _image_actions_post(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    image = cloud._private_image(req.params["image_id"])
    body = _object(req.body)
    if body.get("type") != "transfer":
        raise _unprocessable("The local cloud supports the image action type 'transfer' only.")
    region = body.get("region")
    if region not in _REGIONS:
        raise _unprocessable(f"You specified an invalid region: {region!r}.")
    action = cloud._start_action(
        "transfer",
        "image",
        image["id"],
        image["regions"][0],
        cloud.delays.transfer,
        to_region=region,
    )
    return 201, {"action": cloud._action_json(action)}


@_route("GET", "/v2/images/{image_id}/actions/{action_id}")
def _image_actions_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    # By action id alone: Packer 1.6.6 asks for /images/<transfer action>/actions/<snapshot action>.
    return 200, {"action": cloud._action_json(_action(cloud, req.params["action_id"]))}


@_route("GET", "/v2/snapshots")
def _snapshots_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    kind = req.query.get("resource_type")
    snapshots = (
        [] if kind == "volume" else [_snapshot_json(i) for i in cloud._state["images"].values()]
    )
    return 200, _paginate(req, "snapshots", snapshots)


@_route("GET", "/v2/snapshots/{snapshot_id}")
def _snapshots_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"snapshot": _snapshot_json(cloud._private_image(req.params["snapshot_id"]))}


@_route("DELETE", "/v2/snapshots/{snapshot_id}")
def _snapshots_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    _delete_image(cloud, cloud._private_image(req.params["snapshot_id"]))
    return 204, None


@_route("GET", "/v2/regions")
def _regions(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, _paginate(req, "regions", [_region_json(slug) for slug in _REGIONS])


@_route("GET", "/v2/sizes")
def _sizes(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, _paginate(req, "sizes", [_size_json(slug) for slug in _SIZES])


@_route("GET", "/v2/tags")
def _tags_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, _paginate(req, "tags", [cloud._tag_json(n) for n in cloud._state["tags"]])


@_route("POST", "/v2/tags")
def _tags_create(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    name = _object(req.body).get("name")
    cloud._ensure_tag(name)
    return 201, {"tag": cloud._tag_json(str(name))}


@_route("GET", "/v2/tags/{tag_id}")
def _tags_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    name = req.params["tag_id"]
    if name not in cloud._state["tags"]:
        raise _not_found()
    return 200, {"tag": cloud._tag_json(name)}


@_route("DELETE", "/v2/tags/{tag_id}")
def _tags_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    name = req.params["tag_id"]
    if cloud._state["tags"].pop(name, None) is None:
        raise _not_found()
    for holder in [*cloud._state["droplets"].values(), *cloud._state["images"].values()]:
        if name in holder["tags"]:
            holder["tags"].remove(name)
    cloud._dirty = True
    return 204, None


@_route("POST", "/v2/tags/{tag_id}/resources")
def _tags_assign(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return _tag_resources(cloud, req, add=True)


@_route("DELETE", "/v2/tags/{tag_id}/resources")
def _tags_unassign(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return _tag_resources(cloud, req, add=False)


@_route("GET", "/v2/load_balancers")
def _lbs_list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, _paginate(
        req, "load_balancers", [cloud._lb_json(lb) for lb in cloud._state["lbs"].values()]
    )


@_route("POST", "/v2/load_balancers")
def _lbs_create(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    body = _object(req.body)
    region = body.get("region")
    if region not in _REGIONS:
        raise _unprocessable(f"You specified an invalid region: {region!r}.")
    used = {lb["ip"] for lb in cloud._state["lbs"].values()}
    _k, ip = cloud._address("lb_addr", 4, used)
    lb = {
        "id": str(uuid.uuid4()),
        "ip": ip,
        "region": region,
        "created_at": _iso(time.time()),
        "active_at": time.time() + cloud.delays.load_balancer,
        "vpc_uuid": body.get("vpc_uuid") or _vpc_uuid(region),
    }
    _lb_settings(cloud, lb, body, creating=True)
    cloud._state["lbs"][lb["id"]] = lb
    cloud._dirty = True
    return 202, {"load_balancer": cloud._lb_json(lb)}


@_route("GET", "/v2/load_balancers/{lb_id}")
def _lbs_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    return 200, {"load_balancer": cloud._lb_json(cloud._lb(req.params["lb_id"]))}


@_route("PUT", "/v2/load_balancers/{lb_id}")
def _lbs_update(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    lb = cloud._lb(req.params["lb_id"])
    body = _object(req.body)
    if body.get("region", lb["region"]) != lb["region"]:
        raise _unprocessable("A load balancer cannot change region.")
    _lb_settings(cloud, lb, body, creating=False)
    cloud._dirty = True
    return 200, {"load_balancer": cloud._lb_json(lb)}


@_route("DELETE", "/v2/load_balancers/{lb_id}")
def _lbs_delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    del cloud._state["lbs"][cloud._lb(req.params["lb_id"])["id"]]
    cloud._dirty = True
    return 204, None


@_route("POST", "/v2/load_balancers/{lb_id}/droplets")
def _lbs_add_droplets(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    lb = cloud._lb(req.params["lb_id"])
    if lb["tag"]:
        raise _unprocessable(
            "This load balancer selects droplets by tag; tag the droplets instead."
        )
    for droplet_id in _droplet_ids(cloud, _object(req.body).get("droplet_ids")):
        if droplet_id not in lb["droplet_ids"]:
            lb["droplet_ids"].append(droplet_id)
    cloud._dirty = True
    return 204, None


@_route("DELETE", "/v2/load_balancers/{lb_id}/droplets")
def _lbs_remove_droplets(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    lb = cloud._lb(req.params["lb_id"])
    if lb["tag"]:
        raise _unprocessable(
            "This load balancer selects droplets by tag; untag the droplets instead."
        )
    remove = set(_droplet_ids(cloud, _object(req.body).get("droplet_ids"), must_exist=False))
    lb["droplet_ids"] = [i for i in lb["droplet_ids"] if i not in remove]
    cloud._dirty = True
    return 204, None


@_route("POST", "/v2/load_balancers/{lb_id}/forwarding_rules")
def _lbs_add_rules(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    lb = cloud._lb(req.params["lb_id"])
    for rule in _rules(_object(req.body).get("forwarding_rules")):
        if rule not in lb["forwarding_rules"]:
            lb["forwarding_rules"].append(rule)
    cloud._dirty = True
    return 204, None


@_route("DELETE", "/v2/load_balancers/{lb_id}/forwarding_rules")
def _lbs_remove_rules(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
    lb = cloud._lb(req.params["lb_id"])
    remove = _rules(_object(req.body).get("forwarding_rules"))
    kept = [r for r in lb["forwarding_rules"] if r not in remove]
    if not kept:
        raise _unprocessable("A load balancer needs at least one forwarding rule.")
    lb["forwarding_rules"] = kept
    cloud._dirty = True
    return 204, None


def _ip_routes(kind: str) -> None:
    """The same handlers under /v2/floating_ips and /v2/reserved_ips (one pool of addresses)."""
    base, param = f"/v2/{kind}s", "{" + kind + "}"

    @_route("GET", base)
    def _list(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        ips = [cloud._ip_json(ip, kind) for ip in cloud._state["ips"].values()]
        return 200, _paginate(req, f"{kind}s", ips)

    @_route("POST", base)
    def _create(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        body = _object(req.body)
        droplet = None
        if body.get("droplet_id") is not None:
            droplet = cloud._state["droplets"].get(_int(body["droplet_id"], "droplet_id"))
            if droplet is None:
                raise _unprocessable(f"Droplet {body['droplet_id']} was not found.")
            region = droplet["region"]
        else:
            region = body.get("region")
            if region not in _REGIONS:
                raise _unprocessable(f"You specified an invalid region: {region!r}.")
        used = set(cloud._state["ips"])
        _k, address = cloud._address("ip_addr", 3, used)
        ip = {"ip": address, "region": region, "droplet_id": None}
        cloud._state["ips"][address] = ip
        cloud._dirty = True
        links: JSON = {}
        if droplet is not None:
            action = _ip_action(cloud, ip, kind, "assign", droplet["id"])
            links = {
                "droplets": [
                    {
                        "id": droplet["id"],
                        "rel": "droplet",
                        "href": f"{req.base}/v2/droplets/{droplet['id']}",
                    }
                ],
                "actions": [
                    {
                        "id": action["id"],
                        "rel": "assign_ip",
                        "href": f"{req.base}/v2/actions/{action['id']}",
                    }
                ],
            }
        return 202, {kind: cloud._ip_json(ip, kind), "links": links}

    @_route("GET", f"{base}/{param}")
    def _get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        return 200, {kind: cloud._ip_json(cloud._ip(req.params[kind]), kind)}

    @_route("DELETE", f"{base}/{param}")
    def _delete(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        del cloud._state["ips"][cloud._ip(req.params[kind])["ip"]]
        cloud._dirty = True
        return 204, None

    @_route("GET", f"{base}/{param}/actions")
    def _actions(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        number = _ip_int(cloud._ip(req.params[kind])["ip"])
        actions = [
            cloud._action_json(a)
            for a in cloud._state["actions"].values()
            if a["resource_type"] in ("floating_ip", "reserved_ip") and a["resource_id"] == number
        ]
        return 200, _paginate(req, "actions", actions)

    @_route("POST", f"{base}/{param}/actions")
    def _act(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        ip = cloud._ip(req.params[kind])
        body = _object(req.body)
        kind_of = body.get("type")
        if kind_of not in ("assign", "unassign"):
            raise _unprocessable("The action type must be 'assign' or 'unassign'.")
        if cloud._pending("floating_ip", _ip_int(ip["ip"])) or cloud._pending(
            "reserved_ip", _ip_int(ip["ip"])
        ):
            raise _unprocessable(f"The {kind.replace('_', ' ')} already has a pending event.")
        target = None
        if kind_of == "assign":
            target = _int(body.get("droplet_id"), "droplet_id")
            droplet = cloud._state["droplets"].get(target)
            if droplet is None:
                raise _unprocessable(f"Droplet {target} was not found.")
            if droplet["region"] != ip["region"]:
                raise _unprocessable(
                    f"The droplet is in {droplet['region']}, the IP in {ip['region']}: "
                    "they must match."
                )
        elif ip["droplet_id"] is None:
            raise _unprocessable(f"The {kind.replace('_', ' ')} is not assigned to a droplet.")
        action = _ip_action(cloud, ip, kind, kind_of, target)
        return 201, {"action": cloud._action_json(action) | {"project_id": _project_id()}}

    @_route("GET", f"{base}/{param}/actions/{{action_id}}")
    def _act_get(cloud: LocalCloud, req: _Request) -> tuple[int, JSON | None]:
        cloud._ip(req.params[kind])
        action = _action(cloud, req.params["action_id"])
        return 200, {"action": cloud._action_json(action) | {"project_id": _project_id()}}


_ip_routes("floating_ip")
_ip_routes("reserved_ip")


# --- handler helpers -----------------------------------------------------------------------------


def _object(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _maybe_int(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _project_id() -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "scaler-local-project"))


def _ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _key_json(key: JSON) -> JSON:
    return {k: key[k] for k in ("id", "fingerprint", "public_key", "name")}


def _base_image_json(slug: str) -> JSON:
    image_id, name, distribution, min_disk, size = _BASE_IMAGES[slug]
    return {
        "id": image_id,
        "name": name,
        "distribution": distribution,
        "slug": slug,
        "public": True,
        "regions": list(_REGIONS),
        "created_at": _EPOCH_ISO,
        "min_disk_size": min_disk,
        "type": "base",
        "size_gigabytes": size,
        "description": f"{distribution} {name}",
        "tags": [],
        "status": "available",
        "error_message": "",
    }


def _snapshot_json(image: JSON) -> JSON:
    return {
        "id": str(image["id"]),
        "name": image["name"],
        "created_at": image["created_at"],
        "regions": list(image["regions"]),
        "min_disk_size": image["min_disk_size"],
        "size_gigabytes": image["size_gigabytes"],
        "resource_id": str(image["droplet_id"]),
        "resource_type": "droplet",
        "tags": list(image["tags"]),
    }


def _action(cloud: LocalCloud, value: str) -> JSON:
    action: JSON | None = cloud._state["actions"].get(_maybe_int(value))
    if action is None:
        raise _not_found()
    return action


def _check_action(cloud: LocalCloud, droplet: JSON, body: JSON) -> str:
    kind = body.get("type")
    if kind not in _DROPLET_ACTIONS:
        raise _unprocessable(
            f"The local cloud does not support the droplet action {kind!r} "
            f"(have: {', '.join(sorted(_DROPLET_ACTIONS))})."
        )
    if cloud._pending("droplet", droplet["id"]):
        raise _unprocessable("Droplet already has a pending event.")
    if kind == "rename" and (
        not isinstance(body.get("name"), str) or not _NAME_RE.fullmatch(body["name"])
    ):
        raise _unprocessable(
            "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
        )
    if kind == "resize":
        size = body.get("size")
        if size not in _SIZES:
            raise _unprocessable("You specified an invalid size for Droplet resize.")
        if droplet["status"] != "off":
            raise _unprocessable("Droplet must be powered off before it can be resized.")
        if _SIZES[size][2] < _SIZES[droplet["size"]][2]:
            raise _unprocessable("This size is not available because it has a smaller disk.")
    return str(kind)


def _droplet_action(cloud: LocalCloud, droplet: JSON, body: JSON) -> JSON:
    kind = _check_action(cloud, droplet, body)
    delay = cloud.delays.snapshot if kind == "snapshot" else cloud.delays.action
    params = {k: body[k] for k in ("name", "size") if k in body}
    return cloud._start_action(kind, "droplet", droplet["id"], droplet["region"], delay, **params)


def _destroy_droplet(cloud: LocalCloud, droplet: JSON) -> None:
    did = droplet["id"]
    cloud.machines.destroy(did)
    del cloud._state["droplets"][did]
    for ip in cloud._state["ips"].values():
        if ip["droplet_id"] == did:
            ip["droplet_id"] = None
    for lb in cloud._state["lbs"].values():
        if did in lb["droplet_ids"]:
            lb["droplet_ids"].remove(did)
    cloud._dirty = True


def _delete_image(cloud: LocalCloud, image: JSON) -> None:
    cloud.machines.delete_image(image["id"])
    del cloud._state["images"][image["id"]]
    for droplet in cloud._state["droplets"].values():
        if image["id"] in droplet["snapshot_ids"]:
            droplet["snapshot_ids"].remove(image["id"])
    cloud._dirty = True


def _tag_resources(cloud: LocalCloud, req: _Request, *, add: bool) -> tuple[int, JSON | None]:
    name = req.params["tag_id"]
    if name not in cloud._state["tags"]:
        raise _not_found()
    resources = _object(req.body).get("resources")
    if not isinstance(resources, list) or not resources:
        raise _unprocessable("resources must be a non-empty list of {resource_id, resource_type}.")
    holders = []
    for res in resources:
        kind = res.get("resource_type") if isinstance(res, dict) else None
        ident = _maybe_int(str(res.get("resource_id"))) if isinstance(res, dict) else None
        table = {"droplet": "droplets", "image": "images"}.get(str(kind))
        if table is None:
            raise _unprocessable(f"The local cloud tags droplets and images, not {kind!r}.")
        holder = cloud._state[table].get(ident)
        if holder is None:
            raise _unprocessable(f"The {kind} {ident} was not found.")
        holders.append(holder)
    for holder in holders:
        if add and name not in holder["tags"]:
            holder["tags"].append(name)
        elif not add and name in holder["tags"]:
            holder["tags"].remove(name)
    cloud._dirty = True
    return 204, None


def _droplet_ids(cloud: LocalCloud, value: Any, *, must_exist: bool = True) -> list[int]:
    if not isinstance(value, list):
        raise _unprocessable("droplet_ids must be a list of droplet ids.")
    ids = [_int(v, "droplet_ids") for v in value]
    missing = [i for i in ids if i not in cloud._state["droplets"]]
    if must_exist and missing:
        raise _unprocessable(f"Droplets not found: {', '.join(map(str, missing))}.")
    return ids


_RULE_DEFAULTS: JSON = {"certificate_id": "", "tls_passthrough": False}


def _rules(value: Any) -> list[JSON]:
    if not isinstance(value, list) or not value:
        raise _unprocessable("forwarding_rules must list at least one rule.")
    rules = []
    for rule in value:
        if not isinstance(rule, dict):
            raise _unprocessable("Each forwarding rule must be an object.")
        try:
            clean = {
                "entry_protocol": str(rule["entry_protocol"]),
                "entry_port": int(rule["entry_port"]),
                "target_protocol": str(rule["target_protocol"]),
                "target_port": int(rule["target_port"]),
                "certificate_id": str(rule.get("certificate_id") or ""),
                "tls_passthrough": bool(rule.get("tls_passthrough", False)),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise _unprocessable(f"Forwarding rule {rule!r} is invalid ({err}).") from None
        if clean["entry_protocol"] not in ("http", "https", "http2", "http3", "tcp", "udp"):
            raise _unprocessable(f"Invalid entry_protocol {clean['entry_protocol']!r}.")
        if clean["target_protocol"] not in ("http", "https", "http2", "tcp", "udp"):
            raise _unprocessable(f"Invalid target_protocol {clean['target_protocol']!r}.")
        rules.append(clean)
    return rules


_HEALTH_DEFAULTS: JSON = {
    "protocol": "http",
    "port": 80,
    "path": "/",
    "check_interval_seconds": 10,
    "response_timeout_seconds": 5,
    "unhealthy_threshold": 3,
    "healthy_threshold": 5,
}


def _lb_settings(cloud: LocalCloud, lb: JSON, body: JSON, *, creating: bool) -> None:
    """Apply a load balancer create or update (PUT replaces the settings it is given)."""
    name = body.get("name", lb.get("name"))
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _unprocessable("Load balancer name must be a valid hostname.")
    if body.get("droplet_ids") and body.get("tag"):
        raise _unprocessable("Specify either droplet_ids or tag, not both.")
    rules = _rules(body.get("forwarding_rules"))
    health = dict(_HEALTH_DEFAULTS)
    health.update(
        {k: v for k, v in (body.get("health_check") or {}).items() if k in _HEALTH_DEFAULTS}
    )
    if health["protocol"] not in ("http", "https", "tcp"):
        raise _unprocessable(f"Invalid health check protocol {health['protocol']!r}.")
    if health["protocol"] == "tcp":
        health["path"] = ""
    sticky: JSON = {"type": "none"}
    given = body.get("sticky_sessions") or {}
    if given.get("type") == "cookies":
        sticky = {
            "type": "cookies",
            "cookie_name": given.get("cookie_name") or "DO-LB",
            "cookie_ttl_seconds": int(given.get("cookie_ttl_seconds") or 300),
        }
    tag = body.get("tag") or None
    if tag is not None:
        cloud._ensure_tag(tag)
    size = body.get("size") or lb.get("size") or "lb-small"
    if size not in ("lb-small", "lb-medium", "lb-large"):
        raise _unprocessable(f"Invalid load balancer size {size!r}.")
    algorithm = body.get("algorithm") or lb.get("algorithm") or "round_robin"
    if algorithm not in ("round_robin", "least_connections"):
        raise _unprocessable(f"Invalid algorithm {algorithm!r}.")
    lb.update(
        name=name,
        size=size,
        algorithm=algorithm,
        forwarding_rules=rules,
        health_check=health,
        sticky_sessions=sticky,
        tag=tag,
        droplet_ids=[] if tag else _droplet_ids(cloud, body.get("droplet_ids") or []),
        redirect_http_to_https=bool(body.get("redirect_http_to_https", False)),
        enable_proxy_protocol=bool(body.get("enable_proxy_protocol", False)),
        enable_backend_keepalive=bool(body.get("enable_backend_keepalive", False)),
    )
    if not creating and body.get("vpc_uuid"):
        lb["vpc_uuid"] = body["vpc_uuid"]


def _ip_action(cloud: LocalCloud, ip: JSON, kind: str, action: str, droplet_id: int | None) -> JSON:
    return cloud._start_action(
        action,
        kind,
        _ip_int(ip["ip"]),
        ip["region"],
        cloud.delays.action,
        ip=ip["ip"],
        droplet_id=droplet_id,
    )


# --- HTTP helpers --------------------------------------------------------------------------------


def _bearer(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length > 0 else b""


def _parse_body(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text or text == "null":
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"The request body is not valid JSON ({err.msg}).") from None


def _respond(
    h: BaseHTTPRequestHandler, status: int, payload: JSON | None, headers: dict[str, str]
) -> None:
    data = b"" if payload is None or status == 204 else json.dumps(payload).encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        if data:
            h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away; nothing to tell it


def _empty_state() -> JSON:
    return {
        "next": {
            "droplet": 100000001,
            "action": 900000001,
            "image": 170000001,
            "key": 41000001,
            "droplet_addr": 0,
            "ip_addr": 0,
            "lb_addr": 0,
        },
        "droplets": {},
        "actions": {},
        "images": {},
        "keys": {},
        "lbs": {},
        "ips": {},
        "tags": {},
    }


# --- the server process (`scaler local up/down/status`) ------------------------------------------


def _server_file(state_dir: Path) -> Path:
    return Path(state_dir) / "server.json"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child that ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _health(url: str, timeout: float = 2.0) -> JSON | None:
    try:
        with urllib.request.urlopen(f"{url}/_local/health", timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


def running(state_dir: Path) -> ServerInfo | None:
    """The server that `scaler local up` started for state_dir, when it still answers."""
    path = _server_file(state_dir)
    try:
        raw = json.loads(path.read_text())
        info = ServerInfo(
            int(raw["pid"]),
            int(raw["port"]),
            int(raw["network"]),
            Path(state_dir),
            int(raw.get("web_port", 80)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(info.pid):
        path.unlink(missing_ok=True)  # left by a server that died without cleaning up
        return None
    health = _health(info.url)
    return info if health is not None and health.get("pid") == info.pid else None


def serve(
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    network: int = DEFAULT_NETWORK,
    verbose: bool = True,
    ready: Callable[[ServerInfo], None] | None = None,
    delays: Delays | None = None,
    rate_limit_per_minute: int = 250,
    droplets: DropletKind = "auto",
) -> None:
    """Run a local cloud in this process until SIGTERM or Ctrl-C (`up --foreground`)."""
    state_dir = Path(state_dir)
    cloud = LocalCloud(
        state_dir,
        port=port,
        network=network,
        verbose=verbose,
        delays=delays,
        rate_limit_per_minute=rate_limit_per_minute,
        droplets=droplets,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    cloud.start()
    info = ServerInfo(os.getpid(), cloud.port, network, state_dir, cloud.machines.web_port())
    try:
        payload = {"pid": info.pid, "port": info.port, "network": network, "url": info.url}
        payload["web_port"] = info.web_port
        write_atomic(_server_file(state_dir), json.dumps(payload) + "\n")
        if ready is not None:
            ready(info)
        while not stop.wait(0.5):
            pass
    finally:
        cloud.stop()
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(_server_file(state_dir).read_text())["pid"] == info.pid:
                _server_file(state_dir).unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    network: int = DEFAULT_NETWORK,
    timeout: float = 30.0,
    delay: float | None = None,
    rate_limit_per_minute: int = 250,
    droplets: DropletKind = "auto",
) -> tuple[ServerInfo, bool]:
    """Start a background server for state_dir unless one runs; returns it, and if it ran."""
    state_dir = Path(state_dir)
    found = running(state_dir)
    if found is not None:
        return found, True
    state_dir.mkdir(parents=True, exist_ok=True)
    _server_file(state_dir).unlink(missing_ok=True)
    log = state_dir / "server.log"
    argv = [sys.executable, "-m", "scaler.local.api", "--state-dir", str(state_dir)]
    argv += ["--port", str(port), "--network", str(network)]
    argv += ["--rate-limit", str(rate_limit_per_minute), "--droplets", droplets]
    if delay is not None:
        argv += ["--delay", str(delay)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            tail = [line.removeprefix("Error: ") for line in tail]
            raise LocalCloudError(
                f"the local cloud did not start "
                f"({tail[0] if tail else f'exit {proc.returncode}'}); see {log}"
            )
        info = running(state_dir)
        if info is not None and info.pid == proc.pid:
            return info, False
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    raise LocalCloudError(f"the local cloud did not answer within {timeout:.0f} s; see {log}")


def shutdown(state_dir: Path, *, timeout: float = 30.0) -> ServerInfo | None:
    """Stop the background server of state_dir; None when none was running."""
    info = running(Path(state_dir))
    if info is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return info


def health(state_dir: Path) -> JSON | None:
    """What the running server of state_dir reports about itself, or None."""
    info = running(Path(state_dir))
    return _health(info.url) if info is not None else None


def iter_env_lines(env: dict[str, str]) -> Iterator[str]:
    """`export K=V` lines for a shell's eval."""
    import shlex

    for key, value in env.items():
        yield f"export {key}={shlex.quote(value)}"


def _main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scaler.local.api", description="Run a local cloud."
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--network", type=int, default=DEFAULT_NETWORK)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--delay", type=float, default=None, help="every delay, in seconds")
    parser.add_argument("--rate-limit", type=int, default=250, help="requests a minute per token")
    parser.add_argument("--droplets", choices=["auto", "real", "directory"], default="auto")
    args = parser.parse_args()
    try:
        serve(
            args.state_dir,
            port=args.port,
            network=args.network,
            verbose=not args.quiet,
            delays=None if args.delay is None else Delays.uniform(args.delay),
            rate_limit_per_minute=args.rate_limit,
            droplets=args.droplets,
        )
    except ScalerError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _main()
