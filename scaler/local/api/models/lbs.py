"""Load balancers: settings, forwarding rules, health check, and the droplets behind them."""

from __future__ import annotations

import time
from typing import Any

from scaler.local import balancer
from scaler.local.api.base import JSON, as_int, not_found, project_id, unprocessable
from scaler.local.api.catalog import NAME_RE, region_json
from scaler.local.api.models.state import CloudState
from scaler.local.api.models.tags import ensure_tag


def lb_json(cloud: CloudState, lb: JSON) -> JSON:
    """A load balancer as the API shows it."""
    if lb["tag"]:
        droplet_ids = sorted(
            i for i, d in cloud._state["droplets"].items() if lb["tag"] in d["tags"]
        )
    else:
        droplet_ids = [i for i in lb["droplet_ids"] if i in cloud._state["droplets"]]
    status = "active" if time.time() >= lb["active_at"] else "new"
    return {
        "id": lb["id"],
        "name": lb["name"],
        "project_id": project_id(),
        "ip": lb["ip"],
        "size_unit": lb.get("size_unit") or _UNITS.get(lb.get("size") or "", 1),
        **({"size": lb["size"]} if lb.get("size") else {}),
        "algorithm": lb["algorithm"],
        "status": status,
        "created_at": lb["created_at"],
        "forwarding_rules": [dict(r) for r in lb["forwarding_rules"]],
        "health_check": dict(lb["health_check"]),
        "sticky_sessions": dict(lb["sticky_sessions"]),
        "redirect_http_to_https": lb["redirect_http_to_https"],
        "enable_proxy_protocol": lb["enable_proxy_protocol"],
        "enable_backend_keepalive": lb["enable_backend_keepalive"],
        "http_idle_timeout_seconds": 60,
        "vpc_uuid": lb["vpc_uuid"],
        "disable_lets_encrypt_dns_records": False,
        "network": lb.get("network") or "EXTERNAL",
        "network_stack": lb.get("network_stack") or "IPV4",
        "type": lb.get("type") or "REGIONAL",
        "region": region_json(lb["region"]),
        "droplet_ids": droplet_ids,
        "tag": lb["tag"] or "",
    }


_UNITS = {"lb-small": 1, "lb-medium": 3, "lb-large": 6}
# Settings the API takes in any case and answers in upper case; the first is the default.
_CHOICES = {
    "type": ("REGIONAL", "REGIONAL_NETWORK", "GLOBAL"),
    "network": ("EXTERNAL", "INTERNAL"),
    "network_stack": ("IPV4", "DUALSTACK"),
}


# What DigitalOcean accepts in a health check (its API answers 422 otherwise).
HEALTH_RANGES = {
    "port": (1, 65535),
    "check_interval_seconds": (3, 300),
    "response_timeout_seconds": (3, 300),
    "unhealthy_threshold": (2, 10),
    "healthy_threshold": (2, 10),
}


def check_range(key: str, value: Any, low: int, high: int) -> None:
    """A 422 unless value is an integer between low and high, as DigitalOcean words it."""
    number = as_int(value, key)
    if not low <= number <= high:
        raise unprocessable(f"{key} must be between {low} and {high}, got {number}.")


def find_lb(cloud: CloudState, value: str) -> JSON:
    """A load balancer's record by id (404 when there is none)."""
    lb: JSON | None = cloud._state["lbs"].get(value)
    if lb is None:
        raise not_found()
    return lb


def droplet_ids(cloud: CloudState, value: Any, *, must_exist: bool = True) -> list[int]:
    """A body's droplet_ids, checked (422 for unknown droplets unless must_exist is off)."""
    if not isinstance(value, list):
        raise unprocessable("droplet_ids must be a list of droplet ids.")
    ids = [as_int(v, "droplet_ids") for v in value]
    missing = [i for i in ids if i not in cloud._state["droplets"]]
    if must_exist and missing:
        raise unprocessable(f"Droplets not found: {', '.join(map(str, missing))}.")
    return ids


