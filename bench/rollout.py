"""Rolling rollout on the local cloud: wall time, API requests, peak per minute, capacity.

`python bench/rollout.py [--sizes 3,20,60]`. For each size: a fresh local cloud (default delays:
droplet boot 2 s, actions 1 s; the real 250 requests/minute limit enforced), terraform/ applied
with that many wp_node droplets on a WordPress snapshot, then `rolling` in batches of 25% onto a
second snapshot with the real Terraform (or the embedded one). The health check is the load
balancer's own (3 passes in a row) with its 10 s interval scaled to --health-interval (default
1 s): that only shortens the waits between batches, it sends no API request. Capacity: a sampler
reads the cloud's state file (no API requests) every 0.1 s and probes every droplet behind the
load balancer; the fewest healthy seen must never fall under the floor (N - batch size).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from scaler import health
from scaler.local.api import LocalCloud
from scaler.rollout import Settings, apply_rollout, open_terraform, prepare_rollout
from scaler.terraform import Terraform, local_provider

ROOT = Path(__file__).resolve().parent.parent
NETWORK = 97
PIN_VARIABLE = """
variable "wp_node_images" {
  description = "Image override per wp_node droplet, by count index."
  type        = map(string)
  default     = {}
}
"""


def api(cloud: LocalCloud, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{cloud.url}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def until(check: Any, timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit("timed out")


def make_image(cloud: LocalCloud, name: str) -> str:
    """A WordPress snapshot: a droplet with an index.php in its web root, snapshotted."""
    body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
    droplet_id = api(cloud, "POST", "/v2/droplets", body)["droplet"]["id"]
    until(lambda: api(cloud, "GET", f"/v2/droplets/{droplet_id}")["droplet"]["status"] == "active")
    web = cloud.machines.web_root(droplet_id)
    web.mkdir(parents=True, exist_ok=True)
    (web / "index.php").write_text(f"<?php /* WordPress {name} */ ?>\n")
    action = api(
        cloud, "POST", f"/v2/droplets/{droplet_id}/actions", {"type": "snapshot", "name": name}
    )["action"]
    until(
        lambda: api(cloud, "GET", f"/v2/actions/{action['id']}")["action"]["status"] == "completed"
    )
    snaps = api(cloud, "GET", f"/v2/droplets/{droplet_id}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"/v2/droplets/{droplet_id}")
    return str(snaps[0]["id"])


def with_pins(stack: Path) -> None:
    """The per-instance image override (see /tmp/g-needs.md) until terraform/ has it."""
    if "wp_node_images" in (stack / "variables.tf").read_text():
        return
    (stack / "variables.tf").write_text((stack / "variables.tf").read_text() + PIN_VARIABLE)
    main_tf = stack / "main.tf"
    main_tf.write_text(
        main_tf.read_text().replace(
            "  image     = var.image_slug\n",
            "  image     = lookup(var.wp_node_images, tostring(count.index), var.image_slug)\n",
        )
    )


class Sampler(threading.Thread):
    """Healthy droplets behind the load balancer, from the state file and real probes."""

    def __init__(self, cloud: LocalCloud, port_map: dict[int, int]) -> None:
        super().__init__(daemon=True)
        self.path = cloud.state_dir / "state.json"
        self.port_map = port_map
        self.check = health.HealthCheck(response_timeout=1.0)
        self.counts: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                state = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            ips = {d["id"]: d["public_ip"] for d in state["droplets"]}
            for lb in state["lbs"]:
                behind = [ips[i] for i in lb["droplet_ids"] if i in ips]
                self.counts.append(health.count_healthy(behind, self.check, self.port_map))
            self.halt.wait(0.1)


def peak_per_minute(times: list[float]) -> int:
    """The most requests in any 60 s window."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def run(size: int, health_interval: float, engine: str | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"scaler-bench-rollout-{size}-"))
    try:
        with LocalCloud(tmp / "cloud", network=NETWORK, ssh=False) as cloud:
            old, new = make_image(cloud, "wp-old"), make_image(cloud, "wp-new")
            stack = Path(shutil.copytree(ROOT / "terraform", tmp / "terraform"))
            with_pins(stack)
            (stack / "terraform.tfvars").write_text(
                f'image_slug = "{old}"\nwp_node_count = {size}\n'
            )
            with local_provider(cloud.env()) as env:
                tf = Terraform(stack, env=env, engine=engine)
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
            started = time.monotonic()
            with open_terraform(settings) as tf:
                prepared = prepare_rollout(tf, settings, new, batch_size="25%")
                result = apply_rollout(tf, settings, prepared)
            wall = time.monotonic() - started
            sampler.halt.set()
            sampler.join()
            log = cloud.requests()
            return {
                "droplets": size,
                "batches": len(prepared.plan.batches),
                "status": result.status,
                "wall_s": round(wall, 1),
                "requests": len(log),
                "peak_per_min": peak_per_minute(sorted(r.time for r in log)),
                "http_429": sum(1 for r in log if r.status == 429),
                "min_healthy": min(sampler.counts) if sampler.counts else None,
                "floor": prepared.plan.floor,
                "samples": len(sampler.counts),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,20,60")
    parser.add_argument("--health-interval", type=float, default=1.0)
    parser.add_argument("--engine", help="terraform binary or 'embedded' (default: PATH first)")
    args = parser.parse_args()
    print("droplets batches status  wall_s requests peak/min 429s min_healthy floor", flush=True)
    ok = True
    for size in args.sizes.split(","):
        r = run(int(size), args.health_interval, args.engine)
        print(
            f"{r['droplets']:8} {r['batches']:7} {r['status']:7} {r['wall_s']:6} "
            f"{r['requests']:8} {r['peak_per_min']:8} {r['http_429']:4} "
            f"{r['min_healthy']!s:>11} {r['floor']:5}",
            flush=True,
        )
        ok &= r["status"] == "done" and r["peak_per_min"] < 250
        ok &= r["min_healthy"] is not None and r["min_healthy"] >= r["floor"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
