"""Images: the base images of the catalogue and private snapshots (also listed as /v2/snapshots)."""

from __future__ import annotations

import time
from typing import Any

from scaler.local.api.base import JSON, iso, maybe_int, not_found
from scaler.local.api.catalog import BASE_IMAGES, SIZES, base_image_json
from scaler.local.api.models.state import CloudState


def image_json(image: JSON) -> JSON:
    """A private (snapshot) image as the API shows it."""
    return {
        "id": image["id"],
        "name": image["name"],
        "distribution": image["distribution"],
        "slug": None,
        "public": False,
        "regions": list(image["regions"]),
        "created_at": image["created_at"],
        "min_disk_size": image["min_disk_size"],
        "type": "snapshot",
        "size_gigabytes": image["size_gigabytes"],
        "description": image["description"],
        "tags": list(image["tags"]),
        "status": "available",
        "error_message": "",
    }


def snapshot_json(image: JSON) -> JSON:
    """A private image as /v2/snapshots shows it."""
    return {
        "id": str(image["id"]),
        "name": image["name"],
        "created_at": image["created_at"],
        "regions": list(image["regions"]),
        "min_disk_size": image["min_disk_size"],
        "size_gigabytes": image["size_gigabytes"],
        "resource_id": str(image["droplet_id"]),
        "resource_type": "droplet",
        "tags": list(image["tags"]),
    }


def any_image(cloud: CloudState, value: Any) -> JSON:
    """An image as JSON, by id or slug (base or snapshot)."""
    key = maybe_int(value)
    for slug in BASE_IMAGES:
        if key in (slug, BASE_IMAGES[slug][0]):
            return base_image_json(slug)
    image = cloud._state["images"].get(key)
    if image is None:
        raise not_found()
    return image_json(image)


def listed(image: JSON) -> bool:
    """Whether image lists show the image yet (Delays.image_listing)."""
    return bool(image.get("listed_at", 0) <= time.time())


def private_image(cloud: CloudState, value: str) -> JSON:
    """A snapshot's stored record by id (404 for base images and unknown ids)."""
    image: JSON | None = cloud._state["images"].get(maybe_int(value))
    if image is None:
        raise not_found()
    return image


def delete_image(cloud: CloudState, image: JSON) -> None:
    """Remove a snapshot, its files and the droplet's reference to it."""
    cloud.machines.delete_image(image["id"])
    del cloud._state["images"][image["id"]]
    for droplet in cloud._state["droplets"].values():
        if image["id"] in droplet["snapshot_ids"]:
            droplet["snapshot_ids"].remove(image["id"])
    cloud._dirty = True


def take_snapshot(
    cloud: CloudState, droplet: JSON, name: str | None, started_at: str | None = None
) -> None:
    """A snapshot action's effect: the droplet's root copied into a new private image.

    Its created_at is the action's started_at, as DigitalOcean's (the real provider finds a
    droplet_snapshot's image by that equality).
    """
    image_id = cloud._next("image")
    size = cloud.machines.snapshot(droplet["id"], image_id)
    now = time.time()
    cloud._state["images"][image_id] = {
        "id": image_id,
        "name": name or f"{droplet['name']}-{int(now)}",
        "distribution": droplet["image"]["distribution"],
        "regions": [droplet["region"]],
        "created_at": started_at or iso(now),
        "min_disk_size": SIZES[droplet["size"]][2],
        "size_gigabytes": max(round(size / 1024**3, 2), 0.01),
        "description": "",
        "tags": [],
        "droplet_id": droplet["id"],
        # DigitalOcean lists a new snapshot a little after its action completed.
        "listed_at": now + cloud.delays.image_listing,
    }
    droplet["snapshot_ids"].append(image_id)


def apply_action(cloud: CloudState, action: JSON) -> bool:
    """An image action's effect (transfer adds the region); False when the image is gone."""
    held = cloud._state["images"].get(action["resource_id"])
    if held is None:
        return False
    params = action["params"]
    if action["type"] == "transfer" and params["to_region"] not in held["regions"]:
        held["regions"].append(params["to_region"])
    return True