def parse_rules(value: Any) -> list[JSON]:
    """A body's forwarding_rules, checked and with their defaults."""
    if not isinstance(value, list) or not value:
        raise unprocessable("forwarding_rules must list at least one rule.")
    rules = []
    for rule in value:
        if not isinstance(rule, dict):
            raise unprocessable("Each forwarding rule must be an object.")
        try:
            clean = {
                "entry_protocol": str(rule["entry_protocol"]),
                "entry_port": int(rule["entry_port"]),
                "target_protocol": str(rule["target_protocol"]),
                "target_port": int(rule["target_port"]),
                "certificate_id": str(rule.get("certificate_id") or ""),
                "tls_passthrough": bool(rule.get("tls_passthrough", False)),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise unprocessable(f"Forwarding rule {rule!r} is invalid ({err}).") from None
        for key in ("entry_port", "target_port"):
            check_range(f"forwarding_rules.{key}", clean[key], 1, 65535)
        if clean["entry_protocol"] not in ("http", "https", "http2", "http3", "tcp", "udp"):
            raise unprocessable(f"Invalid entry_protocol {clean['entry_protocol']!r}.")
        if clean["target_protocol"] not in ("http", "https", "http2", "tcp", "udp"):
            raise unprocessable(f"Invalid target_protocol {clean['target_protocol']!r}.")
        rules.append(clean)
    return rules


HEALTH_DEFAULTS: JSON = {
    "protocol": "http",
    "port": 80,
    "path": "/",
    "check_interval_seconds": 10,
    "response_timeout_seconds": 5,
    "unhealthy_threshold": 3,
    "healthy_threshold": 5,
}


def lb_settings(cloud: CloudState, lb: JSON, body: JSON, *, creating: bool) -> None:
    """Apply a load balancer create or update (PUT replaces the settings it is given)."""
    name = body.get("name", lb.get("name"))
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise unprocessable("Load balancer name must be a valid hostname.")
    if body.get("droplet_ids") and body.get("tag"):
        raise unprocessable("Specify either droplet_ids or tag, not both.")
    rules = parse_rules(body.get("forwarding_rules"))
    health = dict(HEALTH_DEFAULTS)
    health.update(
        {k: v for k, v in (body.get("health_check") or {}).items() if k in HEALTH_DEFAULTS}
    )
    if health["protocol"] not in ("http", "https", "tcp"):
        raise unprocessable(f"Invalid health check protocol {health['protocol']!r}.")
    if health["protocol"] == "tcp":
        health["path"] = ""
    for key, (low, high) in HEALTH_RANGES.items():
        check_range(f"health_check.{key}", health[key], low, high)
    sticky: JSON = {"type": "none"}
    given = body.get("sticky_sessions") or {}
    if given.get("type") == "cookies":
        sticky = {
            "type": "cookies",
            "cookie_name": given.get("cookie_name") or "DO-LB",
            "cookie_ttl_seconds": int(given.get("cookie_ttl_seconds") or 300),
        }
    tag = body.get("tag") or None
    if tag is not None:
        ensure_tag(cloud, tag)
    # size_unit (1-200) when given, else the size slug: the answer keeps what was set.
    size_unit = body.get("size_unit")
    size: str | None = None
    if size_unit is not None:
        size_unit = as_int(size_unit, "size_unit")
        if not 1 <= size_unit <= 200:
            raise unprocessable("size_unit must be between 1 and 200.")
    else:
        size = body.get("size") or lb.get("size") or "lb-small"
        if size not in _UNITS:
            raise unprocessable(f"Invalid load balancer size {size!r}.")
        size_unit = _UNITS[size]
    for key, allowed in _CHOICES.items():
        value = body.get(key)
        if value is not None and str(value).upper() not in allowed:
            raise unprocessable(f"Invalid {key} {value!r} (have: {', '.join(allowed)}).")
        if value is not None or creating:
            lb[key] = str(value).upper() if value is not None else allowed[0]
    algorithm = body.get("algorithm") or lb.get("algorithm") or "round_robin"
    if algorithm not in ("round_robin", "least_connections"):
        raise unprocessable(f"Invalid algorithm {algorithm!r}.")
    lb.update(
        name=name,
        size=size,
        size_unit=size_unit,
        algorithm=algorithm,
        forwarding_rules=rules,
        health_check=health,
        sticky_sessions=sticky,
        tag=tag,
        droplet_ids=[] if tag else droplet_ids(cloud, body.get("droplet_ids") or []),
        redirect_http_to_https=bool(body.get("redirect_http_to_https", False)),
        enable_proxy_protocol=bool(body.get("enable_proxy_protocol", False)),
        enable_backend_keepalive=bool(body.get("enable_backend_keepalive", False)),
    )
    if not creating and body.get("vpc_uuid"):
        lb["vpc_uuid"] = body["vpc_uuid"]


def balancer_specs(cloud: CloudState) -> list[balancer.Spec]:
    """What each balancer's HAProxy is made from: its address, rules, check and droplets."""
    specs = []
    for lb in cloud._state["lbs"].values():
        shown = lb_json(cloud, lb)
        held = cloud._state["droplets"]
        # A deleted droplet (archive) is no target; one that is off stays and fails its checks.
        targets = tuple(
            balancer.Target(i, held[i]["private_ip"])
            for i in shown["droplet_ids"]
            if held[i]["status"] != "archive"
        )
        health = lb["health_check"]
        sticky = lb["sticky_sessions"]
        specs.append(
            balancer.Spec(
                lb_id=lb["id"],
                address=lb["ip"],
                rules=tuple(
                    balancer.Rule(
                        r["entry_protocol"],
                        int(r["entry_port"]),
                        r["target_protocol"],
                        int(r["target_port"]),
                        bool(r["tls_passthrough"]),
                    )
                    for r in lb["forwarding_rules"]
                ),
                check=balancer.Check(
                    protocol=health["protocol"],
                    port=int(health["port"]),
                    path=health["path"] or "/",
                    interval=int(health["check_interval_seconds"]),
                    timeout=int(health["response_timeout_seconds"]),
                    healthy_threshold=int(health["healthy_threshold"]),
                    unhealthy_threshold=int(health["unhealthy_threshold"]),
                ),
                targets=targets,
                algorithm=lb["algorithm"],
                sticky_cookie=(sticky["cookie_name"], int(sticky["cookie_ttl_seconds"]))
                if sticky.get("type") == "cookies"
                else None,
            )
        )
    return specs
