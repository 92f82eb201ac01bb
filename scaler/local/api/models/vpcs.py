"""VPCs: each region's default one and those made through the API (ip_range is data only)."""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Any

from scaler.local.api.base import JSON, iso, not_found, unprocessable
from scaler.local.api.catalog import REGIONS, vpc_uuid
from scaler.local.api.models.state import CloudState

# Where VPC ranges are handed out from when a create names none, as DigitalOcean does (10.x/20).
_POOL = ipaddress.IPv4Network("10.100.0.0/14")


def vpc_json(vpc: JSON) -> JSON:
    """A VPC as the API shows it."""
    return {k: vpc[k] for k in ("id", "urn", "name", "description", "region", "ip_range")} | {
        "default": vpc["default"],
        "created_at": vpc["created_at"],
    }


def default_vpc(region: str) -> JSON:
    """A region's default VPC (every region has one)."""
    index = list(REGIONS).index(region) if region in REGIONS else 0
    ident = vpc_uuid(region)
    return {
        "id": ident,
        "urn": f"do:vpc:{ident}",
        "name": f"default-{region}",
        "description": "",
        "region": region,
        "ip_range": f"10.{index + 10}.0.0/16",
        "default": True,
        "created_at": "2024-01-02T03:04:05Z",
    }


def find_vpc(cloud: CloudState, value: str) -> JSON:
    """A VPC by id: one made through the API, or a region's default (404 when neither)."""
    vpc: JSON | None = cloud._state["vpcs"].get(value)
    if vpc is not None:
        return vpc
    for region in REGIONS:
        if value == vpc_uuid(region):
            return default_vpc(region)
    raise not_found()


def _free_range(cloud: CloudState) -> str:
    used = [ipaddress.IPv4Network(v["ip_range"]) for v in cloud._state["vpcs"].values()]
    for net in _POOL.subnets(new_prefix=20):
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise unprocessable("No free ip_range is left for a new VPC; give one.")


def create_vpc(cloud: CloudState, body: JSON) -> JSON:
    """A new VPC from a create request (name, region, description, ip_range)."""
    name, region = body.get("name"), body.get("region")
    if not isinstance(name, str) or not name:
        raise unprocessable("name is required.")
    if any(v["name"] == name for v in cloud._state["vpcs"].values()):
        raise unprocessable(f"A VPC with the name {name!r} already exists.")
    if region not in REGIONS:
        raise unprocessable(f"You specified an invalid region: {region!r}.")
    ip_range: Any = body.get("ip_range") or _free_range(cloud)
    try:
        net = ipaddress.IPv4Network(str(ip_range))
    except ValueError:
        raise unprocessable(f"ip_range {ip_range!r} is not a valid IPv4 CIDR block.") from None
    if not net.is_private or not 16 <= net.prefixlen <= 28:
        raise unprocessable("ip_range must be a private range between /16 and /28.")
    for other in cloud._state["vpcs"].values():
        if net.overlaps(ipaddress.IPv4Network(other["ip_range"])):
            raise unprocessable(f"ip_range {net} overlaps the VPC {other['name']}.")
    ident = str(uuid.uuid4())
    vpc = {
        "id": ident,
        "urn": f"do:vpc:{ident}",
        "name": name,
        "description": str(body.get("description") or ""),
        "region": region,
        "ip_range": str(net),
        "default": False,
        "created_at": iso(time.time()),
    }
    cloud._state["vpcs"][ident] = vpc
    cloud._dirty = True
    return vpc


def vpc_members(cloud: CloudState, vpc: JSON) -> list[JSON]:
    """The droplets and load balancers in a VPC."""
    return [
        r
        for r in [*cloud._state["droplets"].values(), *cloud._state["lbs"].values()]
        if r.get("vpc_uuid") == vpc["id"]
    ]
