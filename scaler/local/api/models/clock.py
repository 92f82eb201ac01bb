"""Time: complete every action whose delay has passed, in order, with its family's effect."""

from __future__ import annotations

import time
from collections.abc import Callable

from scaler.local.api.base import JSON, iso
from scaler.local.api.models import droplets, images, ips
from scaler.local.api.models.state import CloudState
from scaler.local.machines import MachineError

_EFFECTS: dict[str, Callable[[CloudState, JSON], bool]] = {
    "droplet": droplets.apply_action,
    "image": images.apply_action,
    "floating_ip": ips.apply_action,
    "reserved_ip": ips.apply_action,
}


def advance(cloud: CloudState) -> None:
    """Complete every action whose time has come, in order, with its effects."""
    now = time.time()
    droplets_held = cloud._state["droplets"]
    for did in [i for i, d in droplets_held.items() if d.get("gone_at") and d["gone_at"] <= now]:
        del droplets_held[did]
        cloud._dirty = True
    due = [
        a
        for a in cloud._state["actions"].values()
        if a["status"] == "in-progress" and a["done_at"] is not None and a["done_at"] <= now
    ]
    for action in sorted(due, key=lambda a: (a["done_at"], a["id"])):
        if action["type"] == "create" and cloud.faults.is_stalled(action["resource_id"]):
            continue  # a stalled droplet stays new, its creation in progress, until reset
        ok = action["outcome"] == "completed"
        if ok:
            try:
                ok = _EFFECTS.get(action["resource_type"], droplets.apply_action)(cloud, action)
            except (MachineError, OSError) as err:
                cloud._warn(f"action {action['id']} ({action['type']}) errored: {err}")
                ok = False
        action["status"] = "completed" if ok else "errored"
        action["completed_at"] = iso(action["done_at"])
        cloud._dirty = True
