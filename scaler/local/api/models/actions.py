"""Actions: started, in progress for a delay, then completed or errored (see clock.advance)."""

from __future__ import annotations

import time
from typing import Any

from scaler.local.api.base import JSON, iso, maybe_int, not_found
from scaler.local.api.catalog import region_json
from scaler.local.api.models.state import CloudState


def start_action(
    cloud: CloudState,
    kind: str,
    resource_type: str,
    resource_id: int,
    region: str,
    delay: float,
    **params: Any,
) -> JSON:
    """A new in-progress action, due in `delay` seconds (faults may error or stall it)."""
    now = time.time()
    action_id = cloud._next("action")
    outcome = "completed"
    done_at: float | None = now + delay
    if resource_type == "droplet":
        droplet = cloud._state["droplets"].get(resource_id)
        if cloud.faults.action_errors(resource_id, kind):
            outcome = "errored"
        elif (
            kind == "create"
            and droplet is not None
            and cloud.faults.stalls(resource_id, droplet["name"])
        ):
            done_at = None
    action = {
        "id": action_id,
        "type": kind,
        "status": "in-progress",
        "resource_type": resource_type,
        "resource_id": resource_id,
        "region": region,
        "started_at": iso(now),
        "completed_at": None,
        "done_at": done_at,
        "outcome": outcome,
        "params": params,
    }
    cloud._state["actions"][action_id] = action
    cloud._dirty = True
    return action


def pending(cloud: CloudState, resource_type: str, resource_id: int) -> bool:
    """Whether the resource has an action in progress."""
    return any(
        a["status"] == "in-progress"
        and a["resource_type"] == resource_type
        and a["resource_id"] == resource_id
        for a in cloud._state["actions"].values()
    )


def busy(cloud: CloudState, resource_type: str, resource_id: int) -> bool:
    """Pending, or done so recently that DigitalOcean still says so (Delays.pending_after)."""
    if pending(cloud, resource_type, resource_id):
        return True
    window = cloud.delays.pending_after
    if window <= 0:
        return False
    since = time.time() - window
    return any(
        a["status"] == "completed"
        and a["resource_type"] == resource_type
        and a["resource_id"] == resource_id
        and (a["done_at"] or 0) > since
        for a in cloud._state["actions"].values()
    )


def action_json(a: JSON) -> JSON:
    """An action as the API shows it."""
    return {
        "id": a["id"],
        "status": a["status"],
        "type": a["type"],
        "started_at": a["started_at"],
        "completed_at": a["completed_at"],
        "resource_id": a["resource_id"],
        "resource_type": a["resource_type"],
        "region": region_json(a["region"]),
        "region_slug": a["region"],
    }


def find_action(cloud: CloudState, value: str) -> JSON:
    """An action by id (404 when there is none)."""
    action: JSON | None = cloud._state["actions"].get(maybe_int(value))
    if action is None:
        raise not_found()
    return action
