"""DigitalOcean API client: the one module that imports python-digitalocean.

It retries what the API asks to be retried: 429 (sleeping `retry-after`, else until
`ratelimit-reset`), 5xx and dropped connections (exponential backoff) and 422 "pending event"
(an action still running on the droplet). Polls are paced (see Pacing) so a bake stays far
under the 250 requests/minute budget. The token is never logged or put in messages.

Why python-digitalocean's resource classes (Droplet, Image, SSHKey, Action, Manager, ...) are
not used: every call they make goes through `BaseAPI.get_data`, which turns a failure into an
exception without its status (so 429, 5xx, 422 "pending event", 401 and 404 cannot be told
apart and nothing can be retried), drops the response headers (retry-after, ratelimit-reset,
ratelimit-remaining), follows pagination itself and sends its own paths (`droplets/`,
`images/<id>/`) and query (`per_page`), so our retry, lag and lost-answer handling and every
message naming `METHOD /v2/path` would change. What fits is its request layer (URL joining,
the bearer token, the user agent, the timeout hook), reached in one place, `_Transport.send`,
through the request method `get_data` itself uses, which returns the raw response.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests
from digitalocean.baseapi import BaseAPI

from scaler.errors import ScalerError
from scaler.events import Say

JSON = dict[str, Any]
Method = Literal["GET", "POST", "PUT", "DELETE"]
T = TypeVar("T")

DEFAULT_ENDPOINT = "https://api.digitalocean.com/v2/"
# Packer's digitalocean builder's order
TOKEN_ENV = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_API_TOKEN")
_REQUEST_TIMEOUT = 30.0
_MESSAGE_LIMIT = 200


class CloudError(ScalerError):
    """The DigitalOcean API refused or failed a request (after retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(CloudError):
    """The resource does not exist (404)."""


class ActionErrored(CloudError):
    """A DigitalOcean action ended with status errored."""


class LostAnswer(CloudError):
    """A POST whose answer never came (dropped connection, timeout): it may have been done."""


class WaitTimeout(CloudError):
    """Something did not happen within its timeout."""


class Cancelled(CloudError):
    """A wait was cancelled (another step failed or the bake was interrupted)."""


class NoToken(ScalerError):
    def __init__(self) -> None:
        super().__init__(
            "no DigitalOcean API token; set DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN), "
            "the template's api_token (do_api_token in the var file), or log in with "
            "`doctl auth init`"
        )


@dataclass(frozen=True)
class Pacing:
    """How the client waits: `steady_polls` polls poll_min apart, then intervals growing by
    `growth` up to poll_max seconds.

    The defaults look every second for the first ten seconds (most actions end by then, and a
    late look costs the whole interval) and then every 1.5, 2.25 and 3 s, Packer's steady
    interval: one wait is at most 60 requests a minute, far under the API's 250.
    """

    poll_min: float = 1.0
    poll_max: float = 3.0
    growth: float = 1.5
    steady_polls: int = 10
    retries: int = 6
    backoff: float = 1.0
    backoff_max: float = 30.0
    pending_event_retries: int = 30
    # one request's wait for an answer; a create that outlives it is looked up by name
    request_timeout: float = _REQUEST_TIMEOUT

    @classmethod
    def fast(cls, seconds: float = 0.05) -> Pacing:
        """Short polls and backoffs (the local cloud in tests)."""
        return cls(
            poll_min=seconds,
            poll_max=seconds * 4,
            steady_polls=0,
            backoff=seconds,
            backoff_max=1.0,
        )


@dataclass(frozen=True)
class Droplet:
    """A droplet as the API reports it."""

    id: int
    name: str
    status: str
    region: str
    public_ip: str | None
    private_ip: str | None
    snapshot_ids: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    created_at: str = ""


@dataclass(frozen=True)
class Key:
    """An SSH key registered with the account."""

    id: int
    name: str
    fingerprint: str


@dataclass(frozen=True)
class Image:
    """A private image (snapshot)."""

    id: int
    name: str
    regions: tuple[str, ...]
    created_at: str = ""
    min_disk_size: int = 0  # GB: a droplet made from it needs a disk at least this large
    status: str = "available"


@dataclass(frozen=True)
class Action:
    """A DigitalOcean action (droplet or image)."""

    id: int
    type: str
    status: str
    resource_id: int | None = None


@dataclass(frozen=True)
class DropletSpec:
    """What to create: the fields of POST /v2/droplets the bake uses."""

    name: str
    region: str
    size: str
    image: str | int
    ssh_keys: tuple[int | str, ...] = ()
    private_networking: bool = False
    monitoring: bool = False
    ipv6: bool = False
    vpc_uuid: str | None = None
    tags: tuple[str, ...] = ()
    user_data: str | None = None
    droplet_agent: bool | None = None

    def body(self) -> JSON:
        """The request body."""
        body: JSON = {
            "name": self.name,
            "region": self.region,
            "size": self.size,
            "image": self.image,
            "ssh_keys": list(self.ssh_keys),
            "backups": False,
            "ipv6": self.ipv6,
            "private_networking": self.private_networking,
            "monitoring": self.monitoring,
            "tags": list(self.tags),
        }
        if self.vpc_uuid:
            body["vpc_uuid"] = self.vpc_uuid
        if self.user_data is not None:
            body["user_data"] = self.user_data
        if self.droplet_agent is not None:
            body["with_droplet_agent"] = self.droplet_agent
        return body


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The API token from DIGITALOCEAN_TOKEN or DIGITALOCEAN_ACCESS_TOKEN, if set."""
    env = os.environ if environ is None else environ
    for name in TOKEN_ENV:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def doctl_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """doctl's config file: $XDG_CONFIG_HOME/doctl/config.yaml (~/.config by default)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return Path(base).expanduser() / "doctl" / "config.yaml"


def token_from_doctl(
    context: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token of doctl's current context (or `context`) from its config file, if any."""
    path = doctl_config_path(environ)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if context:
            raise ScalerError(
                f"--context {context}: no doctl config at {path}; run `doctl auth init "
                f"--context {context}` or leave out --context"
            ) from None
        return None
    except OSError as err:
        raise ScalerError(f"cannot read {path}: {err.strerror}") from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise ScalerError(f"{path} is not YAML; fix it or run `doctl auth init`") from None
    if not isinstance(data, dict):
        raise ScalerError(f"{path} is not a doctl config; fix it or run `doctl auth init`")
    name = context or str(data.get("context") or "default")
    if name == "default":
        token = data.get("access-token")
    else:
        contexts = data.get("auth-contexts") or {}
        if not isinstance(contexts, dict) or name not in contexts:
            have = ", ".join(["default", *sorted(map(str, contexts or {}))])
            raise ScalerError(f"no doctl context {name!r} in {path} (have: {have})")
        token = contexts[name]
    text = str(token or "").strip()
    return text or None


def resolve_token(
    template_token: str | None = None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The token as Packer finds it (the template's api_token, then DIGITALOCEAN_TOKEN,
    DIGITALOCEAN_ACCESS_TOKEN, DIGITALOCEAN_API_TOKEN), then doctl's config (its current
    context, or `context`); NoToken if none. Like doctl, the environment wins over contexts."""
    token = (template_token or "").strip() or token_from_env(environ)
    if token:
        return token
    token = token_from_doctl(context, environ)
    if not token:
        if context:
            raise ScalerError(
                f"doctl context {context!r} has no access token; run `doctl auth init "
                f"--context {context}`"
            )
        raise NoToken()
    return token


def endpoint_from(api_url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The /v2/ end point: api_url (Packer's), DIGITALOCEAN_END_POINT, DIGITALOCEAN_API_URL."""
    env = os.environ if environ is None else environ
    if api_url:
        return _as_endpoint(api_url)
    if env.get("DIGITALOCEAN_END_POINT"):
        return _as_endpoint(env["DIGITALOCEAN_END_POINT"])
    if env.get("DIGITALOCEAN_API_URL"):
        return _as_endpoint(env["DIGITALOCEAN_API_URL"])
    return DEFAULT_ENDPOINT


def _as_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    return url + "/" if url.endswith("/v2") else url + "/v2/"


class _Transport(BaseAPI):  # type: ignore[misc]
    """python-digitalocean's request layer, keeping the raw response (status and headers)."""

    request_timeout = _REQUEST_TIMEOUT

    def get_timeout(self) -> float:
        return self.request_timeout

    def send(self, method: Method, path: str, params: JSON | None) -> requests.Response:
        """The raw response (status and headers kept) of one request: see the module doc."""
        response: requests.Response = self._BaseAPI__perform_request(path, method, params or {})
        return response


class Cloud:
    """A small DigitalOcean client: the calls a bake makes, with retries and paced polling."""

    def __init__(
        self,
        token: str,
        endpoint: str | None = None,
        *,
        pacing: Pacing | None = None,
        on_progress: Say | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not token:
            raise NoToken()
        self.endpoint = _as_endpoint(endpoint) if endpoint else endpoint_from()
        self.pacing = pacing or Pacing()
        self.on_progress = on_progress
        self._cancelled = threading.Event()
        self._sleep = sleep or self._wait
        self._local = threading.local()
        self._token = token
        self.requests_made = 0

    def _transport(self) -> _Transport:
        # requests.Session is not thread-safe: one transport per thread (transfers run in parallel)
        transport: _Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = _Transport(token=self._token, end_point=self.endpoint)
            transport.request_timeout = self.pacing.request_timeout
            self._local.transport = transport
        return transport

    def _wait(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise Cancelled("cancelled")

    def cancel(self) -> None:
        """Make every wait in progress (other threads too) raise Cancelled."""
        self._cancelled.set()

    def reset_cancel(self) -> None:
        """Allow waiting again (the cleanup after a cancel waits too)."""
        self._cancelled.clear()

    def _say(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    # -- requests

    def request(self, method: Method, path: str, body: JSON | None = None) -> JSON:
        """One API call with retries; returns the JSON body ({} for 204)."""
        response = self._send(method, path, body)
        status = response.status_code
        if status == 204 or not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise CloudError(
                f"{method} /v2/{path}: the API answered {status} with no JSON"
            ) from None
        return data if isinstance(data, dict) else {}

    def remaining_requests(self) -> int | None:
        """What the API's ratelimit-remaining says is left of the token's budget, read from one
        GET /v2/account; None when the API does not say (or says something unreadable)."""
        value = self._send("GET", "account", None).headers.get("ratelimit-remaining")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def _send(self, method: Method, path: str, body: JSON | None) -> requests.Response:
        """One API call with retries: the first answer under 400, else the CloudError."""
        p = self.pacing
        attempt = pending = 0
        what = f"{method} /v2/{path}"
        while True:
            try:
                self.requests_made += 1
                response = self._transport().send(method, path, body)
            except requests.RequestException as err:
                # a POST may have been applied before the connection broke: never repeat it
                if method == "POST":
                    raise LostAnswer(
                        f"{what} got no answer ({type(err).__name__}); it may have been done"
                    ) from None
                if attempt >= p.retries:
                    raise CloudError(
                        f"{what} failed: {type(err).__name__}; check the API URL and network"
                    ) from None
                attempt += 1
                self._sleep(min(p.backoff * 2 ** (attempt - 1), p.backoff_max))
                continue
            status = response.status_code
            if status < 400:
                return response
            message = _error_message(response)
            if status == 429 and attempt < p.retries:
                attempt += 1
                wait = _retry_after(response)
                self._say(f"rate limited on {what}; retrying in {wait:.1f}s")
                self._sleep(wait)
                continue
            if status >= 500 and attempt < p.retries:
                attempt += 1
                wait = min(p.backoff * 2 ** (attempt - 1), p.backoff_max)
                self._say(f"{what} -> {status}; retrying in {wait:.1f}s")
                self._sleep(wait)
                continue
            pending_event = status == 422 and "pending event" in message.lower()
            if pending_event and pending < p.pending_event_retries:
                pending += 1
                self._sleep(min(p.poll_min * pending, p.poll_max))
                continue
            if status == 404:
                raise NotFound(f"{what}: not found (404)", status)
            if status == 401:
                raise CloudError(
                    f"{what}: the API token was refused (401); check DIGITALOCEAN_TOKEN", status
                )
            raise CloudError(f"{what} failed ({status}): {message}", status)

    # -- load balancers

    def lb_droplet_health(self, lb_id: str) -> dict[int, bool] | None:
        """The balancer's own view of its droplets (droplet id -> passing its checks now), from
        the monitoring endpoint droplets_health_checks; None where the API does not offer it
        (404, or 403 for a token without monitoring:read)."""
        now = int(time.time())
        path = (
            "monitoring/metrics/load_balancer/droplets_health_checks"
            f"?lb_id={lb_id}&start={now - 300}&end={now}"
        )
        try:
            data = self.request("GET", path)
        except NotFound:
            return None
        except CloudError as err:
            if err.status == 403:
                return None
            raise
        seen: dict[int, bool] = {}
        for series in (data.get("data") or {}).get("result") or ():
            labels = series.get("metric") or {}
            values: list[Any] = list(series.get("values") or [])
            with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
                seen[int(labels["droplet_id"])] = float(values[-1][1]) >= 1
        return seen

    # -- keys

    def create_key(self, name: str, public_key: str) -> Key:
        """Register an SSH public key; after a lost answer, the key is looked up by its name
        (make it unique: it is the only way to tell whether the API created it)."""
        try:
            data = self.request("POST", "account/keys", {"name": name, "public_key": public_key})
        except LostAnswer as err:
            found = self._look_again(lambda: [k for k in self.ssh_keys() if k.name == name])
            if len(found) == 1:
                self._say(f"{err}: found key {found[0].id} by its name {name}")
                return found[0]
            raise CloudError(
                f"{err}; no key named {name} exists, so none was created"
                if not found
                else f"{err}; {len(found)} keys are named {name}"
            ) from None
        return _key(data["ssh_key"])

    def ssh_keys(self) -> list[Key]:
        """The account's SSH keys (every page)."""
        return [_key(k) for k in self._pages("account/keys", "ssh_keys")]

    def delete_key(self, key_id: int) -> None:
        """Delete an SSH key; gone already is fine."""
        self._delete(f"account/keys/{key_id}")

    # -- droplets

    def create_droplet(self, spec: DropletSpec, run_tag: str | None = None) -> Droplet:
        """Create one droplet (it starts `new`); after a lost answer it is looked up by
        `run_tag` (a tag of spec.tags no other droplet carries) before deciding."""
        try:
            data = self.request("POST", "droplets", spec.body())
        except LostAnswer as err:
            if run_tag is None:
                raise
            tag = run_tag
            found = self._look_again(
                lambda: [d for d in self.droplets(tag=tag) if d.name == spec.name]
            )
            if len(found) == 1:
                self._say(f"{err}: found droplet {found[0].id} by its tag {run_tag}")
                return found[0]
            raise CloudError(
                f"{err}; no droplet is tagged {run_tag}, so none was created"
                if not found
                else f"{err}; {len(found)} droplets are tagged {run_tag}"
            ) from None
        return _droplet(data["droplet"])

    def droplets(self, tag: str | None = None) -> list[Droplet]:
        """The account's droplets, or those with `tag` (every page)."""
        path = f"droplets?tag_name={tag}" if tag else "droplets"
        return [_droplet(d) for d in self._pages(path, "droplets")]

    def _look_again(self, look: Callable[[], list[T]], times: int = 3) -> list[T]:
        """After a lost answer: look now, then again a request timeout later (a stalled
        request may still be carried out), up to `times` looks."""
        for attempt in range(times):
            found = look()
            if found or attempt == times - 1:
                return found
            self._sleep(self.pacing.request_timeout)
        return []

    def _pages(self, path: str, key: str) -> list[JSON]:
        items: list[JSON] = []
        page = 1
        while True:
            joiner = "&" if "?" in path else "?"
            data = self.request("GET", f"{path}{joiner}page={page}")
            items += list(data.get(key) or [])
            if not data.get("links", {}).get("pages", {}).get("next"):
                return items
            page += 1

    def get_droplet(self, droplet_id: int) -> Droplet:
        """The droplet as it is now."""
        return _droplet(self.request("GET", f"droplets/{droplet_id}")["droplet"])

    def delete_droplet(self, droplet_id: int) -> None:
        """Delete a droplet; gone already is fine."""
        self._delete(f"droplets/{droplet_id}")

    def droplet_action(self, droplet_id: int, kind: str, **params: Any) -> Action:
        """Start a droplet action (shutdown, power_off, snapshot, ...)."""
        data = self.request("POST", f"droplets/{droplet_id}/actions", {"type": kind, **params})
        return _action(data["action"])

    def get_action(self, action_id: int) -> Action:
        """An action by id."""
        return _action(self.request("GET", f"actions/{action_id}")["action"])

    def droplet_snapshots(self, droplet_id: int) -> list[Image]:
        """The snapshots taken of a droplet."""
        data = self.request("GET", f"droplets/{droplet_id}/snapshots")
        return [_image(s) for s in data.get("snapshots", [])]

    # -- images

    def snapshot_images(self) -> list[Image]:
        """The account's private snapshot images (every page)."""
        images: list[Image] = []
        page = 1
        while True:
            # The API filters by type only for distribution and application images.
            data = self.request("GET", f"images?private=true&page={page}")
            images += [_image(i) for i in data.get("images", []) if i.get("type") == "snapshot"]
            if not data.get("links", {}).get("pages", {}).get("next"):
                return images
            page += 1

    def get_image(self, image_id: int | str) -> Image:
        """An image by id, or a public image by slug."""
        return _image(self.request("GET", f"images/{image_id}")["image"])

    def describe_image(self, image_id: int, name: str, description: str) -> None:
        """Set an image's description (the API wants its name with it)."""
        self.request("PUT", f"images/{image_id}", {"name": name, "description": description})

    def tag_image(self, image_id: int, tag: str) -> None:
        """Tag an image (the tag is created first, as Packer's snapshot_tags does)."""
        self.request("POST", "tags", {"name": tag})
        self.request(
            "POST",
            f"tags/{urllib.parse.quote(tag, safe='')}/resources",
            {"resources": [{"resource_id": str(image_id), "resource_type": "image"}]},
        )

    def delete_image(self, image_id: int) -> None:
        """Delete an image; gone already is fine."""
        self._delete(f"images/{image_id}")

    def transfer_image(self, image_id: int, region: str) -> Action | None:
        """Start copying an image to another region; None when the image is there already
        (DigitalOcean answers 422 to a transfer into a region that holds the image)."""
        try:
            data = self.request(
                "POST", f"images/{image_id}/actions", {"type": "transfer", "region": region}
            )
        except CloudError as err:
            if err.status == 422 and region in self.get_image(image_id).regions:
                return None
            raise
        return _action(data["action"])

    # -- waiting

    def wait_for_droplet_active(self, droplet_id: int, timeout: float) -> Droplet:
        """Poll until the droplet is active; WaitTimeout after `timeout` seconds."""
        for _ in self._polls(timeout, f"droplet {droplet_id} to become active"):
            droplet = self.get_droplet(droplet_id)
            if droplet.status == "active":
                return droplet
        raise AssertionError("unreachable")

    def wait_for_droplet_off(self, droplet_id: int, timeout: float) -> Droplet:
        """Poll until the droplet is off; WaitTimeout after `timeout` seconds."""
        for _ in self._polls(timeout, f"droplet {droplet_id} to power off"):
            droplet = self.get_droplet(droplet_id)
            if droplet.status == "off":
                return droplet
        raise AssertionError("unreachable")

    def wait_for_action(
        self, action_id: int, timeout: float, what: str, *, share: int = 1
    ) -> Action:
        """Poll an action until completed; ActionErrored at once when it errors.

        `share`: how many waits run side by side (each polls that much less often)."""
        for _ in self._polls(timeout, what, share):
            action = self.get_action(action_id)
            if action.status == "completed":
                return action
            if action.status == "errored":
                raise ActionErrored(f"{what} failed: action {action_id} errored")
        raise AssertionError("unreachable")

    def _polls(self, timeout: float, what: str, share: int = 1) -> Any:
        """Yield before each poll, sleeping the paced interval between; then WaitTimeout."""
        p = self.pacing
        deadline = time.monotonic() + timeout
        interval = p.poll_min
        polls = 0
        # the first look comes after one interval: nothing is ever ready the moment it starts
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
            self._sleep(min(interval * max(share, 1), left))
            yield
            polls += 1
            if polls >= p.steady_polls:
                interval = min(interval * p.growth, max(p.poll_max, p.poll_min))

    def _delete(self, path: str) -> None:
        with contextlib.suppress(NotFound):
            self.request("DELETE", path)


def created_at_epoch(created_at: str) -> float | None:
    """An API `created_at` ("2026-12-01T09:00:00Z") as epoch seconds; None when unreadable."""
    import calendar

    try:
        stamp = time.strptime(created_at.strip()[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return float(calendar.timegm(stamp))


def _error_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    text = str(message or response.reason or "no message")
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 3] + "..."


def _retry_after(response: requests.Response) -> float:
    """Seconds to wait on 429: retry-after, else until ratelimit-reset, else 60."""
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass
    reset = response.headers.get("ratelimit-reset")
    if reset:
        try:
            return min(max(float(reset) - time.time(), 1.0), 3600.0)
        except ValueError:
            pass
    return 60.0


def _droplet(raw: JSON) -> Droplet:
    public = private = None
    for net in (raw.get("networks") or {}).get("v4") or []:
        if net.get("type") == "public" and public is None:
            public = net.get("ip_address")
        elif net.get("type") == "private" and private is None:
            private = net.get("ip_address")
    region = raw.get("region")
    return Droplet(
        id=int(raw["id"]),
        name=str(raw.get("name", "")),
        status=str(raw.get("status", "")),
        region=str(region.get("slug", "") if isinstance(region, dict) else region or ""),
        public_ip=public,
        private_ip=private,
        snapshot_ids=tuple(int(i) for i in raw.get("snapshot_ids") or []),
        tags=tuple(str(t) for t in raw.get("tags") or ()),
        created_at=str(raw.get("created_at", "")),
    )


def _key(raw: JSON) -> Key:
    return Key(id=int(raw["id"]), name=str(raw.get("name", "")), fingerprint=raw["fingerprint"])


def _image(raw: JSON) -> Image:
    return Image(
        id=int(raw["id"]),
        name=str(raw.get("name", "")),
        regions=tuple(raw.get("regions") or ()),
        created_at=str(raw.get("created_at", "")),
        min_disk_size=_int_or(raw.get("min_disk_size"), 0),
        status=str(raw.get("status") or "available"),
    )


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _action(raw: JSON) -> Action:
    rid = raw.get("resource_id")
    return Action(
        id=int(raw["id"]),
        type=str(raw.get("type", "")),
        status=str(raw.get("status", "")),
        resource_id=int(rid) if rid is not None else None,
    )
