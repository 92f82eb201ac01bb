"""Probe droplets the way their load balancer does, from the balancer's own health check.

The balancer's own per-droplet view is the judge where the cloud offers it (DigitalOcean's
monitoring endpoint droplets_health_checks, read through scaler.cloud; the local cloud's
balancers answer it from HAProxy). Scaler's own probe follows the balancer's rule: the check's
protocol, port and path over the droplet's PRIVATE address, with its response timeout, every
interval; only a 2xx answer passes (a 301 fails, as on DigitalOcean); a droplet counts as healthy
after `healthy_threshold` passes in a row and unhealthy after `unhealthy_threshold` failures in a
row. With the balancer's view, the own probe only fails a droplet that answers badly: one it
cannot reach (a firewall admitting only the balancer) is the balancer's to judge. Every failure
names the droplet, the URL, the status or error and the first bytes of the body.

Port mapping: the local cloud serves each droplet's port 80 on Machines.web_port(): 80 when it
runs as root, else 8080 (documented in scaler/local/machines.py). `port_map` maps a check's port
to the port to dial; `port_map_from_env()` reads it from SCALER_PORT_MAP (`80=8080,443=8443`), else
from the local cloud's web port (`8080`, meaning 80 -> 8080, as scaler.localtarget reads it). A
caller that detected the local cloud can pass LocalTarget.port_map(). Against real DigitalOcean it
is empty.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from scaler.errors import ScalerError
from scaler.events import Clock
from scaler.localtarget import web_port_setting

Protocol = Literal["http", "https", "tcp"]
LB_TYPE = "digitalocean_loadbalancer"
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
    return check_from_fields(
        blocks[0],
        lambda protocol: HealthError(
            f"{name} has health check protocol {protocol!r} (have: http, https, tcp)"
        ),
    )


def check_from_fields(
    fields: Mapping[str, Any], unknown_protocol: Callable[[str], ScalerError]
) -> HealthCheck:
    """A HealthCheck from DigitalOcean's check fields: the API's `health_check` and the Terraform
    state's `healthcheck` block use the same names; `unknown_protocol` makes the error."""
    protocol = str(fields.get("protocol") or "http").lower()
    if protocol not in ("http", "https", "tcp"):
        raise unknown_protocol(protocol)
    return HealthCheck(
        protocol=protocol,  # type: ignore[arg-type]
        port=int(fields.get("port") or 80),
        path=str(fields.get("path") or "/"),
        interval=float(fields.get("check_interval_seconds") or 10),
        response_timeout=float(fields.get("response_timeout_seconds") or 5),
        healthy_threshold=int(fields.get("healthy_threshold") or 3),
        unhealthy_threshold=int(fields.get("unhealthy_threshold") or 3),
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
    """The port map from SCALER_PORT_MAP, else the local cloud's web port; {} for none."""
    env = os.environ if env is None else env
    if env.get(PORT_MAP_ENV):
        return parse_port_map(env[PORT_MAP_ENV])
    local = web_port_setting(env)
    return parse_port_map(local) if local else {}


def port_map_from(option: str | None) -> dict[int, int]:
    """The --port-map option when given, else the environment's (see port_map_from_env)."""
    return parse_port_map(option) if option else port_map_from_env()


BODY_BYTES = 80
"""How much of a failing answer's body a health failure quotes."""


@dataclass(frozen=True)
class ProbeResult:
    """One health check of one droplet: passed or not, and what it saw."""

    ok: bool
    url: str
    status: int | None = None
    error: str = ""
    body: bytes = b""

    def describe(self) -> str:
        """`URL -> 301 Moved (body '...')`, or `URL -> refused`: what a failure shows."""
        if self.error:
            return f"{self.url} -> {self.error}"
        shown = self.body[:BODY_BYTES].decode("utf-8", errors="replace")
        more = "..." if len(self.body) > BODY_BYTES else ""
        body = f", body {shown + more!r}" if self.body else ", empty body"
        return f"{self.url} -> {self.status}{body}"


def check_droplet(
    address: str, check: HealthCheck, port_map: Mapping[int, int] | None = None
) -> ProbeResult:
    """One health check of the droplet at `address`, judged as DigitalOcean's balancer does:
    an http(s) check passes only on a 2xx answer within the response timeout (a redirect fails),
    a tcp check when the port accepts a connection."""
    port = (port_map or {}).get(check.port, check.port)
    timeout = check.response_timeout
    scheme = "tcp" if check.protocol == "tcp" else check.protocol
    url = f"{scheme}://{address}:{port}" + ("" if check.protocol == "tcp" else check.path)
    try:
        if check.protocol == "tcp":
            with socket.create_connection((address, port), timeout=timeout):
                return ProbeResult(True, url)
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
            answer = conn.getresponse()
            status = answer.status
            body = answer.read(BODY_BYTES + 1) if not 200 <= status < 300 else b""
        finally:
            conn.close()
    except TimeoutError:
        return ProbeResult(False, url, error=f"no answer within {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, url, error="connection refused")
    except (OSError, http.client.HTTPException) as err:
        return ProbeResult(False, url, error=str(err) or type(err).__name__)
    return ProbeResult(200 <= status < 300, url, status, body=body)


def probe(address: str, check: HealthCheck, port_map: Mapping[int, int] | None = None) -> bool:
    """One health check of the droplet at `address`: True when it passes (2xx only)."""
    return check_droplet(address, check, port_map).ok


BalancerView = Callable[[], Mapping[str, bool] | None]
"""The load balancer's own view now (address -> in rotation), or None where the cloud has none."""

ProbeVia = Callable[[str, str, HealthCheck], ProbeResult]
"""One check of the droplet at public address A dialling address D, run from elsewhere."""

# The check, as the droplet itself runs it (python3 is on every image scaler bakes): one JSON line.
_REMOTE_CHECK = r"""
import base64, http.client, json, socket, ssl, sys
protocol, host, port, path, timeout = sys.argv[1:6]
port, timeout = int(port), float(timeout)
try:
    if protocol == "tcp":
        socket.create_connection((host, port), timeout=timeout).close()
        print(json.dumps({"ok": True}))
        sys.exit()
    if protocol == "https":
        conn = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("GET", path, headers={"User-Agent": "scaler-health"})
    answer = conn.getresponse()
    body = answer.read(BODY_MAX)
    print(json.dumps({"status": answer.status, "body": base64.b64encode(body).decode()}))
except socket.timeout:
    print(json.dumps({"error": "no answer within " + format(timeout, "g") + "s"}))
except ConnectionRefusedError:
    print(json.dumps({"error": "connection refused"}))
except Exception as err:
    print(json.dumps({"error": str(err) or type(err).__name__}))
""".replace("BODY_MAX", str(BODY_BYTES + 1))


def ssh_prober(user: str, key: Path) -> ProbeVia:
    """Checks run through SSH on the droplet itself (as `user` with `key`), dialling its private
    address: for a machine that cannot reach the private network (or is firewalled off it)."""
    import base64
    import json
    import shlex

    from scaler.provision import ProvisionFailed, SshConnection, run_over_ssh

    def via(address: str, dial: str, check: HealthCheck) -> ProbeResult:
        scheme = "tcp" if check.protocol == "tcp" else check.protocol
        path = "" if check.protocol == "tcp" else check.path
        url = f"{scheme}://{dial}:{check.port}{path} (through SSH to {address})"
        timeout = f"{check.response_timeout:g}"
        args = [check.protocol, dial, str(check.port), check.path or "/", timeout]
        command = "python3 -c " + shlex.join([_REMOTE_CHECK, *args])
        try:
            done = run_over_ssh(
                SshConnection(address, user, key), command, check.response_timeout + 20
            )
        except ProvisionFailed as err:
            return ProbeResult(False, url, error=str(err))
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return ProbeResult(False, url, error=f"ssh failed: {said}")
        try:
            seen = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return ProbeResult(False, url, error=f"no answer from the check: {done.stdout[:80]!r}")
        if seen.get("ok"):
            return ProbeResult(True, url)
        if "error" in seen:
            return ProbeResult(False, url, error=str(seen["error"]))
        status = int(seen["status"])
        body = base64.b64decode(seen.get("body") or "") if not 200 <= status < 300 else b""
        return ProbeResult(200 <= status < 300, url, status, body=body)

    return via


@dataclass(frozen=True)
class HealthReport:
    """How a set of droplets fared: who reached healthy, who failed, who was still undecided."""

    healthy: tuple[str, ...]
    unhealthy: tuple[str, ...]
    pending: tuple[str, ...]
    rounds: int
    # the last probe of each droplet that is not healthy (what a failure message shows)
    last: Mapping[str, ProbeResult] = field(default_factory=dict)
    # True when the balancer's own view decided who is healthy
    by_balancer: bool = False

    @property
    def ok(self) -> bool:
        """True when every droplet passed."""
        return not self.unhealthy and not self.pending

    def why(self, address: str, name: str = "") -> str:
        """One droplet's failure: its name, the URL checked and what came back."""
        label = f"{name} ({address})" if name else address
        seen = self.last.get(address)
        said = seen.describe() if seen is not None else "not checked"
        if self.by_balancer and address in self.pending:
            said = f"the load balancer has it DOWN; own probe: {said}"
        return f"{label}: {said}"


def wait_healthy(
    addresses: Sequence[str],
    check: HealthCheck,
    *,
    port_map: Mapping[int, int] | None = None,
    timeout: float = 300.0,
    grace: float = 0.0,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    private: Mapping[str, str] | None = None,
    balancer: BalancerView | None = None,
    via: ProbeVia | None = None,
) -> HealthReport:
    """Poll until every droplet is healthy by the check's thresholds, or one fails, or timeout.

    A droplet fails after `unhealthy_threshold` failed probes in a row once `grace` seconds
    (boot time) have passed; one failing droplet ends the wait, as the batch it belongs to failed.
    Probes dial each droplet's private address where `private` names one (the balancer checks
    over the private network). Where `balancer` gives the balancer's own view, that view says who
    is healthy; the own probe then fails a droplet that answers with a non-2xx status, and one
    that refuses the connection only when this machine reaches a droplet the balancer has in
    rotation (else the path is closed to it, say by a firewall that admits only the balancer);
    a timeout or an unreachable droplet is the balancer's to judge: pending until it is UP or
    the wait's timeout. With `via`, a
    droplet this machine cannot connect to is checked through it (SSH to the droplet itself).
    """
    start = clock()
    passes = dict.fromkeys(addresses, 0)
    fails = dict.fromkeys(addresses, 0)
    healthy: set[str] = set()
    last: dict[str, ProbeResult] = {}
    rounds = 0
    judged_by_balancer = False
    reachable: bool | None = None  # can this machine reach a droplet the balancer has UP?
    while True:
        rounds += 1
        began = clock()
        view = balancer() if balancer is not None else None
        judged_by_balancer = judged_by_balancer or view is not None
        if view is not None and reachable is None:
            up = [a for a, ok in view.items() if ok and a not in passes]
            if up:
                seen = _check(up[0], check, port_map, private, via)
                reachable = seen.status is not None
        for address in addresses:
            if address in healthy:
                continue
            result = _check(address, check, port_map, private, via)
            last[address] = result
            if view is not None:
                if view.get(address):
                    healthy.add(address)
                    continue
                answered_badly = result.status is not None and not result.ok
                # refused while the path is open: nothing listens. A timeout is left to the
                # balancer, whose own timeout its view shows (a firewall drop looks the same).
                refused = result.error == "connection refused" and bool(reachable)
                if (answered_badly or refused) and clock() - start >= grace:
                    fails[address] += 1
                elif result.ok or result.status is None:
                    fails[address] = 0
                continue
            if result.ok:
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
                last={a: last[a] for a in (*failed, *pending) if a in last},
                by_balancer=judged_by_balancer,
            )
        sleep(max(0.0, check.interval - (clock() - began)))


def _check(
    address: str,
    check: HealthCheck,
    port_map: Mapping[int, int] | None,
    private: Mapping[str, str] | None,
    via: ProbeVia | None,
) -> ProbeResult:
    """One check of the droplet at `address` over its private address; through `via` when this
    machine cannot connect to it."""
    dial = (private or {}).get(address) or address
    result = check_droplet(dial, check, port_map)
    if result.status is None and not result.ok and via is not None:
        return via(address, dial, check)
    return result


def count_healthy(
    addresses: Sequence[str],
    check: HealthCheck,
    port_map: Mapping[int, int] | None = None,
    *,
    private: Mapping[str, str] | None = None,
    balancer: BalancerView | None = None,
    via: ProbeVia | None = None,
) -> int:
    """How many of the droplets are healthy right now: in the balancer's rotation where it says,
    else passing one probe (over the private address where known, through `via` if need be)."""
    view = balancer() if balancer is not None else None
    if view is not None:
        return sum(1 for address in addresses if view.get(address))
    return sum(1 for address in addresses if _check(address, check, port_map, private, via).ok)
