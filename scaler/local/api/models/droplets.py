"""Droplets: their records, their JSON, their actions and what those actions do to the machines."""

from __future__ import annotations

import time

from scaler.local.api.base import JSON, maybe_int, not_found, unprocessable
from scaler.local.api.catalog import DROPLET_ACTIONS, NAME_RE, SIZES, region_json, size_json
from scaler.local.api.models.actions import busy, start_action
from scaler.local.api.models.images import image_json, take_snapshot
from scaler.local.api.models.state import CloudState

PENDING_EVENT = "Droplet already has a pending event."


def droplet_json(cloud: CloudState, d: JSON) -> JSON:
    """A droplet as the API shows it (its image as it is now, when that is a snapshot)."""
    memory, vcpus, disk = SIZES[d["size"]][:3]
    image_now = cloud._state["images"].get(d["image"]["id"])
    image = image_json(image_now) if image_now else dict(d["image"])
    locked = any(
        a["status"] == "in-progress"
        and a["resource_type"] == "droplet"
        and a["resource_id"] == d["id"]
        and a["type"] != "create"
        for a in cloud._state["actions"].values()
    )
    net = cloud.network
    return {
        "id": d["id"],
        "name": d["name"],
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
        "locked": locked,
        "status": d["status"],
        "kernel": None,
        "created_at": d["created_at"],
        "features": list(d["features"]),
        "backup_ids": [],
        "next_backup_window": None,
        "snapshot_ids": list(d["snapshot_ids"]),
        "image": image,
        "volume_ids": [],
        "size": size_json(d["size"]),
        "size_slug": d["size"],
        "networks": {
            "v4": [
                {
                    "ip_address": d["public_ip"],
                    "netmask": "255.255.255.0",
                    "gateway": f"127.{net}.1.254",
                    "type": "public",
                },
                {
                    "ip_address": d["private_ip"],
                    "netmask": "255.255.255.0",
                    "gateway": f"127.{net}.2.254",
                    "type": "private",
                },
            ],
            "v6": [],
        },
        "region": region_json(d["region"]),
        "tags": list(d["tags"]),
        "vpc_uuid": d["vpc_uuid"],
    }


def find_droplet(cloud: CloudState, value: str, *, archived: bool = False) -> JSON:
    """A droplet's record by id (404 when there is none; a deleted one only when `archived`)."""
    droplet: JSON | None = cloud._state["droplets"].get(maybe_int(value))
    if droplet is None or (droplet.get("gone_at") and not archived):
        raise not_found()
    return droplet


def live_droplets(cloud: CloudState) -> list[JSON]:
    """The droplets that are not being deleted."""
    return [d for d in cloud._state["droplets"].values() if not d.get("gone_at")]


def destroy_droplet(cloud: CloudState, droplet: JSON) -> None:
    """Remove a droplet: its machine, its record, and the IPs' and balancers' references to it."""
    did = droplet["id"]
    cloud.machines.destroy(did)
    if cloud.delays.droplet_delete > 0:
        # DigitalOcean shows a deleted droplet as `archive` for a while before it is gone.
        droplet.update(status="archive", gone_at=time.time() + cloud.delays.droplet_delete)
    else:
        del cloud._state["droplets"][did]
    for ip in cloud._state["ips"].values():
        if ip["droplet_id"] == did:
            ip["droplet_id"] = None
    for holder in [*cloud._state["lbs"].values(), *cloud._state["firewalls"].values()]:
        if did in holder["droplet_ids"]:
            holder["droplet_ids"].remove(did)
    cloud._dirty = True


def check_action(cloud: CloudState, droplet: JSON, body: JSON) -> str:
    """The action type a body asks of a droplet, or the 422 DigitalOcean answers."""
    kind = body.get("type")
    if kind not in DROPLET_ACTIONS:
        raise unprocessable(
            f"The local cloud does not support the droplet action {kind!r} "
            f"(have: {', '.join(sorted(DROPLET_ACTIONS))})."
        )
    if busy(cloud, "droplet", droplet["id"]):
        raise unprocessable(PENDING_EVENT)
    if kind == "rename" and (
        not isinstance(body.get("name"), str) or not NAME_RE.fullmatch(body["name"])
    ):
        raise unprocessable(
            "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
        )
    if kind == "resize":
        size = body.get("size")
        if size not in SIZES:
            raise unprocessable("You specified an invalid size for Droplet resize.")
        if droplet["status"] != "off":
            raise unprocessable("Droplet must be powered off before it can be resized.")
        if SIZES[size][2] < SIZES[droplet["size"]][2]:
            raise unprocessable("This size is not available because it has a smaller disk.")
    return str(kind)


def droplet_action(cloud: CloudState, droplet: JSON, body: JSON) -> JSON:
    """Start the action a body asks of a droplet."""
    kind = check_action(cloud, droplet, body)
    delays = cloud.delays
    delay = delays.action
    if kind == "snapshot":
        # minutes per GB on DigitalOcean: the droplet's image size stands for what it holds
        size = float(droplet["image"].get("size_gigabytes") or 1.0)
        delay = delays.snapshot + delays.snapshot_per_gb * size
    params = {k: body[k] for k in ("name", "size") if k in body}
    return start_action(cloud, kind, "droplet", droplet["id"], droplet["region"], delay, **params)


def apply_action(cloud: CloudState, action: JSON) -> bool:
    """A droplet action's effect on the droplet and its machine; False when the droplet is gone."""
    kind, params = action["type"], action["params"]
    droplet = cloud._state["droplets"].get(action["resource_id"])
    if droplet is None:
        return False
    did = droplet["id"]
    if kind == "create":
        image: str | int = droplet["image"]["slug"] or droplet["image"]["id"]
        cloud.machines.create(
            did,
            droplet["public_ip"],
            droplet["private_ip"],
            image,
            droplet["keys"],
            droplet["user_data"],
            hostname=droplet["name"],
        )
        droplet["machine"] = True
        droplet["status"] = "active"
    elif kind in ("shutdown", "power_off"):
        cloud.machines.halt(did)
        droplet["status"] = "off"
    elif kind == "power_on":
        cloud.machines.boot(did)
        droplet["status"] = "active"
    elif kind in ("reboot", "power_cycle"):
        cloud.machines.halt(did)
        cloud.machines.boot(did)
        droplet["status"] = "active"
    elif kind == "snapshot":
        take_snapshot(cloud, droplet, params.get("name"), action["started_at"])
    elif kind == "rename":
        droplet["name"] = params["name"]
    elif kind == "resize":
        droplet["size"] = params["size"]
    elif kind in ("enable_backups", "enable_ipv6"):
        feature = {"enable_backups": "backups", "enable_ipv6": "ipv6"}[kind]
        if feature not in droplet["features"]:
            droplet["features"].append(feature)
    elif kind == "disable_backups" and "backups" in droplet["features"]:
        droplet["features"].remove("backups")
    return True
