"""How long a local load balancer takes to start and to reload (HAProxy 2.6, its runtime API).

One balancer of a free network number with 3 targets (addresses nothing answers, so they stay
DOWN: the figure is HAProxy's, not a droplet's), then --reloads changes that each add or drop a
target (a seamless reload with a server-state file), and as many reads of its view (`show stat`
over the admin socket, what the monitoring endpoint answers from). Needs root and haproxy.

    .venv/bin/python bench/balancer.py [--reloads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from scaler.local.balancer import Balancers, Check, Rule, Spec, Target, available
from scaler.local.netclaim import claim_network


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    args = parser.parse_args()
    why = available()
    if why:
        print(f"bench/balancer.py: {why}", file=sys.stderr)
        return 1
    with claim_network() as claim:
        n = claim.number
        balancers = Balancers(n)
        targets = [Target(100000000 + k, f"127.{n}.2.{k}") for k in range(1, 5)]
        spec = Spec(
            "bench", f"127.{n}.4.1", (Rule("http", 80, "http", 80),), Check(), tuple(targets[:3])
        )
        try:
            began = time.perf_counter()
            balancers.sync([spec])
            start = time.perf_counter() - began
            reloads, views = [], []
            for i in range(args.reloads):
                chosen = targets[:3] if i % 2 else targets[1:]
                began = time.perf_counter()
                balancers.sync([Spec(**{**spec.__dict__, "targets": tuple(chosen)})])
                reloads.append(time.perf_counter() - began)
                began = time.perf_counter()
                assert balancers.view("bench") is not None
                views.append(time.perf_counter() - began)
        finally:
            balancers.close()
    print(f"start:  {start * 1000:.0f} ms")
    print(
        f"reload: median {statistics.median(reloads) * 1000:.0f} ms, "
        f"max {max(reloads) * 1000:.0f} ms over {len(reloads)}"
    )
    print(f"view:   median {statistics.median(views) * 1000:.1f} ms (show stat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
