"""Floating IPs and reserved IPs: the same handlers under both paths."""

from __future__ import annotations

from scaler.local.api.base import (
    JSON,
    as_int,
    as_object,
    ip_int,
    project_id,
    unprocessable,
)
from scaler.local.api.catalog import (
    REGIONS,
)
from scaler.local.api.models.actions import action_json, busy, find_action
from scaler.local.api.models.droplets import PENDING_EVENT
from scaler.local.api.models.ips import IP_KINDS, find_ip, ip_action, ip_json, ip_pending
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Handler, Reply, Request, paginate


def ip_handlers(kind: str) -> dict[str, Handler]:
    """The handlers of /v2/{kind}s (floating_ip or reserved_ip), by operation name."""

    def _list(cloud: CloudState, req: Request) -> Reply:
        ips = [ip_json(cloud, ip, kind) for ip in cloud._state["ips"].values()]
        return 200, paginate(req, f"{kind}s", ips)

    def _create(cloud: CloudState, req: Request) -> Reply:
        body = as_object(req.body)
        droplet = None
        if body.get("droplet_id") is not None:
            droplet = cloud._state["droplets"].get(as_int(body["droplet_id"], "droplet_id"))
            if droplet is None:
                raise unprocessable(f"Droplet {body['droplet_id']} was not found.")
            region = droplet["region"]
            if busy(cloud, "droplet", droplet["id"]):
                raise unprocessable(PENDING_EVENT)
        else:
            region = body.get("region")
            if region not in REGIONS:
                raise unprocessable(f"You specified an invalid region: {region!r}.")
        used = set(cloud._state["ips"])
        _k, address = cloud._address("ip_addr", 3, used)
        ip = {"ip": address, "region": region, "droplet_id": None}
        cloud._state["ips"][address] = ip
        cloud._dirty = True
        links: JSON = {}
        if droplet is not None:
            action = ip_action(cloud, ip, kind, "assign", droplet["id"])
            links = {
                "droplets": [
                    {
                        "id": droplet["id"],
                        "rel": "droplet",
                        "href": f"{req.base}/v2/droplets/{droplet['id']}",
                    }
                ],
                "actions": [
                    {
                        "id": action["id"],
                        "rel": "assign_ip",
                        "href": f"{req.base}/v2/actions/{action['id']}",
                    }
                ],
            }
        return 202, {kind: ip_json(cloud, ip, kind), "links": links}

    def _get(cloud: CloudState, req: Request) -> Reply:
        return 200, {kind: ip_json(cloud, find_ip(cloud, req.params[kind]), kind)}

    def _delete(cloud: CloudState, req: Request) -> Reply:
        del cloud._state["ips"][find_ip(cloud, req.params[kind])["ip"]]
        cloud._dirty = True
        return 204, None

    def _actions(cloud: CloudState, req: Request) -> Reply:
        number = ip_int(find_ip(cloud, req.params[kind])["ip"])
        actions = [
            action_json(a)
            for a in cloud._state["actions"].values()
            if a["resource_type"] in IP_KINDS and a["resource_id"] == number
        ]
        return 200, paginate(req, "actions", actions)

    def _act(cloud: CloudState, req: Request) -> Reply:
        ip = find_ip(cloud, req.params[kind])
        body = as_object(req.body)
        kind_of = body.get("type")
        if kind_of not in ("assign", "unassign"):
            raise unprocessable("The action type must be 'assign' or 'unassign'.")
        if ip_pending(cloud, ip):
            raise unprocessable(f"The {kind.replace('_', ' ')} already has a pending event.")
        target = None
        if kind_of == "assign":
            target = as_int(body.get("droplet_id"), "droplet_id")
            droplet = cloud._state["droplets"].get(target)
            if droplet is None:
                raise unprocessable(f"Droplet {target} was not found.")
            if busy(cloud, "droplet", target):
                raise unprocessable(PENDING_EVENT)
            if droplet["region"] != ip["region"]:
                raise unprocessable(
                    f"The droplet is in {droplet['region']}, the IP in {ip['region']}: "
                    "they must match."
                )
        elif ip["droplet_id"] is None:
            raise unprocessable(f"The {kind.replace('_', ' ')} is not assigned to a droplet.")
        action = ip_action(cloud, ip, kind, kind_of, target)
        return 201, {"action": action_json(action) | {"project_id": project_id()}}

    def _act_get(cloud: CloudState, req: Request) -> Reply:
        find_ip(cloud, req.params[kind])
        action = find_action(cloud, req.params["action_id"])
        return 200, {"action": action_json(action) | {"project_id": project_id()}}

    return {
        "list": _list,
        "create": _create,
        "get": _get,
        "delete": _delete,
        "actions": _actions,
        "act": _act,
        "act_get": _act_get,
    }
