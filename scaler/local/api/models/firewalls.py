"""Cloud firewalls: their rules and droplets (real droplets enforce them, see firewall.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from scaler.local.api.base import JSON, as_int, iso, not_found, unprocessable
from scaler.local.api.catalog import NAME_RE
from scaler.local.api.models.state import CloudState
from scaler.local.api.models.tags import ensure_tag

_PEERS = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


def firewall_json(fw: JSON) -> JSON:
    """A firewall as the API shows it."""
    return {
        "id": fw["id"],
        "status": "succeeded",
        "created_at": fw["created_at"],
        "pending_changes": [],
        "name": fw["name"],
        "droplet_ids": list(fw["droplet_ids"]),
        "tags": list(fw["tags"]),
        "inbound_rules": [dict(r) for r in fw["inbound_rules"]],
        "outbound_rules": [dict(r) for r in fw["outbound_rules"]],
    }


def find_firewall(cloud: CloudState, value: str) -> JSON:
    """A firewall by id (404 when there is none)."""
    fw: JSON | None = cloud._state["firewalls"].get(value)
    if fw is None:
        raise not_found()
    return fw


def _rules(cloud: CloudState, value: Any, side: str) -> list[JSON]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise unprocessable(f"{side} rules must be a list.")
    rules = []
    for rule in value:
        if not isinstance(rule, dict) or rule.get("protocol") not in ("tcp", "udp", "icmp"):
            raise unprocessable("Each rule needs a protocol: tcp, udp or icmp.")
        ports = "0" if rule["protocol"] == "icmp" else str(rule.get("ports") or "")
        if not ports:
            raise unprocessable(f"A {rule['protocol']} rule needs ports (a port, a range or 0).")
        peers = rule.get(side) or {}
        if not isinstance(peers, dict):
            raise unprocessable(f"{side} must be an object.")
        clean = {k: list(peers.get(k) or []) for k in _PEERS if peers.get(k)}
        if "droplet_ids" in clean:
            clean["droplet_ids"] = [as_int(i, "droplet_ids") for i in clean["droplet_ids"]]
        for tag in clean.get("tags", []):
            ensure_tag(cloud, tag)
        rules.append({"protocol": rule["protocol"], "ports": ports, side: clean})
    return rules


def firewall_settings(cloud: CloudState, fw: JSON, body: JSON) -> None:
    """Apply a create or PUT body (the whole firewall)."""
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise unprocessable("Firewall name must be a valid hostname.")
    inbound = _rules(cloud, body.get("inbound_rules"), "sources")
    outbound = _rules(cloud, body.get("outbound_rules"), "destinations")
    if not inbound and not outbound:
        raise unprocessable("At least one rule must be specified.")
    tags = body.get("tags") or []
    for tag in tags:
        ensure_tag(cloud, tag)
    fw.update(
        name=name,
        inbound_rules=inbound,
        outbound_rules=outbound,
        droplet_ids=[as_int(i, "droplet_ids") for i in body.get("droplet_ids") or []],
        tags=list(tags),
    )


def create_firewall(cloud: CloudState, body: JSON) -> JSON:
    """A new firewall from a create request."""
    fw: JSON = {"id": str(uuid.uuid4()), "created_at": iso(time.time())}
    firewall_settings(cloud, fw, body)
    cloud._state["firewalls"][fw["id"]] = fw
    cloud._dirty = True
    return fw
