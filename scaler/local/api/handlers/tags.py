"""Tags and tagging, under /v2/tags."""

from __future__ import annotations

from scaler.local.api.base import (
    as_object,
    not_found,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.models.tags import delete_tag, ensure_tag, tag_json, tag_resources
from scaler.local.api.routing import Reply, Request, paginate


def tags_list(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(req, "tags", [tag_json(cloud, n) for n in cloud._state["tags"]])


def tags_create(cloud: CloudState, req: Request) -> Reply:
    name = as_object(req.body).get("name")
    ensure_tag(cloud, name)
    return 201, {"tag": tag_json(cloud, str(name))}


def tags_get(cloud: CloudState, req: Request) -> Reply:
    name = req.params["tag_id"]
    if name not in cloud._state["tags"]:
        raise not_found()
    return 200, {"tag": tag_json(cloud, name)}


def tags_delete(cloud: CloudState, req: Request) -> Reply:
    delete_tag(cloud, req.params["tag_id"])
    return 204, None


def tags_assign(cloud: CloudState, req: Request) -> Reply:
    tag_resources(cloud, req.params["tag_id"], req.body, add=True)
    return 204, None


def tags_unassign(cloud: CloudState, req: Request) -> Reply:
    tag_resources(cloud, req.params["tag_id"], req.body, add=False)
    return 204, None
