"""Droplets and their actions and snapshots, under /v2/droplets."""

from __future__ import annotations

import time

from scaler.local.api.base import (
    DROPLET_LIMIT,
    ApiError,
    as_object,
    iso,
    not_found,
    unprocessable,
)
from scaler.local.api.catalog import (
    DEFAULT_REGION,
    NAME_RE,
    REGIONS,
    SIZES,
    vpc_uuid,
)
from scaler.local.api.models.actions import action_json, find_action, start_action
from scaler.local.api.models.droplets import (
    check_action,
    destroy_droplet,
    droplet_action,
    droplet_json,
    find_droplet,
    live_droplets,
)
from scaler.local.api.models.images import (
    any_image,
)
from scaler.local.api.models.keys import find_key
from scaler.local.api.models.state import CloudState
from scaler.local.api.models.tags import ensure_tag
from scaler.local.api.routing import Reply, Request, paginate


def droplets_list(cloud: CloudState, req: Request) -> Reply:
    tag, name = req.query.get("tag_name"), req.query.get("name")
    droplets = [
        droplet_json(cloud, d)
        for d in live_droplets(cloud)
        if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)
    ]
    return 200, paginate(req, "droplets", droplets)


def droplets_create(cloud: CloudState, req: Request) -> Reply:
    body = as_object(req.body)
    many = "names" in body
    names = body.get("names") if many else [body.get("name")]
    if not isinstance(names, list) or not names or len(names) > 10:
        raise unprocessable("names must be a list of 1 to 10 droplet names.")
    for name in names:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise unprocessable(
                "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
            )
    if len(cloud._state["droplets"]) + len(names) > DROPLET_LIMIT:
        raise unprocessable(
            f"creating this/these droplet(s) will exceed your droplet limit ({DROPLET_LIMIT})"
        )
    size = body.get("size")
    if size not in SIZES:
        raise unprocessable("You specified an invalid size for Droplet creation.")
    region = body.get("region") or DEFAULT_REGION
    if region not in REGIONS:
        raise unprocessable("You specified an invalid region for Droplet creation.")
    try:
        image = any_image(cloud, body.get("image"))
    except ApiError:
        raise unprocessable("You specified an invalid image for Droplet creation.") from None
    if region not in image["regions"]:
        raise unprocessable(f"The image {image['id']} is not available in region {region}.")
    if (image["min_disk_size"] or 0) > SIZES[size][2]:
        raise unprocessable("The image you specified requires a larger disk than this size offers.")
    keys: list[str] = []
    for ident in body.get("ssh_keys") or []:
        try:
            keys.append(find_key(cloud, str(ident))["public_key"])
        except ApiError:
            raise unprocessable(f"You specified an invalid SSH key: {ident}.") from None
    tags = body.get("tags") or []
    if not isinstance(tags, list):
        raise unprocessable("tags must be a list of tag names.")
    for tag in tags:
        ensure_tag(cloud, tag)
    user_data = body.get("user_data")
    if user_data is not None and not isinstance(user_data, str):
        raise unprocessable("user_data must be a string.")
    features = ["private_networking"]
    features += [f for f in ("backups", "ipv6", "monitoring") if body.get(f)]
    used = {d["public_ip"] for d in cloud._state["droplets"].values()}
    created, links = [], []
    for name in names:
        droplet_id = cloud._next("droplet")
        k, public_ip = cloud._address("droplet_addr", 1, used)
        used.add(public_ip)
        now = time.time()
        droplet = {
            "id": droplet_id,
            "name": name,
            "size": size,
            "region": region,
            "image": image,
            "status": "new",
            "created_at": iso(now),
            "features": list(features),
            "snapshot_ids": [],
            "tags": list(dict.fromkeys(tags)),
            "vpc_uuid": body.get("vpc_uuid") or vpc_uuid(region),
            "public_ip": public_ip,
            "private_ip": f"127.{cloud.network}.2.{k}",
            "keys": keys,
            "user_data": user_data,
            "machine": False,
        }
        cloud._state["droplets"][droplet_id] = droplet
        action = start_action(
            cloud, "create", "droplet", droplet_id, region, cloud.delays.droplet_boot
        )
        created.append(droplet_json(cloud, droplet))
        links.append(
            {"id": action["id"], "rel": "create", "href": f"{req.base}/v2/actions/{action['id']}"}
        )
    cloud._dirty = True
    if many:
        return 202, {"droplets": created, "links": {"actions": links}}
    return 202, {"droplet": created[0], "links": {"actions": links}}


def droplets_delete_by_tag(cloud: CloudState, req: Request) -> Reply:
    tag = req.query.get("tag_name")
    if not tag:
        raise unprocessable("tag_name is required to delete droplets by tag.")
    for droplet in [d for d in live_droplets(cloud) if tag in d["tags"]]:
        destroy_droplet(cloud, droplet)
    return 204, None


def droplets_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {
        "droplet": droplet_json(cloud, find_droplet(cloud, req.params["droplet_id"], archived=True))
    }


def droplets_delete(cloud: CloudState, req: Request) -> Reply:
    destroy_droplet(cloud, find_droplet(cloud, req.params["droplet_id"]))
    return 204, None


def droplet_snapshots(cloud: CloudState, req: Request) -> Reply:
    droplet = find_droplet(cloud, req.params["droplet_id"])
    snapshots = []
    for image_id in droplet["snapshot_ids"]:
        image = cloud._state["images"].get(image_id)
        if image is not None:
            entry = {
                k: image[k] for k in ("id", "name", "created_at", "min_disk_size", "size_gigabytes")
            }
            snapshots.append(entry | {"regions": list(image["regions"]), "type": "snapshot"})
    return 200, paginate(req, "snapshots", snapshots)


def droplet_actions_list(cloud: CloudState, req: Request) -> Reply:
    droplet = find_droplet(cloud, req.params["droplet_id"])
    actions = [
        action_json(a)
        for a in cloud._state["actions"].values()
        if a["resource_type"] == "droplet" and a["resource_id"] == droplet["id"]
    ]
    return 200, paginate(req, "actions", actions)


def droplet_actions_post(cloud: CloudState, req: Request) -> Reply:
    droplet = find_droplet(cloud, req.params["droplet_id"])
    return 201, {"action": action_json(droplet_action(cloud, droplet, as_object(req.body)))}


def droplet_actions_by_tag(cloud: CloudState, req: Request) -> Reply:
    tag = req.query.get("tag_name")
    if not tag:
        raise unprocessable("tag_name is required for actions by tag.")
    body = as_object(req.body)
    droplets = [d for d in live_droplets(cloud) if tag in d["tags"]]
    for droplet in droplets:
        check_action(cloud, droplet, body)
    actions = [action_json(droplet_action(cloud, d, body)) for d in droplets]
    return 201, {"actions": actions}


def droplet_actions_get(cloud: CloudState, req: Request) -> Reply:
    droplet = find_droplet(cloud, req.params["droplet_id"])
    action = find_action(cloud, req.params["action_id"])
    if action["resource_type"] != "droplet" or action["resource_id"] != droplet["id"]:
        raise not_found()
    return 200, {"action": action_json(action)}
