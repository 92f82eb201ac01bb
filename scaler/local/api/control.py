"""The control API under /_local/: health, the request log and counters, delays, faults, reset."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING

from scaler.local.api.base import JSON, ApiError, Delays, not_found
from scaler.local.api.httpd import parse_body
from scaler.local.images import REAL_IMAGES

if TYPE_CHECKING:
    from scaler.local.api.cloud import LocalCloud


def control(
    cloud: LocalCloud, method: str, path: str, raw: bytes
) -> tuple[int, JSON | None, dict[str, str]]:
    """Answer a /_local/ request (no auth, not rate-limited, not logged)."""
    try:
        body = parse_body(raw)
        if path == "/_local/health" and method == "GET":
            status = {"ok": True, "pid": os.getpid(), "url": cloud.url, "network": cloud.network}
            status["state_dir"] = str(cloud.state_dir.resolve())
            status["web_port"] = cloud.machines.web_port()
            status["ssh_port"] = cloud.machines.ssh_port()
            status["droplet_kind"] = cloud.machines.kind
            if cloud.machines.kind == "real":
                status["real_images"] = list(REAL_IMAGES)
            if cloud.droplets_note:
                status["droplet_kind_note"] = cloud.droplets_note
            status["rate_limit_per_minute"] = cloud.rate_limit_per_minute
            return 200, status | cloud.summary(), {}
        if path == "/_local/requests" and method in ("GET", "DELETE"):
            if method == "DELETE":
                with cloud._log_lock:
                    cloud._log.clear()
                return 204, None, {}
            return 200, {"requests": [asdict(r) for r in cloud.requests()]}, {}
        if path == "/_local/counters" and method in ("GET", "DELETE"):
            if method == "DELETE":
                with cloud._log_lock:
                    cloud._counters.clear()
                return 204, None, {}
            return 200, {"counters": cloud.counters()}, {}
        if path == "/_local/delays" and method in ("GET", "PUT", "PATCH"):
            if method != "GET":
                known = {f.name for f in fields(Delays)}
                unknown = set(body) - known
                if unknown:
                    raise ApiError(422, f"unknown delays {sorted(unknown)} (have: {sorted(known)})")
                cloud.delays = replace(cloud.delays, **{k: float(v) for k, v in body.items()})
            return 200, {"delays": asdict(cloud.delays)}, {}
        if path == "/_local/faults" and method in ("GET", "POST", "DELETE"):
            if method == "POST":
                try:
                    cloud.faults.add_json(body)
                except (KeyError, TypeError, ValueError, re.error) as err:
                    raise ApiError(422, f"bad fault {body!r}: {err}") from err
            elif method == "DELETE":
                cloud.faults.clear()
                return 204, None, {}
            return 200, {"faults": cloud.faults.describe()}, {}
        if path == "/_local/reset" and method == "POST":
            cloud.reset()
            return 204, None, {}
        raise not_found()
    except ApiError as err:
        return err.status, {"id": err.error_id, "message": err.message}, {}
