"""Actions of every resource, under /v2/actions."""

from __future__ import annotations

from scaler.local.api.models.actions import action_json, find_action
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def actions_list(cloud: CloudState, req: Request) -> Reply:
    actions = [action_json(a) for a in cloud._state["actions"].values()]
    return 200, paginate(req, "actions", actions)


def actions_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"action": action_json(find_action(cloud, req.params["action_id"]))}
