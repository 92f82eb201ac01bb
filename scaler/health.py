"""Probe droplets the way their load balancer does, from the balancer's own health check.

DigitalOcean's load balancer API has no per-droplet health, so a rollout asks each droplet
itself: the check's protocol, port and path, with its response timeout, every interval, and a
droplet counts as healthy after `healthy_threshold` passes in a row (unhealthy after
`unhealthy_threshold` failures in a row), as the balancer would.

Port mapping: the local cloud serves each droplet's port 80 on Machines.web_port(): 80 when it
runs as root, else 8080 (documented in scaler/local/machines.py). `port_map` maps a check's port
to the port to dial; `port_map_from_env()` reads it from SCALER_LOCAL_WEB_PORT (`8080`, meaning
80 -> 8080) or SCALER_PORT_MAP (`80=8080,443=8443`). Against real DigitalOcean it is empty.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from scaler.errors import ScalerError

Protocol = Literal["http", "https", "tcp"]
LB_TYPE = "digitalocean_loadbalancer"
LOCAL_WEB_PORT_ENV = "SCALER_LOCAL_WEB_PORT"
PORT_MAP_ENV = "SCALER_PORT_MAP"


class HealthError(ScalerError):
    """The health check cannot be read or used."""


@dataclass(frozen=True)
class HealthCheck:
    """A load balancer's health check (DigitalOcean's `healthcheck` block)."""

    protocol: Protocol = "http"
    port: int = 80
    path: str = "/"
    interval: float = 10.0
    response_timeout: float = 5.0
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3

    def scaled(self, interval: float | None) -> HealthCheck:
        """The same check polled every `interval` seconds (timeout capped by it); None: as is."""
        if interval is None:
            return self
        return replace(
            self, interval=interval, response_timeout=min(self.response_timeout, interval)
        )


def healthcheck_from_state(state: Mapping[str, Any], address: str | None = None) -> HealthCheck:
    """The health check of the load balancer `address` (default: the only one) in a v4 state."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for resource in state.get("resources", []):
        if resource.get("type") != LB_TYPE or resource.get("mode", "managed") != "managed":
            continue
        prefix = f"{resource['module']}." if resource.get("module") else ""
        for instance in resource.get("instances", []):
            key = instance.get("index_key")
            suffix = "" if key is None else f"[{key!r}]" if isinstance(key, str) else f"[{key}]"
            name = f"{prefix}{LB_TYPE}.{resource['name']}{suffix}".replace("'", '"')
            found.append((name, instance.get("attributes", {})))
    names = [name for name, _ in found]
    if address is not None:
        found = [item for item in found if item[0] == address]
    if len(found) != 1:
        have = ", ".join(names) or "none"
        which = f"load balancer {address}" if address else "exactly one load balancer"
        raise HealthError(
            f"need {which} in the Terraform state for its health check (have: {have})"
        )
    name, attributes = found[0]
    blocks = attributes.get("healthcheck") or []
    if not blocks:
        return HealthCheck()
    block = blocks[0]
    protocol = str(block.get("protocol") or "http").lower()
    if protocol not in ("http", "https", "tcp"):
        raise HealthError(f"{name} has health check protocol {protocol!r} (have: http, https, tcp)")
    return HealthCheck(
        protocol=protocol,  # type: ignore[arg-type]
        port=int(block.get("port") or 80),
        path=str(block.get("path") or "/"),
        interval=float(block.get("check_interval_seconds") or 10),
        response_timeout=float(block.get("response_timeout_seconds") or 5),
        healthy_threshold=int(block.get("healthy_threshold") or 3),
        unhealthy_threshold=int(block.get("unhealthy_threshold") or 3),
    )


def parse_port_map(text: str) -> dict[int, int]:
    """`80=8080,443=8443` (or a bare `8080`, meaning 80=8080) as {80: 8080, ...}."""
    result: dict[int, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        left, sep, right = item.partition("=")
        try:
            if sep:
                result[int(left)] = int(right)
            else:
                result[80] = int(left)
        except ValueError as err:
            raise HealthError(
                f"bad port map {text!r}; give PORT=LOCALPORT pairs like 80=8080,443=8443"
            ) from err
    return result


def port_map_from_env(env: Mapping[str, str] | None = None) -> dict[int, int]:
    """The port map from SCALER_PORT_MAP, else SCALER_LOCAL_WEB_PORT (port 80 only); {} for none."""
    env = os.environ if env is None else env
    if env.get(PORT_MAP_ENV):
        return parse_port_map(env[PORT_MAP_ENV])
    if env.get(LOCAL_WEB_PORT_ENV):
        return parse_port_map(env[LOCAL_WEB_PORT_ENV])
    return {}


def port_map_from(option: str | None) -> dict[int, int]:
    """The --port-map option when given, else the environment's (see port_map_from_env)."""
    return parse_port_map(option) if option else port_map_from_env()


def probe(address: str, check: HealthCheck, port_map: Mapping[int, int] | None = None) -> bool:
    """One health check of the droplet at `address`: True when it passes."""
    port = (port_map or {}).get(check.port, check.port)
    timeout = check.response_timeout
    try:
        if check.protocol == "tcp":
            with socket.create_connection((address, port), timeout=timeout):
                return True
        conn: http.client.HTTPConnection
        if check.protocol == "https":
            context = ssl.create_default_context()
            # The balancer checks the droplet by address: no certificate would match it.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            conn.request("GET", check.path, headers={"User-Agent": "scaler-health"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False
    return 200 <= status < 400


@dataclass(frozen=True)
class HealthReport:
    """How a set of droplets fared: who reached healthy, who failed, who was still undecided."""

    healthy: tuple[str, ...]
    unhealthy: tuple[str, ...]
    pending: tuple[str, ...]
    rounds: int

    @property
    def ok(self) -> bool:
        """True when every droplet passed."""
        return not self.unhealthy and not self.pending


def wait_healthy(
    addresses: Sequence[str],
    check: HealthCheck,
    *,
    port_map: Mapping[int, int] | None = None,
    timeout: float = 300.0,
    grace: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthReport:
    """Poll until every droplet is healthy by the check's thresholds, or one fails, or timeout.

    A droplet fails after `unhealthy_threshold` failed probes in a row once `grace` seconds
    (boot time) have passed; one failing droplet ends the wait, as the batch it belongs to failed.
    """
    start = clock()
    passes = dict.fromkeys(addresses, 0)
    fails = dict.fromkeys(addresses, 0)
    healthy: set[str] = set()
    rounds = 0
    while True:
        rounds += 1
        began = clock()
        for address in addresses:
            if address in healthy:
                continue
            if probe(address, check, port_map):
                passes[address] += 1
                fails[address] = 0
                if passes[address] >= check.healthy_threshold:
                    healthy.add(address)
            else:
                passes[address] = 0
                if clock() - start >= grace:
                    fails[address] += 1
        failed = [a for a in addresses if fails[a] >= check.unhealthy_threshold]
        pending = [a for a in addresses if a not in healthy and a not in failed]
        done = not pending or failed or clock() - start >= timeout
        if done:
            return HealthReport(
                healthy=tuple(a for a in addresses if a in healthy),
                unhealthy=tuple(failed),
                pending=tuple(pending),
                rounds=rounds,
            )
        sleep(max(0.0, check.interval - (clock() - began)))


def count_healthy(
    addresses: Sequence[str], check: HealthCheck, port_map: Mapping[int, int] | None = None
) -> int:
    """How many of the droplets pass one probe right now."""
    return sum(1 for address in addresses if probe(address, check, port_map))
