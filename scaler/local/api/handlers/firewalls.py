"""Firewalls under /v2/firewalls, and the droplets they cover."""

from __future__ import annotations

from scaler.local.api.base import as_int, as_object, unprocessable
from scaler.local.api.models.firewalls import (
    create_firewall,
    find_firewall,
    firewall_json,
    firewall_settings,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def firewalls_list(cloud: CloudState, req: Request) -> Reply:
    held = [firewall_json(f) for f in cloud._state["firewalls"].values()]
    return 200, paginate(req, "firewalls", held)


def firewalls_create(cloud: CloudState, req: Request) -> Reply:
    return 202, {"firewall": firewall_json(create_firewall(cloud, as_object(req.body)))}


def firewalls_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"firewall": firewall_json(find_firewall(cloud, req.params["firewall_id"]))}


def firewalls_update(cloud: CloudState, req: Request) -> Reply:
    fw = find_firewall(cloud, req.params["firewall_id"])
    firewall_settings(cloud, fw, as_object(req.body))
    cloud._dirty = True
    return 200, {"firewall": firewall_json(fw)}


def firewalls_delete(cloud: CloudState, req: Request) -> Reply:
    fw = find_firewall(cloud, req.params["firewall_id"])
    del cloud._state["firewalls"][fw["id"]]
    cloud._dirty = True
    return 204, None


def _droplet_ids(cloud: CloudState, req: Request) -> list[int]:
    ids = as_object(req.body).get("droplet_ids")
    if not isinstance(ids, list) or not ids:
        raise unprocessable("droplet_ids must list at least one droplet id.")
    found = [as_int(i, "droplet_ids") for i in ids]
    missing = [i for i in found if i not in cloud._state["droplets"]]
    if missing:
        raise unprocessable(f"Droplets not found: {', '.join(map(str, missing))}.")
    return found


def firewalls_add_droplets(cloud: CloudState, req: Request) -> Reply:
    fw = find_firewall(cloud, req.params["firewall_id"])
    for droplet_id in _droplet_ids(cloud, req):
        if droplet_id not in fw["droplet_ids"]:
            fw["droplet_ids"].append(droplet_id)
    cloud._dirty = True
    return 204, None


def firewalls_remove_droplets(cloud: CloudState, req: Request) -> Reply:
    fw = find_firewall(cloud, req.params["firewall_id"])
    remove = set(_droplet_ids(cloud, req))
    fw["droplet_ids"] = [i for i in fw["droplet_ids"] if i not in remove]
    cloud._dirty = True
    return 204, None
