"""Local load balancers that carry traffic: one HAProxy (Debian's, 2.6) per balancer.

Each balancer of a real-droplet cloud listens on its own address (127.N.4.k) on every entry port
of its forwarding rules and sends each connection to a target droplet's target port over the
droplets' PRIVATE addresses (127.N.2.k), spread over the targets its health check calls healthy.
It dials from its own address (`source 127.N.4.k`, checks too), so a droplet's firewall can admit
a balancer by address, as DigitalOcean's `source_load_balancer_uids` does.

DigitalOcean's semantics, and how HAProxy 2.6 is made to follow them (verified here with
`/usr/sbin/haproxy` 2.6.12 before this module was written):

- A new target starts DOWN and gets traffic after `healthy_threshold` passes in a row; it leaves
  after `unhealthy_threshold` failures. HAProxy 2.6 instead starts a server UP: its health counter
  starts at `rise`, so one passing check keeps it UP ("UP 1/2") and one failure takes it DOWN; a
  server added at runtime (`add server`) starts in maintenance and `enable server` makes it UP at
  once (again health = rise). `set server B/S health down` right after `enable server` does give
  DOWN-until-rise, but leaves a window in which the server is UP.
- A reload starts a new process whose servers know nothing of the old checks, unless it loads a
  server-state file (`server-state-file` + `load-server-state-from-file global`): a server whose
  line says op_state 0, check_health 0 starts DOWN and needs `rise` passes ("DOWN 1/3", "DOWN
  2/3", then UP), exactly DigitalOcean's new target; a server with no line starts UP.
- A reload with `-x <admin socket> -sf <old pid>` takes over the listening sockets (no refused
  connection) and lets the old process finish its established connections (soft stop): a slow
  download through the balancer survived a reload in the middle (10 bytes over 4 s, then 200).

So every change (droplets in or out, rules, the check) writes a new configuration and a state
file made from the running process's `show servers state`: targets it already checks keep their
counters, new targets get a DOWN line; then the balancer reloads seamlessly. One check per
droplet: the backend `health` runs the check (protocol, port, path, interval, timeout, rise =
healthy_threshold, fall = unhealthy_threshold; `http-check expect rstatus ^2`: only 2xx passes),
and each rule's backend `track`s it, so a droplet is UP or DOWN for all rules at once. The
balancer's view (`show stat`) is what the API's
/v2/monitoring/metrics/load_balancer/droplets_health_checks answers.

Protocols: entry http is served in HTTP mode (X-Forwarded-For and -Proto added, as DigitalOcean
does); tcp, and https/http2 (the local cloud holds no certificates, so TLS passes through to the
droplet), in TCP mode; udp and http3 rules are not served. A target protocol https dials the
droplet with TLS, unverified. Sticky cookies insert the cookie the API names.

Processes and files: per cloud a runtime directory `RUNTIME/<network number>/<lb id>/` with
`haproxy.cfg`, `admin.sock` (the runtime API), `haproxy.pid` and `server-state`. HAProxy runs as
a daemon, so a local cloud killed with SIGKILL leaves it running: the next cloud to claim the same
network number ends every HAProxy whose command line names that network's directory (as
netns.sweep removes its namespaces). Only clouds with real droplets run balancers: directory
droplets are API stand-ins, and their balancers stay API records with no view.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scaler.errors import ScalerError
from scaler.events import Say
from scaler.fsutil import write_atomic

RUNTIME = Path("/run/scaler/balancers")
HAPROXY = "haproxy"
HEALTH_BACKEND = "health"
# show servers state, format 1: the fields of one server's line, in order.
_STATE_FIELDS = [
    "be_id",
    "be_name",
    "srv_id",
    "srv_name",
    "srv_addr",
    "srv_op_state",
    "srv_admin_state",
    "srv_uweight",
    "srv_iweight",
    "srv_time_since_last_change",
    "srv_check_status",
    "srv_check_result",
    "srv_check_health",
    "srv_check_state",
    "srv_agent_state",
    "bk_f_forced_id",
    "srv_f_forced_id",
    "srv_fqdn",
    "srv_port",
    "srvrecord",
    "srv_use_ssl",
    "srv_check_port",
    "srv_check_addr",
    "srv_agent_addr",
    "srv_agent_port",
]


class BalancerError(ScalerError):
    """A local load balancer cannot be started or changed."""


@dataclass(frozen=True)
class Rule:
    """One forwarding rule: entry protocol and port, target protocol and port."""

    entry_protocol: str
    entry_port: int
    target_protocol: str
    target_port: int
    tls_passthrough: bool = False


@dataclass(frozen=True)
class Check:
    """A balancer's health check, as DigitalOcean's API holds it."""

    protocol: Literal["http", "https", "tcp"] = "http"
    port: int = 80
    path: str = "/"
    interval: int = 10
    timeout: int = 5
    healthy_threshold: int = 5
    unhealthy_threshold: int = 3


@dataclass(frozen=True)
class Target:
    """A droplet behind a balancer, dialled at its private address."""

    droplet_id: int
    address: str


@dataclass(frozen=True)
class Spec:
    """Everything a balancer's HAProxy is made from."""

    lb_id: str
    address: str
    rules: tuple[Rule, ...]
    check: Check
    targets: tuple[Target, ...]
    algorithm: str = "round_robin"
    sticky_cookie: tuple[str, int] | None = None


