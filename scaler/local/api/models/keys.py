"""SSH keys, found by id or fingerprint."""

from __future__ import annotations

from scaler.local.api.base import JSON, maybe_int, not_found
from scaler.local.api.models.state import CloudState


def key_json(key: JSON) -> JSON:
    """An SSH key as the API shows it."""
    return {k: key[k] for k in ("id", "fingerprint", "public_key", "name")}


def find_key(cloud: CloudState, value: str) -> JSON:
    """A key by id or fingerprint (404 when there is none)."""
    ident = maybe_int(value)
    key: JSON
    for key in cloud._state["keys"].values():
        if ident in (key["id"], key["fingerprint"]):
            return key
    raise not_found()
