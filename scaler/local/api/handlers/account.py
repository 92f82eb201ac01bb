"""The account: limits and who the token belongs to."""

from __future__ import annotations

import uuid

from scaler.local.api.base import (
    DROPLET_LIMIT,
    project_id,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request


def account(cloud: CloudState, req: Request) -> Reply:
    account = {
        "droplet_limit": DROPLET_LIMIT,
        "floating_ip_limit": 25,
        "email": "scaler@localhost",
        "name": "scaler local cloud",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "scaler-local-account")),
        "email_verified": True,
        "status": "active",
        "status_message": "",
        "team": {"uuid": project_id(), "name": "scaler local"},
    }
    return 200, {"account": account}
