"""A real local droplet's network: its own namespace, reached from this host over a veth pair.

For droplet D of the cloud with network number N, with public address P = 127.N.1.k and private
address Q = 127.N.2.k (all of it loopback range, as every local address is):

- namespace `scaler-N-D`, holding lo and the droplet end of the veth (`sN-Dp`) with P/32 and Q/32;
- the host end (`sN-Dh`) with 127.N.0.1/32, and /32 routes to P and Q through it;
- inside, the rest of 127.N.0.0/16 (the host end, other droplets, balancers) and the package
  mirror's address route out through the veth;
- `route_localnet=1` on both ends (and `all` inside), which lets 127/8 traffic cross the veth;
- `forwarding=1` and `proxy_arp=1` on the host end only, so a packet one droplet sends to
  another droplet's address is routed on from this veth to the other's (IPv4 honours the
  ingress interface's `conf.<if>.forwarding`; the host's global `ip_forward` stays as it is),
  and the host end answers the droplet's ARP for addresses it routes elsewhere (a droplet
  looks every 127.N address up on its veth directly);
- the reserved IPs assigned to the droplet (127.N.3.k): one more /32 on the droplet end each,
  and a /32 route to it through the host end (`set_reserved_ips` moves them).

The routes sit in the `local` routing table, which Linux consults first and which otherwise says
that all of 127.0.0.0/8 is this host's own loopback. Removing the host end removes both ends, the
routes and the per-interface sysctls with it; the namespace goes with `ip netns del`.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scaler.errors import ScalerError


class NetnsError(ScalerError):
    """A droplet's namespace or veth cannot be set up."""


@dataclass(frozen=True)
class DropletNet:
    """The names and addresses of one droplet's network."""

    network: int
    droplet_id: int
    public_ip: str
    private_ip: str

    @property
    def namespace(self) -> str:
        return f"scaler-{self.network}-{self.droplet_id}"

    @property
    def host_if(self) -> str:
        return _ifname(self.network, self.droplet_id, "h")

    @property
    def droplet_if(self) -> str:
        return _ifname(self.network, self.droplet_id, "p")

    @property
    def host_ip(self) -> str:
        return f"127.{self.network}.0.1"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.namespace


def _ifname(network: int, droplet_id: int, end: str) -> str:
    name = f"s{network}-{droplet_id}{end}"
    if len(name) > 15:  # IFNAMSIZ - 1
        name = f"s{network}-{droplet_id % 10**8:x}{end}"[:15]
    return name


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
    )
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")
    return done


def _sysctl_in(namespace: str, *settings: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-qw", *settings],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise NetnsError(f"sysctl in {namespace} failed: {done.stderr.strip()}")


def attach(net: DropletNet, extra_routes: tuple[str, ...] = ()) -> None:
    """Create the namespace, the veth, the addresses and routes (after removing stale ones)."""
    detach(net)
    try:
        _ip("netns", "add", net.namespace)
        _ip("link", "add", net.host_if, "type", "veth", "peer", "name", net.droplet_if)
        _ip("link", "set", net.droplet_if, "netns", net.namespace)
        _ip("addr", "add", f"{net.host_ip}/32", "dev", net.host_if)
        conf = Path("/proc/sys/net/ipv4/conf") / net.host_if
        (conf / "route_localnet").write_text("1\n")
        # Only what arrives on this veth is forwarded (to another droplet's veth): the
        # per-interface switch, gone with the veth, never the host's global ip_forward.
        (conf / "forwarding").write_text("1\n")
        (conf / "proxy_arp").write_text("1\n")
        _ip("link", "set", net.host_if, "up")
        n = ["-n", net.namespace]
        _ip(*n, "link", "set", "lo", "up")
        for address in dict.fromkeys((net.public_ip, net.private_ip)):
            _ip(*n, "addr", "add", f"{address}/32", "dev", net.droplet_if)
        _sysctl_in(
            net.namespace,
            f"net.ipv4.conf.{net.droplet_if}.route_localnet=1",
            "net.ipv4.conf.all.route_localnet=1",
        )
        _ip(*n, "link", "set", net.droplet_if, "up")
        for address in dict.fromkeys((net.public_ip, net.private_ip)):
            _ip("route", "add", f"{address}/32", "dev", net.host_if, "table", "local")
        for route in (f"127.{net.network}.0.0/16", *extra_routes):
            out = ("dev", net.droplet_if, "table", "local", "src", net.private_ip)
            _ip(*n, "route", "add", route, *out)
    except BaseException:
        detach(net)
        raise


def set_reserved_ips(net: DropletNet, before: tuple[str, ...], after: tuple[str, ...]) -> None:
    """Move the droplet's reserved IPs from `before` to `after` (addresses and host routes)."""
    n = ["-n", net.namespace]
    for address in before:
        if address not in after:
            _ip(*n, "addr", "del", f"{address}/32", "dev", net.droplet_if, check=False)
            _ip("route", "del", f"{address}/32", "dev", net.host_if, "table", "local", check=False)
    for address in after:
        if address not in before:
            _ip(*n, "addr", "replace", f"{address}/32", "dev", net.droplet_if)
            # replace: the route may still point at the droplet it came from
            _ip("route", "replace", f"{address}/32", "dev", net.host_if, "table", "local")


def detach(net: DropletNet) -> None:
    """Remove the veth (both ends, its routes and sysctls) and the namespace; idempotent."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _ip("link", "del", net.host_if, check=False)
        if net.netns_path.exists():
            _ip("netns", "del", net.namespace, check=False)


def leftovers(network: int) -> list[str]:
    """Namespaces and host veths of network `network` that exist now (for tests and cleanup)."""
    found = []
    with contextlib.suppress(OSError):
        found += [
            p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"scaler-{network}-")
        ]
    with contextlib.suppress(OSError):
        found += [
            p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(f"s{network}-")
        ]
    return sorted(found)


def sweep(network: int) -> list[str]:
    """Remove what a killed local cloud of network `network` left (its number is ours now)."""
    found = leftovers(network)
    for name in found:
        if name.startswith("scaler-"):
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)
    return found