@dataclass(frozen=True)
class TargetHealth:
    """One target as its balancer sees it: in rotation or not, and the last check's result."""

    droplet_id: int
    healthy: bool
    status: str
    check: str


def available() -> str | None:
    """Why balancers cannot carry traffic here, or None when they can."""
    if shutil.which(HAPROXY) is None and not Path("/usr/sbin/haproxy").exists():
        return "local load balancers need haproxy (Debian package haproxy)"
    if os.geteuid() != 0:
        return "local load balancers need root (their entry ports are below 1024)"
    return None


def _haproxy() -> str:
    return shutil.which(HAPROXY) or "/usr/sbin/haproxy"


def render_config(spec: Spec, folder: Path) -> str:
    """The HAProxy configuration of one balancer (its runtime files in `folder`)."""
    check = spec.check
    lines = [
        "# written by scaler's local cloud for load balancer " + spec.lb_id,
        "global",
        f"  stats socket {folder / 'admin.sock'} mode 600 level admin expose-fd listeners",
        f"  server-state-file {folder / 'server-state'}",
        "  nbthread 1",
        "defaults",
        "  mode tcp",
        "  timeout connect 5s",
        # DigitalOcean's http_idle_timeout_seconds default
        "  timeout client 60s",
        "  timeout server 60s",
        "  load-server-state-from-file global",
        f"  source {spec.address}",
    ]
    balance = "leastconn" if spec.algorithm == "least_connections" else "roundrobin"
    for index, rule in enumerate(spec.rules):
        mode = _mode(rule)
        if mode is None:
            continue
        name = f"rule{index}-{rule.entry_port}"
        lines += [
            f"frontend {name}",
            f"  mode {mode}",
            f"  bind {spec.address}:{rule.entry_port}",
            f"  default_backend {name}",
        ]
        if mode == "http":
            lines += [
                "  option forwardfor",
                "  http-request set-header X-Forwarded-Proto http",
                "  http-request set-header X-Forwarded-Port %[dst_port]",
            ]
        lines += [f"backend {name}", f"  mode {mode}", f"  balance {balance}"]
        cookie = spec.sticky_cookie if mode == "http" else None
        if cookie is not None:
            lines.append(f"  cookie {cookie[0]} insert indirect nocache maxlife {cookie[1]}s")
        tls = " ssl verify none" if rule.target_protocol == "https" else ""
        for target in spec.targets:
            sticky = f" cookie d{target.droplet_id}" if cookie is not None else ""
            lines.append(
                f"  server d{target.droplet_id} {target.address}:{rule.target_port}"
                f" track {HEALTH_BACKEND}/d{target.droplet_id}{tls}{sticky}"
            )
    lines += [
        f"backend {HEALTH_BACKEND}",
        "  mode tcp",
        f"  timeout connect {check.timeout}s",
        f"  timeout check {check.timeout}s",
    ]
    if check.protocol in ("http", "https"):
        lines += [
            f"  option httpchk GET {check.path or '/'}",
            # single quotes: no variable expansion of the $
            "  http-check expect rstatus '^2[0-9][0-9]$'",
        ]
    lines.append(
        f"  default-server inter {check.interval}s fastinter {check.interval}s"
        f" downinter {check.interval}s rise {check.healthy_threshold}"
        f" fall {check.unhealthy_threshold}"
    )
    ssl = " check-ssl verify none" if check.protocol == "https" else ""
    for target in spec.targets:
        lines.append(f"  server d{target.droplet_id} {target.address}:{check.port} check{ssl}")
    return "\n".join(lines) + "\n"


def _mode(rule: Rule) -> str | None:
    if rule.entry_protocol in ("udp", "http3"):
        return None
    if rule.entry_protocol == "http" and rule.target_protocol in ("http", "https"):
        return "http"
    return "tcp"


def server_state(spec: Spec, running: str) -> str:
    """The state file for a (re)load: the running process's health lines for targets it keeps
    (its counters), a DOWN line (check health 0) for every new target; nothing else."""
    kept: dict[str, list[str]] = {}
    for line in running.splitlines():
        fields = line.split()
        if len(fields) >= len(_STATE_FIELDS) and fields[1] == HEALTH_BACKEND:
            kept[fields[3]] = fields
    out = ["1", "# " + " ".join(_STATE_FIELDS)]
    for number, target in enumerate(spec.targets, 1):
        name = f"d{target.droplet_id}"
        fields = kept.get(name) or [
            *("1", HEALTH_BACKEND, str(number), name, target.address),
            # op_state 0 (stopped), admin 0, weights 1, HCHK_STATUS_INI, result unknown,
            # check health 0 (needs rise passes), check enabled and configured
            *("0", "0", "1", "1", "0", "1", "0", "0", "6", "0", "0", "0", "-"),
            *(str(spec.check.port), "-", "0", "0", "-", "-", "0"),
        ]
        # Address and port come from the configuration: a kept line must not restore old ones.
        fields[4], fields[18] = target.address, str(spec.check.port)
        out.append(" ".join(fields))
    return "\n".join(out) + "\n"


