"""VPCs under /v2/vpcs."""

from __future__ import annotations

from scaler.local.api.base import ApiError, as_object, unprocessable
from scaler.local.api.models.state import CloudState
from scaler.local.api.models.vpcs import create_vpc, find_vpc, vpc_json, vpc_members
from scaler.local.api.routing import Reply, Request, paginate


def vpcs_list(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(req, "vpcs", [vpc_json(v) for v in cloud._state["vpcs"].values()])


def vpcs_create(cloud: CloudState, req: Request) -> Reply:
    return 201, {"vpc": vpc_json(create_vpc(cloud, as_object(req.body)))}


def vpcs_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"vpc": vpc_json(find_vpc(cloud, req.params["vpc_id"]))}


def vpcs_update(cloud: CloudState, req: Request) -> Reply:
    vpc = find_vpc(cloud, req.params["vpc_id"])
    body = as_object(req.body)
    if vpc["id"] not in cloud._state["vpcs"]:
        raise ApiError(403, "A region's default VPC cannot be changed here.")
    if req.method == "PUT" and not isinstance(body.get("name"), str):
        raise unprocessable("name is required.")
    for key in ("name", "description"):
        if key in body:
            vpc[key] = str(body[key] or "")
    cloud._dirty = True
    return 200, {"vpc": vpc_json(vpc)}


def vpcs_delete(cloud: CloudState, req: Request) -> Reply:
    vpc = find_vpc(cloud, req.params["vpc_id"])
    if vpc["default"]:
        raise ApiError(403, "A default VPC cannot be deleted.")
    if vpc_members(cloud, vpc):
        raise ApiError(409, "Can not delete VPC with members.")
    del cloud._state["vpcs"][vpc["id"]]
    cloud._dirty = True
    return 204, None
