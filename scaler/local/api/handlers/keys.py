"""SSH keys under /v2/account/keys."""

from __future__ import annotations

import binascii

from scaler.local.api.base import (
    as_object,
    unprocessable,
)
from scaler.local.api.catalog import (
    fingerprint,
)
from scaler.local.api.models.keys import find_key, key_json
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def keys_list(cloud: CloudState, req: Request) -> Reply:
    keys = [key_json(k) for k in cloud._state["keys"].values()]
    return 200, paginate(req, "ssh_keys", keys)


def keys_create(cloud: CloudState, req: Request) -> Reply:
    body = as_object(req.body)
    name, public_key = body.get("name"), body.get("public_key")
    if not isinstance(name, str) or not name:
        raise unprocessable("Name is required.")
    if not isinstance(public_key, str):
        raise unprocessable("Public Key is required.")
    try:
        print_ = fingerprint(public_key)
    except (ValueError, binascii.Error):
        raise unprocessable("Key invalid, type not supported") from None
    if any(k["fingerprint"] == print_ for k in cloud._state["keys"].values()):
        raise unprocessable("SSH Key is already in use on your account")
    key_id = cloud._next("key")
    key = {"id": key_id, "name": name, "public_key": public_key.strip(), "fingerprint": print_}
    cloud._state["keys"][key_id] = key
    cloud._dirty = True
    return 201, {"ssh_key": key_json(key)}


def keys_get(cloud: CloudState, req: Request) -> Reply:
    return 200, {"ssh_key": key_json(find_key(cloud, req.params["ssh_key_identifier"]))}


def keys_update(cloud: CloudState, req: Request) -> Reply:
    key = find_key(cloud, req.params["ssh_key_identifier"])
    name = as_object(req.body).get("name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise unprocessable("Name must be a non-empty string.")
        key["name"] = name
        cloud._dirty = True
    return 200, {"ssh_key": key_json(key)}


def keys_delete(cloud: CloudState, req: Request) -> Reply:
    key = find_key(cloud, req.params["ssh_key_identifier"])
    del cloud._state["keys"][key["id"]]
    cloud._dirty = True
    return 204, None
