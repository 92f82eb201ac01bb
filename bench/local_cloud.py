"""How fast is the local cloud, and Terraform against it?

In one run, side by side:
- requests per second the DigitalOcean API stand-in serves for `GET /v2/droplets/{id}` (server in
  its own process, no rate limit; client threads on loopback, a bounded number of requests each);
- wall time of `terraform apply` creating the stack in terraform/ (3 web droplets, load balancer,
  3 database droplets, floating IP) with the embedded Terraform and with the one on PATH;
- wall time of a plan with nothing to do (median of 3), provider attached (reattach mode) and, for
  comparison, started by Terraform through dev_overrides.

Usage: python bench/local_cloud.py [--delay SECONDS] [--threads N] [--requests N]
(--delay: every local cloud delay, e.g. droplet boot; default 0.2 s as in the tests.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from scaler.terraform import Terraform, local_provider

ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import sys
from pathlib import Path
from scaler.local.api import Delays, LocalCloud
delays = Delays.uniform(float(sys.argv[3]))
cloud = LocalCloud(Path(sys.argv[1]), network=int(sys.argv[2]), delays=delays,
                   rate_limit_per_minute=10**9)
cloud.start()
print(cloud.url, flush=True)
sys.stdin.read()
cloud.stop()
"""


def call(url: str, token: str, method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def get_rate(
    url: str, token: str, threads: int, per_thread: int, keep_alive: bool = False
) -> float:
    """Droplet GETs per second with `threads` clients doing `per_thread` requests each.

    keep_alive: each client keeps one HTTP/1.1 connection (as requests and python-digitalocean
    do), else one connection per request (as urllib and the Terraform provider do)."""
    made = call(
        url,
        token,
        "POST",
        "/v2/droplets",
        {"name": "bench", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"},
    )
    path = f"/v2/droplets/{made['droplet']['id']}"  # type: ignore[index]

    def client() -> None:
        if not keep_alive:
            for _ in range(per_thread):
                call(url, token, "GET", path)
            return
        where = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
        try:
            for _ in range(per_thread):
                conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200, resp.status
        finally:
            conn.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    call(url, token, "DELETE", path)
    return threads * per_thread / elapsed


def terraform_times(env_base: dict[str, str], engine: str) -> dict[str, float]:
    """Apply time and no-op plan medians (reattach, dev_overrides) for one engine."""
    work = Path(tempfile.mkdtemp(prefix="bench-tf-"))
    stack = Path(shutil.copytree(ROOT / "terraform", work / "terraform"))
    out: dict[str, float] = {}
    try:
        with local_provider(env_base) as env:
            tf = Terraform(stack, env=env, engine=engine)
            tf.init()
            start = time.perf_counter()
            tf.apply()
            out["apply"] = time.perf_counter() - start
            out["plan"] = _median_plan(tf)
            with local_provider(env_base, mode="dev_overrides") as env2:
                out["plan_dev_overrides"] = _median_plan(Terraform(stack, env=env2, engine=engine))
            start = time.perf_counter()
            tf.destroy()
            out["destroy"] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _median_plan(tf: Terraform) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        plan = tf.plan()
        times.append(time.perf_counter() - start)
        assert not plan.changed, "a plan right after apply must be empty"
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=250, help="GETs per thread")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="bench-cloud-"))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(state), "250", str(args.delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        env = {
            "DIGITALOCEAN_TOKEN": "bench-token",
            "DIGITALOCEAN_API_URL": url,
        }
        rates = {
            (n, keep): get_rate(url, env["DIGITALOCEAN_TOKEN"], n, args.requests, keep)
            for keep in (False, True)
            for n in (1, args.threads)
        }
        engines = {"embedded": "embedded"}
        if shutil.which("terraform"):
            engines["PATH"] = str(shutil.which("terraform"))
        results = {name: terraform_times(env, engine) for name, engine in engines.items()}
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)

    print(f"local cloud (delays {args.delay:g} s), droplet GETs on loopback:")
    for (n, keep), rate in rates.items():
        how = "one kept-alive connection each" if keep else "a new connection per request"
        print(f"  {n:2d} thread(s) x {args.requests} requests, {how}: {rate:8.0f} req/s")
    print()
    head = ("terraform", "apply stack", "no-op plan", "dev_overrides", "destroy")
    print(f"{head[0]:<10} {head[1]:>12} {head[2]:>11} {head[3]:>14} {head[4]:>8}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['apply']:>11.2f}s {r['plan']:>10.2f}s "
            f"{r['plan_dev_overrides']:>13.2f}s {r['destroy']:>7.2f}s"
        )
    print("(stack: 3 wp_node droplets, load balancer, 3 Galera droplets, floating IP, 3 tags;")
    print(
        " no-op plan: median of 3, provider in reattach mode; dev_overrides: Terraform starts it)"
    )
    scale = os.environ.get("SCALER_LOCAL_PROVIDER_POLL", "1")
    print(
        f"(the provider waits like DigitalOcean's own: first look 10 s after a create, scaled by "
        f"SCALER_LOCAL_PROVIDER_POLL={scale})"
    )


if __name__ == "__main__":
    main()
