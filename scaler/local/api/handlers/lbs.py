"""Load balancers, their droplets and forwarding rules, under /v2/load_balancers."""

from __future__ import annotations

import time
import uuid

from scaler.local.api.base import (
    JSON,
    ApiError,
    as_object,
    iso,
    unprocessable,
)
from scaler.local.api.catalog import (
    REGIONS,
    vpc_uuid,
)
from scaler.local.api.models.lbs import droplet_ids, find_lb, lb_json, lb_settings, parse_rules
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def _changing(cloud: CloudState, lb: JSON) -> None:
    """Refuse a change while the last one is still applied (403), then start this one."""
    now = time.time()
    if now < float(lb.get("busy_until") or 0):
        raise ApiError(403, LB_BUSY)
    lb["busy_until"] = now + cloud.delays.lb_update


LB_BUSY = "Load balancer is currently being processed; try again when it is done."


def lbs_list(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(
        req, "load_balancers", [lb_json(cloud, lb) for lb in cloud._state["lbs"].values()]
    )


def lbs_create(cloud: CloudState, req: Request) -> Reply:
    body = as_object(req.body)
    region = body.get("region")
    if region not in REGIONS:
        raise unprocessable(f"You specified an invalid region: {region!r}.")
    used = {lb["ip"] for lb in cloud._state["lbs"].values()}
    _k, ip = cloud._address("lb_addr", 4, used)
    lb = {
        "id": str(uuid.uuid4()),
        "ip": ip,
        "region": region,
        "created_at": iso(time.time()),
        "active_at": time.time() + cloud.delays.load_balancer,
        "vpc_uuid": body.get("vpc_uuid") or vpc_uuid(region),
    }
    lb_settings(cloud, lb, body, creating=True)
    lb["busy_until"] = time.time() + cloud.delays.lb_update
    cloud._state["lbs"][lb["id"]] = lb
    cloud._dirty = True
    return 202, {"load_balancer": lb_json(cloud, lb)}


def lbs_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"load_balancer": lb_json(cloud, find_lb(cloud, req.params["lb_id"]))}


def lbs_update(cloud: CloudState, req: Request) -> Reply:
    lb = find_lb(cloud, req.params["lb_id"])
    _changing(cloud, lb)
    body = as_object(req.body)
    if body.get("region", lb["region"]) != lb["region"]:
        raise unprocessable("A load balancer cannot change region.")
    lb_settings(cloud, lb, body, creating=False)
    cloud._dirty = True
    return 200, {"load_balancer": lb_json(cloud, lb)}


def lbs_delete(cloud: CloudState, req: Request) -> Reply:
    del cloud._state["lbs"][find_lb(cloud, req.params["lb_id"])["id"]]
    cloud._dirty = True
    return 204, None


def lbs_add_droplets(cloud: CloudState, req: Request) -> Reply:
    lb = find_lb(cloud, req.params["lb_id"])
    _changing(cloud, lb)
    if lb["tag"]:
        raise unprocessable("This load balancer selects droplets by tag; tag the droplets instead.")
    for droplet_id in droplet_ids(cloud, as_object(req.body).get("droplet_ids")):
        if droplet_id not in lb["droplet_ids"]:
            lb["droplet_ids"].append(droplet_id)
    cloud._dirty = True
    return 204, None


def lbs_remove_droplets(cloud: CloudState, req: Request) -> Reply:
    lb = find_lb(cloud, req.params["lb_id"])
    _changing(cloud, lb)
    if lb["tag"]:
        raise unprocessable(
            "This load balancer selects droplets by tag; untag the droplets instead."
        )
    remove = set(droplet_ids(cloud, as_object(req.body).get("droplet_ids"), must_exist=False))
    lb["droplet_ids"] = [i for i in lb["droplet_ids"] if i not in remove]
    cloud._dirty = True
    return 204, None


def lbs_add_rules(cloud: CloudState, req: Request) -> Reply:
    lb = find_lb(cloud, req.params["lb_id"])
    _changing(cloud, lb)
    for rule in parse_rules(as_object(req.body).get("forwarding_rules")):
        if rule not in lb["forwarding_rules"]:
            lb["forwarding_rules"].append(rule)
    cloud._dirty = True
    return 204, None


def lbs_remove_rules(cloud: CloudState, req: Request) -> Reply:
    lb = find_lb(cloud, req.params["lb_id"])
    _changing(cloud, lb)
    remove = parse_rules(as_object(req.body).get("forwarding_rules"))
    kept = [r for r in lb["forwarding_rules"] if r not in remove]
    if not kept:
        raise unprocessable("A load balancer needs at least one forwarding rule.")
    lb["forwarding_rules"] = kept
    cloud._dirty = True
    return 204, None
