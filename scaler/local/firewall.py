"""Cloud firewalls on real droplets: nftables rules in each droplet's own network namespace.

DigitalOcean's cloud firewalls are stateful and deny by default: once a firewall covers a droplet
(by droplet id or tag), only the inbound traffic an inbound rule admits reaches it and only the
outbound traffic an outbound rule admits leaves it; replies to admitted connections always pass.
A droplet no firewall covers is open. DigitalOcean drops what is denied (no reset, no ICMP), and
so does this.

Each covered droplet gets one nftables table of ours, `inet scaler_firewall`, inside its own
namespace (never in this host's): input and output chains with policy drop, established and
related traffic and the droplet's own loopback accepted, then one accept per rule and peer
family. The peers are resolved before they get here: a rule's droplet ids and tags become those
droplets' public and private addresses, its load balancer uids the balancers' addresses (the
address a balancer dials its targets from), its addresses stay CIDRs. The whole table is
replaced in one `nft -f` transaction, so a droplet is never half filtered.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

from scaler.errors import ScalerError

TABLE = "scaler_firewall"


class FirewallError(ScalerError):
    """nftables refused a droplet's rules."""


@dataclass(frozen=True)
class Rule:
    """One firewall rule, its peers resolved to addresses or CIDRs."""

    protocol: str  # tcp, udp or icmp
    ports: str  # "80", "8000-9000", or "0"/"all"/"" for every port
    peers: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """What a droplet's network holds beyond its own addresses: reserved IPs and its firewall."""

    reserved_ips: tuple[str, ...] = ()
    firewalled: bool = False
    inbound: tuple[Rule, ...] = ()
    outbound: tuple[Rule, ...] = ()


OPEN = Policy()


def _port_match(protocol: str, ports: str) -> str:
    if protocol == "icmp" or ports.strip().lower() in ("", "0", "all", "1-65535"):
        return ""
    low, _, high = ports.partition("-")
    span = f"{int(low)}-{int(high)}" if high else str(int(low))
    return f" {protocol} dport {span}"


def _proto_match(protocol: str) -> str:
    if protocol == "icmp":
        return " meta l4proto { icmp, ipv6-icmp }"
    return f" meta l4proto {protocol}"


def _rule_lines(rule: Rule, side: str) -> list[str]:
    v4: list[str] = []
    v6: list[str] = []
    for peer in rule.peers:
        try:
            net = ipaddress.ip_network(peer, strict=False)
        except ValueError:
            continue  # not an address (the API keeps what it was given): matches nothing
        (v4 if net.version == 4 else v6).append(str(net))
    lines = []
    tail = _proto_match(rule.protocol) + _port_match(rule.protocol, rule.ports) + " accept"
    for family, nets in (("ip", v4), ("ip6", v6)):
        if nets:
            peers = ", ".join(sorted(set(nets)))
            lines.append(f"    {family} {side} {{ {peers} }}{tail}")
    return lines


def render(policy: Policy) -> str:
    """The nft script that makes the droplet's table what `policy` says (deleting it when open)."""
    # "add" then "delete": deleting a table that does not exist would fail the transaction.
    head = f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
    if not policy.firewalled:
        return head
    body = [f"table inet {TABLE} {{"]
    for chain, hook, side, rules, own in (
        ("inbound", "input", "saddr", policy.inbound, "iif lo"),
        ("outbound", "output", "daddr", policy.outbound, "oif lo"),
    ):
        body += [
            f"  chain {chain} {{",
            f"    type filter hook {hook} priority filter; policy drop;",
            "    ct state established,related accept",
            f"    {own} accept",
        ]
        for rule in rules:
            body += _rule_lines(rule, side)
        body.append("  }")
    body.append("}")
    return head + "\n".join(body) + "\n"


def apply(namespace: str, policy: Policy) -> None:
    """Replace the firewall table in network namespace `namespace` with `policy`'s."""
    script = render(policy)
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise FirewallError(f"nft in {namespace} refused the firewall: {done.stderr.strip()[:300]}")
