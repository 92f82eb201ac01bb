"""What each droplet's network must hold, from the state: its reserved IPs and its firewall.

A pure function of the state document; the local cloud hands the result to its machines after
every request (real droplets apply what changed, directory droplets have no network to change).
"""

from __future__ import annotations

from scaler.local.api.base import JSON
from scaler.local.firewall import OPEN, Policy, Rule


def _droplet_addresses(droplet: JSON) -> list[str]:
    return [droplet["public_ip"], droplet["private_ip"]]


def _peers(state: JSON, peers: JSON) -> tuple[str, ...]:
    live = {i: d for i, d in state["droplets"].items() if not d.get("gone_at")}
    found: list[str] = list(peers.get("addresses") or [])
    for did in peers.get("droplet_ids") or []:
        if did in live:
            found += _droplet_addresses(live[did])
    tags = set(peers.get("tags") or [])
    for droplet in live.values():
        if tags & set(droplet["tags"]):
            found += _droplet_addresses(droplet)
    for uid in peers.get("load_balancer_uids") or []:
        lb = state["lbs"].get(uid)
        if lb is not None:
            found.append(lb["ip"])  # the address a balancer dials its targets from
    return tuple(dict.fromkeys(found))


def _rules(state: JSON, rules: list[JSON], side: str) -> list[Rule]:
    return [
        Rule(str(r["protocol"]), str(r.get("ports") or "0"), _peers(state, r.get(side) or {}))
        for r in rules
    ]


def droplet_policies(state: JSON) -> dict[int, Policy]:
    """Every live droplet's reserved IPs and firewall rules (OPEN when it has neither)."""
    policies: dict[int, Policy] = {}
    for did, droplet in state["droplets"].items():
        if droplet.get("gone_at"):
            continue
        reserved = sorted(ip["ip"] for ip in state["ips"].values() if ip["droplet_id"] == did)
        covering = [
            fw
            for fw in state["firewalls"].values()
            if did in fw["droplet_ids"] or set(fw["tags"]) & set(droplet["tags"])
        ]
        if not reserved and not covering:
            policies[did] = OPEN
            continue
        inbound: list[Rule] = []
        outbound: list[Rule] = []
        for fw in sorted(covering, key=lambda f: str(f["id"])):
            inbound += _rules(state, fw["inbound_rules"], "sources")
            outbound += _rules(state, fw["outbound_rules"], "destinations")
        policies[did] = Policy(
            reserved_ips=tuple(reserved),
            firewalled=bool(covering),
            inbound=tuple(inbound),
            outbound=tuple(outbound),
        )
    return policies
