"""Rolling rollout on the local cloud: wall time, API requests, peak per minute, capacity.

`python bench/rollout.py [--sizes 3,20,60] [--speed K]`. For each size: a fresh local cloud (its
default delays: droplet boot 2 s, actions 1 s; the 250 requests/minute limit enforced), terraform/
applied with that many wp_node droplets on a WordPress snapshot, then `rolling` in batches of 25%
onto a second snapshot, with the --api-budget pacing on (250/minute). The local provider polls at
the real DigitalOcean provider's cadence (10 s before its first look, then 3 s, 6 s, 10 s...).
The health check is the load balancer's own (3 passes in a row), its 10 s interval scaled to
--health-interval (default 1 s): that only shortens the waits between batches, it sends no API
request. Capacity: a sampler reads the cloud's state file (no API requests) every 0.1 s and probes
every droplet behind the load balancer; the fewest healthy seen must never fall under the floor.

--timing realistic starts from DigitalOcean's pace instead (`scaler local up --timing realistic`:
droplets active after ~35 s, load balancers after ~1 min, deletes that linger, a balancer busy for
20 s after each change, lags after actions): a slow bench of the API budget, deadlines and waits.

Beside each wall time it prints the floor measured in the same run and the ratio. Per batch the
floor is the slowest of its new droplets' create time as the API's own create action records it
(started_at to completed_at), plus healthy_threshold checks at the check's interval, plus the
slowest of its old droplets' delete as the cloud records it (from the DELETE to the end of the
`archive` the cloud shows until it is gone, read from its state file like the capacity; where the
cloud forgets it at once, the last answer that still showed it). Then where the rest goes: the first
plan (with its refresh) before batch 1, API budget pauses, and per batch Terraform's plan, the
apply beyond create and delete (the provider's poll cadence), the health wait beyond the checks,
and the final verification.

--speed K (default 1: real time) runs every clock K times faster, together: the cloud's delays
and the provider's poll waits are divided by K, the cloud's limit becomes 250*K a minute, and the
budget window and the peak are taken over 60/K seconds (so "peak/min" is per scaled minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from scaler import health
from scaler.cloud import Cloud
from scaler.local.api import Delays, LocalCloud
from scaler.rollout import ApiBudget, Settings, apply_rollout, open_terraform, prepare_rollout
from scaler.terraform import Terraform, local_provider

ROOT = Path(__file__).resolve().parent.parent
POLL_ENV = "SCALER_LOCAL_PROVIDER_POLL"


def api(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{cloud.url}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def until(check: Any, timeout: float = 900.0, every: float = 1.0) -> Any:
    """Look every second (a snapshot at the realistic pace takes minutes: 250 looks a minute
    is the API's whole budget)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise SystemExit("timed out")


def make_image(cloud: LocalCloud, name: str) -> str:
    """A WordPress snapshot: a droplet with an index.php in its web root, snapshotted."""
    body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
    droplet_id = api(cloud, "POST", "/v2/droplets", body)["droplet"]["id"]
    until(lambda: api(cloud, "GET", f"/v2/droplets/{droplet_id}")["droplet"]["status"] == "active")
    web = cloud.machines.web_root(droplet_id)
    web.mkdir(parents=True, exist_ok=True)
    (web / "index.php").write_text(f"<?php /* WordPress {name} */ ?>\n")
    action = None
    while action is None:
        try:
            body = {"type": "snapshot", "name": name}
            action = api(cloud, "POST", f"/v2/droplets/{droplet_id}/actions", body)["action"]
        except urllib.error.HTTPError as err:
            if err.code != 422:  # pending event: the realistic cloud's lag after the create
                raise
            time.sleep(1.0)
    until(
        lambda: api(cloud, "GET", f"/v2/actions/{action['id']}")["action"]["status"] == "completed"
    )
    snaps = api(cloud, "GET", f"/v2/droplets/{droplet_id}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"/v2/droplets/{droplet_id}")
    return str(snaps[0]["id"])


class Sampler(threading.Thread):
    """Healthy droplets behind the load balancer, from the state file and real probes."""

    def __init__(self, cloud: LocalCloud, port_map: dict[int, int]) -> None:
        super().__init__(daemon=True)
        self.path = cloud.state_dir / "state.json"
        self.port_map = port_map
        self.check = health.HealthCheck(response_timeout=1.0)
        self.counts: list[int] = []
        # droplet id -> when the cloud finishes deleting it (its own record, as `archive`)
        self.gone_at: dict[int, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                state = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            droplets = state["droplets"]
            for d in droplets.values() if isinstance(droplets, dict) else droplets:
                if d.get("gone_at"):
                    self.gone_at[int(d["id"])] = float(d["gone_at"])
            ips = {d["id"]: d["public_ip"] for d in state["droplets"]}
            for lb in state["lbs"]:
                behind = [ips[i] for i in lb["droplet_ids"] if i in ips]
                self.counts.append(health.count_healthy(behind, self.check, self.port_map))
            self.halt.wait(0.1)


def peak_per_minute(times: list[float], window: float = 60.0) -> int:
    """The most requests in any `window` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def floor_of(
    cloud: LocalCloud,
    result: Any,
    log: list[Any],
    batches: tuple[tuple[str, ...], ...],
    marks: list[tuple[float, str]],
    wall: float,
    epoch0: float,
    gone_at: dict[int, float],
) -> dict[str, Any]:
    """The floor of the rollout just run, and where the time above it went (module doc);
    `gone_at`: droplet id -> when the cloud's own record says its delete ends."""
    old_id = {node.address: node.droplet_id for node in result.before}
    lb = api(cloud, "GET", "/v2/load_balancers")["load_balancers"][0]["health_check"]
    checks = lb["healthy_threshold"] * result_interval(lb, marks)
    floor = 0.0
    creates: list[float] = []
    deletes: list[float] = []
    for batch, done in zip(batches, result.batches, strict=False):
        made = []
        for droplet_id in done.droplet_ids:
            acts = api(cloud, "GET", f"/v2/droplets/{droplet_id}/actions")["actions"]
            create = next((a for a in acts if a["type"] == "create"), None)
            begin = _epoch(create and create["started_at"])
            end = _epoch(create and create["completed_at"])
            if begin is not None and end is not None:
                made.append(end - begin)
        gone = []
        for address in batch:
            path = f"/v2/droplets/{old_id.get(address)}"
            asked = [r.time for r in log if r.method == "DELETE" and r.path == path]
            if not asked:
                continue
            end = gone_at.get(int(old_id.get(address) or 0))
            if end is not None:
                gone.append(max(0.0, end - asked[0]))
                continue
            seen = [r.time for r in log if r.method == "GET" and r.path == path and r.status < 400]
            after = [t for t in seen if t > asked[0]]
            gone.append(max(after) - asked[0] if after else 0.0)
        creates.append(max(made, default=0.0))
        deletes.append(max(gone, default=0.0))
        floor += creates[-1] + checks + deletes[-1]

    def at(prefix: str, number: int, total: int) -> float | None:
        label = f"batch {number}/{total}: {prefix}"
        return next((t for t, line in marks if line.startswith(label)), None)

    total = len(batches)
    first = at("planning", 1, total) or at("applying", 1, total)
    plan = apply = wait = 0.0
    for number in range(1, total + 1):
        planning, applying = at("planning", number, total), at("applying", number, total)
        waiting, healthy = at("waiting for", number, total), at("healthy", number, total)
        if planning is not None and applying is not None:
            plan += applying - planning
        if applying is not None and waiting is not None:
            apply += waiting - applying
        if waiting is not None and healthy is not None:
            wait += healthy - waiting
    # Within the applies: the balancer's update (the provider's first PUT to its read-back
    # after the last one: a 403 while the balancer is busy is retried) and the provider's wait
    # before it deletes (from that read-back to its first DELETE: it first looks whether the
    # droplet is locked, 10 s after it starts).
    balancer = before_delete = 0.0
    for number in range(1, total + 1):
        applying, waiting = at("applying", number, total), at("waiting for", number, total)
        if applying is None or waiting is None:
            continue
        window = [r for r in log if applying <= r.time - epoch0 <= waiting]
        lb_put = [r.time for r in window if r.method == "PUT" and "load_balancers" in r.path]
        if not lb_put:
            continue
        lb_get = [
            r.time
            for r in window
            if r.method == "GET" and "load_balancers/" in r.path and r.time >= max(lb_put)
        ]
        read_back = min(lb_get, default=max(lb_put))
        balancer += read_back - min(lb_put)
        deletes_at = [r.time for r in window if r.method == "DELETE" and r.time >= read_back]
        if deletes_at:
            before_delete += min(deletes_at) - read_back
    in_batches = sum(b.seconds for b in result.batches)
    pauses = sum(
        float(line.split("pausing ")[1].split("s")[0]) for _, line in marks if "pausing" in line
    )
    return {
        "floor_s": round(floor, 1),
        "ratio": round(wall / floor, 2) if floor else None,
        "rest": {
            "first plan": round(first or 0.0, 1),
            "budget pauses": round(pauses, 1),
            "batch plans": round(plan, 1),
            "apply beyond create+delete": round(apply - sum(creates) - sum(deletes), 1),
            "of which the balancer's update": round(balancer, 1),
            "of which the provider's wait before deleting": round(before_delete, 1),
            "health beyond checks": round(wait - checks * total, 1),
            "other in batches": round(in_batches - plan - apply - wait, 1),
            "verify and end": round(wall - (first or 0.0) - in_batches - pauses, 1),
        },
    }


def result_interval(check: dict[str, Any], marks: list[tuple[float, str]]) -> float:
    """The check interval the rollout used (the balancer's, scaled by --health-interval): the
    rollout says it ("... every Ns")."""
    for _, line in marks:
        if " times, every " in line:
            return float(line.rsplit("every ", 1)[1].rstrip("s"))
    return float(check["check_interval_seconds"])


def run(
    size: int,
    health_interval: float,
    engine: str | None,
    speed: float,
    budget: int,
    timing: str = "default",
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"scaler-bench-rollout-{size}-"))
    defaults = Delays.realistic() if timing == "realistic" else Delays()
    delays = Delays(**{k: v / speed for k, v in defaults.__dict__.items()})
    window = 60.0 / speed
    os.environ[POLL_ENV] = str(1.0 / speed)
    try:
        with LocalCloud(
            tmp / "cloud",
            delays=delays,
            rate_limit_per_minute=int(250 * speed),
        ) as cloud:
            old, new = make_image(cloud, "wp-old"), make_image(cloud, "wp-new")
            stack = Path(shutil.copytree(ROOT / "terraform", tmp / "terraform"))
            (stack / "terraform.tfvars").write_text(
                f'image_slug = "{old}"\nwp_node_count = {size}\n'
            )
            with local_provider(cloud.env()) as env:
                # The set-up is not measured: a wider apply gets it done sooner.
                tf = Terraform(stack, env=env, engine=engine, parallelism=30)
                tf.init()
                tf.apply()
            cloud.reset_log()
            port_map = {80: cloud.machines.web_port()}
            settings = Settings(
                terraform_dir=stack,
                engine=engine,
                env=cloud.env(),
                local=True,
                health_interval=health_interval,
                health_grace=0,
                port_map=port_map,
                lock_timeout="60s",
            )
            sampler = Sampler(cloud, port_map)
            sampler.start()
            meter = ApiBudget.for_cloud(
                Cloud(cloud.env()["DIGITALOCEAN_TOKEN"], cloud.endpoint), budget, window=window
            )
            started, epoch0 = time.monotonic(), time.time()
            lines: list[str] = []
            marks: list[tuple[float, str]] = []

            def report(line: str) -> None:
                marks.append((time.monotonic() - started, line))
                lines.append(f"[{time.monotonic() - started:6.1f}s] {line}")

            with open_terraform(settings) as tf:
                meter.mark()
                prepared = prepare_rollout(tf, settings, new, batch_size="25%", report=report)
                result = apply_rollout(tf, settings, prepared, report=report, budget=meter)
            wall = time.monotonic() - started
            sampler.halt.set()
            sampler.join()
            log = cloud.requests()
            overhead = floor_of(
                cloud, result, log, prepared.plan.batches, marks, wall, epoch0, sampler.gone_at
            )
            return {
                "droplets": size,
                "batches": len(prepared.plan.batches),
                "status": result.status,
                "wall_s": round(wall, 1),
                "requests": len(log),
                "peak_per_min": peak_per_minute(sorted(r.time for r in log), window),
                "http_429": sum(1 for r in log if r.status == 429),
                "min_healthy": min(sampler.counts) if sampler.counts else None,
                "floor": prepared.plan.floor,
                "samples": len(sampler.counts),
                "top": sorted(cloud.counters().items(), key=lambda kv: -kv[1])[:6],
                "pauses": [line for line in lines if "pausing" in line],
                "message": result.message,
                **overhead,
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,20,60")
    parser.add_argument("--health-interval", type=float, default=1.0)
    parser.add_argument("--engine", help="terraform binary or 'embedded' (default: PATH first)")
    parser.add_argument("--speed", type=float, default=1.0, help="run every clock K times faster")
    parser.add_argument("--api-budget", type=int, default=250, help="requests per (scaled) minute")
    parser.add_argument("--timing", choices=("default", "realistic"), default="default")
    args = parser.parse_args()
    scale = "real time" if args.timing == "default" else "real time, realistic timing"
    if args.speed != 1:
        scale = f"{args.speed:g}x faster, minute = {60 / args.speed:g}s"
    print(f"# rolling, batches of 25%, api budget {args.api_budget}, {scale}", flush=True)
    print(
        "droplets batches status  wall_s floor_s ratio requests peak/min 429s min_healthy floor",
        flush=True,
    )
    ok = True
    for size in args.sizes.split(","):
        r = run(
            int(size), args.health_interval, args.engine, args.speed, args.api_budget, args.timing
        )
        print(
            f"{r['droplets']:8} {r['batches']:7} {r['status']:7} {r['wall_s']:6} "
            f"{r['floor_s']:7} {r['ratio']!s:>5} {r['requests']:8} {r['peak_per_min']:8} "
            f"{r['http_429']:4} "
            f"{r['min_healthy']!s:>11} {r['floor']:5}",
            flush=True,
        )
        print(f"#   by endpoint: {', '.join(f'{k} {v}' for k, v in r['top'])}", flush=True)
        rest = ", ".join(f"{k} {v}s" for k, v in r["rest"].items())
        print(f"#   above the floor: {rest}", flush=True)
        for line in r["pauses"]:
            print(f"#   {line}", flush=True)
        if r["status"] != "done":
            print(f"#   {r['message']}", flush=True)
        ok &= r["status"] == "done" and r["peak_per_min"] < 250
        ok &= r["min_healthy"] is not None and r["min_healthy"] >= r["floor"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