def parse_stat(text: str) -> list[TargetHealth]:
    """The health backend's servers from `show stat` (CSV) as the balancer sees them."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    found = []
    for row in rows:
        name = row.get("svname") or ""
        if row.get("pxname") != HEALTH_BACKEND or not name.startswith("d"):
            continue
        with contextlib.suppress(ValueError):
            status = row.get("status") or ""
            check = " ".join(x for x in (row.get("check_status"), row.get("check_code")) if x)
            found.append(
                TargetHealth(int(name[1:]), status.startswith("UP"), status, check.lstrip("* "))
            )
    return found


class Balancers:
    """The HAProxy processes of one local cloud's balancers (see the module doc)."""

    def __init__(self, network: int, warn: Say | None = None) -> None:
        self.network = network
        self.root = RUNTIME / str(network)
        self._warn = warn or (lambda message: None)
        self._applied: dict[str, Spec] = {}
        for pid in sweep(network):
            self._warn(f"stopped haproxy {pid}, left by a local cloud that was killed")

    # -- what the cloud asks

    def sync(self, specs: Sequence[Spec]) -> None:
        """Make the running balancers match `specs`: start, reload or stop what changed."""
        wanted = {s.lb_id: s for s in specs}
        for lb_id in [i for i in self._applied if i not in wanted]:
            self._stop(lb_id)
        for lb_id, spec in wanted.items():
            if self._applied.get(lb_id) != spec:
                try:
                    self._load(spec)
                except BalancerError as err:
                    self._warn(str(err))
                # tried once per spec: the next change tries again, no warning per request
                self._applied[lb_id] = spec

    def view(self, lb_id: str) -> list[TargetHealth] | None:
        """The balancer's targets as its checks see them; None when it does not run."""
        if lb_id not in self._applied:
            return None
        try:
            return parse_stat(self._ask(lb_id, "show stat"))
        except BalancerError:
            return None

    def close(self) -> None:
        """Stop every balancer of this cloud (established connections end with them)."""
        for lb_id in list(self._applied):
            self._stop(lb_id)
        for pid in sweep(self.network):
            self._warn(f"stopped haproxy {pid}")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- internals

    def _folder(self, lb_id: str) -> Path:
        return self.root / lb_id

    def _ask(self, lb_id: str, command: str) -> str:
        """One command over the balancer's runtime API (its admin socket)."""
        import socket

        path = self._folder(lb_id) / "admin.sock"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as err:
            raise BalancerError(f"balancer {lb_id}: {command!r} on {path} failed ({err})") from err
        return b"".join(chunks).decode(errors="replace")

    def _pid(self, lb_id: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self._folder(lb_id) / "haproxy.pid").read_text().split()[0])
        return None

    def _load(self, spec: Spec) -> None:
        folder = self._folder(spec.lb_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        old = self._pid(spec.lb_id) if spec.lb_id in self._applied else None
        if old is not None and not Path(f"/proc/{old}").exists():
            old = None  # it died (or never started): start afresh
        running = ""
        if old is not None:
            with contextlib.suppress(BalancerError):
                running = self._ask(spec.lb_id, "show servers state")
        config = folder / "haproxy.cfg"
        write_atomic(config, render_config(spec, folder))
        write_atomic(folder / "server-state", server_state(spec, running))
        argv = [_haproxy(), "-D", "-f", str(config), "-p", str(folder / "haproxy.pid")]
        if old is not None:
            # take over the listeners, let the old process finish its connections
            argv += ["-x", str(folder / "admin.sock"), "-sf", str(old)]
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            alerts = [line for line in done.stderr.splitlines() if "ALERT" in line]
            detail = (alerts or done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BalancerError(
                f"load balancer {spec.lb_id} on {spec.address} did not "
                f"{'reload' if old else 'start'}: {detail.strip()[:300]}"
            )

    def _stop(self, lb_id: str) -> None:
        self._applied.pop(lb_id, None)
        folder = self._folder(lb_id)
        _end(_processes_under(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _processes_under(folder: Path) -> list[int]:
    """HAProxy processes whose command line names a file under `folder` (old ones too)."""
    found = []
    prefix = str(folder) + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"haproxy"):
            continue
        if any(arg.decode(errors="replace").startswith(prefix) for arg in argv[1:]):
            found.append(int(entry.name))
    return found


def _end(pids: Sequence[int]) -> None:
    """SIGTERM (HAProxy's hard stop), then SIGKILL what is still there after 5 s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if left:
            time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


def leftovers(network: int) -> list[int]:
    """Pids of HAProxy processes of network `network`'s balancers (for tests and cleanup)."""
    return sorted(_processes_under(RUNTIME / str(network)))


def sweep(network: int) -> list[int]:
    """End the HAProxy processes a killed cloud of network `network` left (its number is ours)."""
    pids = leftovers(network)
    _end(pids)
    shutil.rmtree(RUNTIME / str(network), ignore_errors=True)
    return pids
