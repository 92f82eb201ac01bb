"""Monitoring: the load balancer's own view of its droplets' health checks."""

from __future__ import annotations

import time

from scaler.local.api.base import ApiError, as_int
from scaler.local.api.models.lbs import find_lb, lb_json
from scaler.local.api.models.state import CloudState
from scaler.local.api.routing import Reply, Request

NO_VIEW = (
    "This local cloud's load balancers carry no traffic (directory droplets, or no haproxy), "
    "so nothing checks their droplets."
)


def lb_droplets_health_checks(cloud: CloudState, req: Request) -> Reply:
    """One sample per droplet of the balancer: 1 when its checks pass (in rotation), else 0.

    Labels `lb_id` and `droplet_id`; the local cloud keeps no history, so the one sample is the
    balancer's view now, stamped now, whatever window start and end ask for.
    """
    for name in ("lb_id", "start", "end"):
        if not req.query.get(name):
            raise ApiError(400, f"{name} is required.")
    for name in ("start", "end"):
        as_int(req.query[name], name)
    lb = find_lb(cloud, req.query["lb_id"])
    balancers = getattr(cloud, "balancers", None)
    view = balancers.view(lb["id"]) if balancers is not None else None
    if view is None:
        raise ApiError(404, NO_VIEW)
    seen = {t.droplet_id: t for t in view}
    now = int(time.time())
    result = [
        {
            "metric": {"lb_id": lb["id"], "droplet_id": str(droplet_id)},
            "values": [[now, "1" if droplet_id in seen and seen[droplet_id].healthy else "0"]],
        }
        for droplet_id in lb_json(cloud, lb)["droplet_ids"]
    ]
    return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
