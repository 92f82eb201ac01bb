"""What every part of the local cloud shares: constants, values, the error answer, small helpers."""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError

JSON = dict[str, Any]

TOKEN = "scaler-local-token"
"""The token env() hands out; the local cloud accepts any non-empty one."""

DEFAULT_PORT = 8642
DEFAULT_STATE_DIR = Path(".scaler/local")
DROPLET_LIMIT = 100
HOURLY_LIMIT = 5000
LOG_LIMIT = 10_000

EPOCH_ISO = "2024-01-02T03:04:05Z"


class LocalCloudError(ScalerError):
    """The local cloud cannot start, stop or be reached."""


@dataclass(frozen=True)
class Delays:
    """How long things take in the local cloud, in seconds.

    The first five pace creations and actions (`uniform` sets them). The others are how
    DigitalOcean lags behind itself, off (0) by default and on in the realistic profile:
    pending_after, a droplet still refusing actions (422 pending event) after one completed;
    image_listing, a new snapshot missing from image lists; lb_update, a load balancer
    refusing another update (403) while it applies one; droplet_delete, a deleted droplet
    still answering as `archive`; snapshot_per_gb and transfer_per_gb, time per GB of image.
    """

    droplet_boot: float = 2.0
    action: float = 1.0
    snapshot: float = 2.0
    transfer: float = 1.0
    load_balancer: float = 1.0
    pending_after: float = 0.0
    image_listing: float = 0.0
    lb_update: float = 0.0
    droplet_delete: float = 0.0
    snapshot_per_gb: float = 0.0
    transfer_per_gb: float = 0.0

    @classmethod
    def uniform(cls, seconds: float) -> Delays:
        """Every creation and action takes `seconds` (tests use a small one); no lags."""
        return cls(*(seconds for _ in PACE))

    @classmethod
    def realistic(cls) -> Delays:
        """DigitalOcean's pace: droplets active after tens of seconds, snapshots at minutes per
        GB, load balancers after about a minute, deletes that take a while."""
        return cls(
            droplet_boot=35.0,
            action=8.0,
            snapshot=30.0,
            transfer=60.0,
            load_balancer=60.0,
            pending_after=3.0,
            image_listing=10.0,
            lb_update=20.0,
            droplet_delete=10.0,
            snapshot_per_gb=90.0,
            transfer_per_gb=60.0,
        )


# The Delays fields that pace creations and actions (what `uniform` and --delay set).
PACE = ("droplet_boot", "action", "snapshot", "transfer", "load_balancer")
TIMINGS = ("default", "realistic")


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
        return env_for(self.url, self.web_port)


def env_for(url: str, web_port: int) -> dict[str, str]:
    """The variables DigitalOcean clients read to reach a local cloud at url."""
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
        self.error_id = error_id or ERROR_IDS.get(status, "error")
        self.headers = headers or {}


ERROR_IDS = {
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
DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    401: "Unable to authenticate you",
    403: "You do not have access for the attempted action.",
    404: "The resource you were accessing could not be found.",
    429: "API Rate limit exceeded.",
    500: "Server was unable to give you a response.",
    503: "Service is temporarily unavailable.",
}


def not_found() -> ApiError:
    """DigitalOcean's 404 answer."""
    return ApiError(404, DEFAULT_MESSAGES[404])


def unprocessable(message: str) -> ApiError:
    """A 422 answer with message."""
    return ApiError(422, message)


# --- the catalogue: regions, sizes, base images --------------------------------------------------


def iso(ts: float) -> str:
    """An epoch time as DigitalOcean writes it (2024-01-02T03:04:05Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def as_int(value: Any, what: str) -> int:
    """value as an integer, or a 422 naming what it is."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise unprocessable(f"{what} must be an integer, got {value!r}") from None


def as_object(body: Any) -> JSON:
    """A request body that must be a JSON object (else 400)."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def maybe_int(value: Any) -> Any:
    """A path parameter as an int when it is all digits (ids), else as it is (slugs, names)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def project_id() -> str:
    """The one project every resource belongs to."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "scaler-local-project"))


def ip_int(ip: str) -> int:
    """An IPv4 address as the integer the IP actions use for resource_id."""
    return int(ipaddress.IPv4Address(ip))
