"""Tags: created on first use, on droplets and images."""

from __future__ import annotations

import time
from typing import Any

from scaler.local.api.base import JSON, as_object, iso, maybe_int, not_found, unprocessable
from scaler.local.api.catalog import TAG_RE
from scaler.local.api.models.state import CloudState


def tag_json(cloud: CloudState, name: str) -> JSON:
    """A tag and the count of what carries it, as the API shows it."""
    droplets = [d for d in cloud._state["droplets"].values() if name in d["tags"]]
    images = [i for i in cloud._state["images"].values() if name in i["tags"]]
    base = f"/v2/droplets/{droplets[-1]['id']}" if droplets else ""
    return {
        "name": name,
        "resources": {
            "count": len(droplets) + len(images),
            "last_tagged_uri": base,
            "droplets": {"count": len(droplets), "last_tagged_uri": base},
            "images": {"count": len(images)},
            "volumes": {"count": 0},
            "volume_snapshots": {"count": 0},
            "databases": {"count": 0},
        },
    }


def ensure_tag(cloud: CloudState, name: Any) -> None:
    """Create the tag unless it exists (422 for a name DigitalOcean refuses)."""
    if not isinstance(name, str) or not TAG_RE.fullmatch(name):
        raise unprocessable(
            f"Tag name {name!r} is invalid: use at most 255 letters, digits, '_', '-' and ':'."
        )
    if name not in cloud._state["tags"]:
        cloud._state["tags"][name] = {"name": name, "created_at": iso(time.time())}
        cloud._dirty = True


def tag_resources(cloud: CloudState, name: str, body: Any, *, add: bool) -> None:
    """Tag (add) or untag the droplets and images a body's `resources` lists."""
    if name not in cloud._state["tags"]:
        raise not_found()
    resources = as_object(body).get("resources")
    if not isinstance(resources, list) or not resources:
        raise unprocessable("resources must be a non-empty list of {resource_id, resource_type}.")
    holders = []
    for res in resources:
        kind = res.get("resource_type") if isinstance(res, dict) else None
        ident = maybe_int(str(res.get("resource_id"))) if isinstance(res, dict) else None
        table = {"droplet": "droplets", "image": "images"}.get(str(kind))
        if table is None:
            raise unprocessable(f"The local cloud tags droplets and images, not {kind!r}.")
        holder = cloud._state[table].get(ident)
        if holder is None:
            raise unprocessable(f"The {kind} {ident} was not found.")
        holders.append(holder)
    for holder in holders:
        if add and name not in holder["tags"]:
            holder["tags"].append(name)
        elif not add and name in holder["tags"]:
            holder["tags"].remove(name)
    cloud._dirty = True


def delete_tag(cloud: CloudState, name: str) -> None:
    """Remove a tag from the cloud and from everything carrying it."""
    if cloud._state["tags"].pop(name, None) is None:
        raise not_found()
    for holder in [*cloud._state["droplets"].values(), *cloud._state["images"].values()]:
        if name in holder["tags"]:
            holder["tags"].remove(name)
    cloud._dirty = True
