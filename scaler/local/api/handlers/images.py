"""Images and their actions under /v2/images; snapshots under /v2/snapshots."""

from __future__ import annotations

from scaler.local.api.base import (
    JSON,
    as_object,
    unprocessable,
)
from scaler.local.api.catalog import (
    BASE_IMAGES,
    REGIONS,
    base_image_json,
)
from scaler.local.api.models.actions import action_json, find_action, start_action
from scaler.local.api.models.images import (
    any_image,
    delete_image,
    image_json,
    listed,
    private_image,
    snapshot_json,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def images_list(cloud: CloudState, req: Request) -> Reply:
    private = req.query.get("private", "").lower() == "true"
    kind = req.query.get("type")
    tag = req.query.get("tag_name")
    images: list[JSON] = []
    if not private and kind in (None, "distribution") and tag is None:
        images += [base_image_json(slug) for slug in BASE_IMAGES]
    if kind in (None, "snapshot"):
        images += [
            image_json(i)
            for i in cloud._state["images"].values()
            if listed(i)
            if tag is None or tag in i["tags"]
        ]
    return 200, paginate(req, "images", images)


def images_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"image": any_image(cloud, req.params["image_id"])}


def images_update(cloud: CloudState, req: Request) -> Reply:
    image = private_image(cloud, req.params["image_id"])
    body = as_object(req.body)
    for field in ("name", "description", "distribution"):
        if field in body:
            if not isinstance(body[field], str):
                raise unprocessable(f"{field} must be a string.")
            image[field] = body[field]
    cloud._dirty = True
    return 200, {"image": image_json(image)}


def images_delete(cloud: CloudState, req: Request) -> Reply:
    delete_image(cloud, private_image(cloud, req.params["image_id"]))
    return 204, None


def image_actions_list(cloud: CloudState, req: Request) -> Reply:
    image = any_image(cloud, req.params["image_id"])
    actions = [
        action_json(a)
        for a in cloud._state["actions"].values()
        if a["resource_type"] == "image" and a["resource_id"] == image["id"]
    ]
    return 200, paginate(req, "actions", actions)


def image_actions_post(cloud: CloudState, req: Request) -> Reply:
    image = private_image(cloud, req.params["image_id"])
    body = as_object(req.body)
    if body.get("type") != "transfer":
        raise unprocessable("The local cloud supports the image action type 'transfer' only.")
    region = body.get("region")
    if region not in REGIONS:
        raise unprocessable(f"You specified an invalid region: {region!r}.")
    if region in image["regions"]:
        raise unprocessable(f"The image is already available in {region}.")
    delays = cloud.delays
    delay = delays.transfer + delays.transfer_per_gb * float(image["size_gigabytes"])
    action = start_action(
        cloud,
        "transfer",
        "image",
        image["id"],
        image["regions"][0],
        delay,
        to_region=region,
    )
    return 201, {"action": action_json(action)}


def image_actions_get(cloud: CloudState, req: Request) -> Reply:
    # By action id alone: Packer 1.6.6 asks for /images/<transfer action>/actions/<snapshot action>.
    return 200, {"action": action_json(find_action(cloud, req.params["action_id"]))}


def snapshots_list(cloud: CloudState, req: Request) -> Reply:
    kind = req.query.get("resource_type")
    snapshots = (
        []
        if kind == "volume"
        else [snapshot_json(i) for i in cloud._state["images"].values() if listed(i)]
    )
    return 200, paginate(req, "snapshots", snapshots)


def snapshots_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"snapshot": snapshot_json(private_image(cloud, req.params["snapshot_id"]))}


def snapshots_delete(cloud: CloudState, req: Request) -> Reply:
    delete_image(cloud, private_image(cloud, req.params["snapshot_id"]))
    return 204, None
