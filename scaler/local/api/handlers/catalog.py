"""Regions and sizes."""

from __future__ import annotations

from scaler.local.api.catalog import (
    REGIONS,
    SIZES,
    region_json,
    size_json,
)
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request, paginate


def regions(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(req, "regions", [region_json(slug) for slug in REGIONS])


def sizes(cloud: CloudState, req: Request) -> Reply:
    return 200, paginate(req, "sizes", [size_json(slug) for slug in SIZES])
