"""Floating and reserved IPs: one pool of addresses, shown under both names."""

from __future__ import annotations

from scaler.local.api.base import JSON, ip_int, not_found, project_id
from scaler.local.api.catalog import region_json
from scaler.local.api.models.actions import pending, start_action
from scaler.local.api.models.droplets import droplet_json
from scaler.local.api.models.state import CloudState

# The action resource types of an IP: the same address answers under either.
IP_KINDS = ("floating_ip", "reserved_ip")


def ip_json(cloud: CloudState, ip: JSON, kind: str) -> JSON:
    """An IP as the API shows it under kind (floating_ip or reserved_ip)."""
    droplet = cloud._state["droplets"].get(ip["droplet_id"]) if ip["droplet_id"] else None
    return {
        "ip": ip["ip"],
        "region": region_json(ip["region"]),
        "droplet": droplet_json(cloud, droplet) if droplet else None,
        "locked": pending(cloud, kind, ip_int(ip["ip"])),
        "project_id": project_id(),
    }


def find_ip(cloud: CloudState, value: str) -> JSON:
    """An IP's record by address (404 when there is none)."""
    ip: JSON | None = cloud._state["ips"].get(value)
    if ip is None:
        raise not_found()
    return ip


def ip_pending(cloud: CloudState, ip: JSON) -> bool:
    """Whether an assign or unassign of the address is in progress, under either name."""
    return any(pending(cloud, kind, ip_int(ip["ip"])) for kind in IP_KINDS)


def ip_action(cloud: CloudState, ip: JSON, kind: str, action: str, droplet_id: int | None) -> JSON:
    """Start an assign or unassign of the address."""
    return start_action(
        cloud,
        action,
        kind,
        ip_int(ip["ip"]),
        ip["region"],
        cloud.delays.action,
        ip=ip["ip"],
        droplet_id=droplet_id,
    )


def apply_action(cloud: CloudState, action: JSON) -> bool:
    """An IP action's effect: the address moves; False when the IP or its droplet is gone."""
    params = action["params"]
    ip = cloud._state["ips"].get(params["ip"])
    if ip is None:
        return False
    target = params.get("droplet_id")
    if action["type"] == "assign" and target not in cloud._state["droplets"]:
        return False
    ip["droplet_id"] = target if action["type"] == "assign" else None
    return True
