"""Requests through the load balancer while the web droplets are replaced, strategy by strategy.

`python bench/traffic.py [--sizes 3,20] [--rps N] [--report DIR] [--no-headline]` (as root:
real droplets). For each size, on a fresh local cloud with real droplets (0.2 s API delays, the
250 requests/minute limit enforced): the project's stack (terraform/, firewalls on, one database
droplet provisioned with db-node.yml, that many web droplets), two WordPress snapshots baked with
`scaler bake` from that state, the first rolled out (set-up, not measured). Then:

1. capacity: what the fleet serves through the balancer's address, 8 clients back to back for
   10 s (GET /, WordPress's front page from the database); the load is --rps, default 20% of it;
2. on the same stack, serially, alternating between the two snapshots, each with the load running
   from just before it starts until every droplet behind the balancer is back in rotation:
   the tutorial's way (image_slug edited in terraform.tfvars, a bare `terraform apply` through
   the embedded engine as scaler drives it), `scaler rollout --strategy all`, rolling (scaler's
   default batches of 25%: 1 droplet of 3, 5 of 20), rolling with --canary;
3. the tutorial's headline: a web droplet added (wp_node_count + 1, `terraform apply`) until the
   balancer has it in rotation, from the baked snapshot and from the base image plus the
   playbook (the project's role run over SSH on the new droplet, as `scaler bake` provisions,
   with welp_install_now); then the extra droplet goes again.

Printed per strategy: requests, failed (connection errors and non-2xx), p50/p99 latency, the
longest run of failures (count, seconds), wall time. --report DIR writes DIR/<size>-<strategy>
.png/.html (scaler.report): capacity behind the balancer (its own view, sampled every 0.5 s),
batch boundaries (from scaler rollout's progress lines), API requests per minute, failures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaler.bake import ed25519_key_pair, wait_for_ssh
from scaler.inventory import build_inventory, list_json
from scaler.local.api import Delays, LocalCloud
from scaler.provision import SshConnection, run_playbook, to_static_inventory, wait_for_first_boot
from scaler.report import Timeline, batches_from_progress, write_report
from scaler.state import read_state
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import set_tfvar
from scaler.traffic import Background, Load, Run, measure_capacity

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "traffic"
HEALTH_PATH = "/scaler-wp-health.php"
STRATEGIES = ("tutorial", "all", "rolling", "canary")


def say(text: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _ipv4(droplet: dict[str, Any], kind: str) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == kind)


def until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


class Sampler(threading.Thread):
    """The balancer's own view every 0.5 s: (epoch, droplets in rotation)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.seen: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.seen.append((time.time(), len(self.stack.in_rotation())))
            self.halt.wait(0.5)


@dataclass
class Stack:
    cloud: LocalCloud
    work: Path
    size: int
    key: Path
    password: str
    images: list[int] = field(default_factory=list)
    lb_id: str = ""
    lb_ip: str = ""

    @property
    def dir(self) -> Path:
        return self.work / "stack"

    def api(self, path: str, method: str = "GET") -> Any:
        """One call to the local cloud's /v2 API (`path` relative to it)."""
        request = urllib.request.Request(self.cloud.endpoint + path, method=method)
        request.add_header("Authorization", f"Bearer {self.cloud.env()['DIGITALOCEAN_TOKEN']}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def apply(self) -> None:
        with local_provider(self.cloud.env()) as env:
            Terraform(self.dir, env=env).apply()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
        env.update(self.cloud.env(), PYTHONPATH=str(ROOT), WELP_DB_PASSWORD=self.password)
        return env

    def scaler(self, *args: str, lines: list[tuple[float, str]] | None = None) -> str:
        """`scaler ARGS` in the work folder; stderr lines kept with their arrival (epoch)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaler", *args],
            cwd=self.work,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None and proc.stdout is not None
        err: list[str] = []
        for line in proc.stderr:
            err.append(line)
            if lines is not None:
                lines.append((time.time(), line.rstrip("\n")))
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise SystemExit(f"scaler {' '.join(args)} failed:\n{''.join(err[-30:])}{out}")
        return out

    def lb(self) -> dict[str, Any]:
        (found,) = [
            b for b in self.api("load_balancers")["load_balancers"] if b["name"] == f"{PROJECT}-lb"
        ]
        return dict(found)

    def behind(self) -> set[int]:
        """The droplets behind the balancer, from the cloud's state file: no API request, so
        the report's API line is the rollout's own."""
        state = json.loads((self.cloud.state_dir / "state.json").read_text())
        (lb,) = [b for b in state["lbs"] if b["id"] == self.lb_id]
        return {int(i) for i in lb["droplet_ids"]}

    def in_rotation(self) -> set[int]:
        view = self.cloud.balancers.view(self.lb_id) if self.cloud.balancers else None
        return {t.droplet_id for t in view or () if t.healthy}

    def steady(self, count: int, timeout: float = 300) -> None:
        """Every droplet behind the balancer in rotation, `count` of them."""

        def ok() -> bool:
            behind = self.behind()
            return len(behind) == count and behind == self.in_rotation()

        until(f"{count} droplets in rotation", ok, timeout)


def build(cloud: LocalCloud, work: Path, size: int) -> Stack:
    key, public = ed25519_key_pair(work)
    stack = Stack(cloud, work, size, key, secrets.token_urlsafe(18))
    shutil.copytree(ROOT / "terraform", stack.dir)
    (stack.dir / "terraform.tfvars").write_text(
        f'project_name   = "{PROJECT}"\nimage_slug     = "debian-12-x64"\n'
        f'wp_node_count  = {size}\ndb_node_count  = 1\nhealth_path    = "{HEALTH_PATH}"\n'
        f'firewall       = true\nssh_public_key = "{public.strip()}"\n'
    )
    say(f"terraform apply: {size} web droplets, a database droplet, the balancer")
    with local_provider(cloud.env()) as env:
        Terraform(stack.dir, env=env).init()
        Terraform(stack.dir, env=env, parallelism=30).apply()
    lb = stack.lb()
    stack.lb_id, stack.lb_ip = lb["id"], lb["ip"]
    (db,) = stack.api("droplets?tag_name=db_node")["droplets"]
    db_ssh = SshConnection(_ipv4(db, "public"), "root", key)
    wait_for_ssh(db_ssh.host, 22, 120)
    wait_for_first_boot(db_ssh, 300)
    say("the database (db-node.yml)")
    run_playbook(
        {"all": {"hosts": ["db-1"]}, "db_node": {"hosts": ["db-1"]}},
        playbook=ROOT / "db-node.yml",
        host="db-1",
        connection=db_ssh,
        extravars={"welp_db_password": stack.password, "scaler_db_host": "db-1"},
    )
    state = str(stack.dir / "terraform.tfstate")
    for _ in range(2):
        began = time.monotonic()
        out = stack.scaler("bake", "--state", state, "--project", PROJECT, "--json")
        stack.images.append(int(json.loads(out)["id"]))
        say(f"baked {stack.images[-1]} in {time.monotonic() - began:.0f}s")
    say("set-up rollout onto the first snapshot (not measured)")
    stack.scaler("rollout", "-C", str(stack.dir), "--image", str(stack.images[0]),
                 "--strategy", "all", "--yes", "--health-interval", "1")  # fmt: skip
    stack.steady(size)
    return stack


@dataclass(frozen=True)
class Measured:
    strategy: str
    run: Run
    timeline: Timeline


def measure(stack: Stack, strategy: str, image: int, rps: float) -> Measured:
    """Replace every web droplet with `image` the strategy's way, under load."""
    stack.steady(stack.size)
    sampler = Sampler(stack)
    lines: list[tuple[float, str]] = []
    rollout = ["rollout", "-C", str(stack.dir), "--image", str(image), "--yes"]
    rollout += ["--health-interval", "1", "--lock-timeout", "60s"]
    started = time.time()
    sampler.start()
    with Background(Load(stack.lb_ip, rps=rps, seconds=1800, timeout=5)) as load:
        time.sleep(2.0)  # a steady load before the change
        began = time.time()
        if strategy == "tutorial":
            set_tfvar(stack.dir / "terraform.tfvars", "image_slug", str(image))
            stack.apply()
        elif strategy == "all":
            stack.scaler(*rollout, "--strategy", "all", lines=lines)
        elif strategy == "rolling":
            stack.scaler(*rollout, "--strategy", "rolling", lines=lines)
        else:
            stack.scaler(*rollout, "--strategy", "rolling", "--canary", lines=lines)
        # the tutorial's apply returns with the new droplets still DOWN: the outage lasts until
        # the balancer has them; a scaler rollout returns once they are in rotation
        stack.steady(stack.size)
        done = time.time()
        time.sleep(2.0)
    sampler.halt.set()
    sampler.join()
    images = {stack.api(f"droplets/{i}")["droplet"]["image"]["id"] for i in stack.behind()}
    if images != {image}:
        raise SystemExit(f"{strategy}: droplets behind the balancer run {images}, not {image}")
    run = load.run
    summary = run.summary()
    # the CLI's progress lines count from its own start: the first line's arrival, less its stamp
    offset = began - started
    if lines:
        first = next((t, text) for t, text in lines if text.startswith("["))
        offset = first[0] - started - float(first[1][1:].split("s]")[0])
    timeline = Timeline(
        title=f"{strategy}, {stack.size} web droplets, {rps:g} requests/s",
        started=started,
        capacity=tuple((t - started, n) for t, n in sampler.seen),
        batches=batches_from_progress((text for _, text in lines), offset=offset),
        api_requests=tuple(
            r.time - started for r in stack.cloud.requests() if started <= r.time <= done
        ),
        api_limit=stack.cloud.rate_limit_per_minute,
        traffic=tuple((s.start - started, s.failed) for s in run.samples),
        fleet=stack.size,
        figures=(
            ("strategy", strategy),
            ("web droplets", str(stack.size)),
            ("load", f"{rps:g} requests/s"),
            ("requests", str(summary.requests)),
            ("failed", str(summary.failed)),
            ("p50", f"{(summary.p50 or 0) * 1000:.1f} ms"),
            ("p99", f"{(summary.p99 or 0) * 1000:.1f} ms"),
            (
                "longest failure run",
                f"{summary.longest_failure_run} ({summary.longest_failure_seconds:.1f} s)",
            ),
            ("change until all in rotation", f"{done - began:.1f} s"),
            ("wall (load)", f"{summary.wall:.1f} s"),
        ),
    )
    return Measured(strategy, run, timeline)


def add_droplet(stack: Stack, playbook: bool) -> float:
    """Seconds from `terraform apply` of one more web droplet to the balancer having it in
    rotation: on the rolled snapshot, or on the base image and then the project's role."""
    index = stack.size
    tfvars = stack.dir / "terraform.tfvars"
    if playbook:
        set_tfvar(tfvars, "wp_node_images", {str(index): "debian-12-x64"})
    set_tfvar(tfvars, "wp_node_count", stack.size + 1)
    began = time.monotonic()
    stack.apply()
    if playbook:
        state = read_state(stack.dir / "terraform.tfstate")
        inventory = to_static_inventory(list_json(build_inventory(state)))
        alias = f"digitalocean_droplet.wp_node.{index}"
        address = next(
            _ipv4(d, "public")
            for d in stack.api("droplets?tag_name=wp_node")["droplets"]
            if d["name"] == f"{PROJECT}-wp-node-{index + 1:02d}"
        )
        connection = SshConnection(address, "root", stack.key)
        wait_for_ssh(address, 22, 120)
        wait_for_first_boot(connection, 300)
        run_playbook(
            inventory,
            playbook=ROOT / "packer-build.yml",
            host=alias,
            connection=connection,
            extravars={
                "scaler_build_host": alias,
                "welp_db_password": stack.password,
                "welp_wordpress_package": "wordpress",
                "welp_install_now": True,
            },
        )
    stack.steady(stack.size + 1, timeout=900)
    seconds = time.monotonic() - began
    set_tfvar(tfvars, "wp_node_count", stack.size)
    set_tfvar(tfvars, "wp_node_images", {})
    stack.apply()
    stack.steady(stack.size)
    return seconds


INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_DROPLET = 8
"""inotify instances a real droplet's systemd and services hold (about 6 seen): the kernel's
default of 128 for all of root's processes runs out near 20 droplets, and a surge of 20 runs 41."""


@contextlib.contextmanager
def inotify_room(droplets: int) -> Iterator[None]:
    """Raise fs.inotify.max_user_instances for `droplets` real droplets (each has its own
    systemd), and put the old value back afterwards."""
    old = int(INOTIFY.read_text())
    wanted = 128 + INOTIFY_PER_DROPLET * droplets
    if old >= wanted:
        yield
        return
    say(f"fs.inotify.max_user_instances {old} -> {wanted} for this run")
    INOTIFY.write_text(f"{wanted}\n")
    try:
        yield
    finally:
        INOTIFY.write_text(f"{old}\n")
        say(f"fs.inotify.max_user_instances back to {old}")


def run_size(size: int, rps: float | None, report: Path | None, headline: bool) -> bool:
    # every web droplet twice during a surge, the database droplet and the two bakes
    with inotify_room(2 * size + 3):
        return _run_size(size, rps, report, headline)


def _run_size(size: int, rps: float | None, report: Path | None, headline: bool) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix=f"scaler-bench-traffic-{size}-"))
    os.environ.setdefault("SCALER_LOCAL_PROVIDER_POLL", "0.2")
    ok = True
    with LocalCloud(tmp / "cloud", delays=Delays.uniform(0.2), droplets="real") as cloud:
        stack = build(cloud, tmp, size)
        try:
            capacity = measure_capacity(stack.lb_ip, path="/", seconds=10, concurrency=8)
            load = rps or max(1.0, round(capacity.rps * 0.2, 1))
            print(
                f"# {size} web droplets: the fleet serves {capacity.rps:.1f} requests/s through "
                f"the balancer ({capacity.requests} requests, {capacity.failed} failed, 8 "
                f"clients back to back); load {load:g}/s",
                flush=True,
            )
            print(
                "size strategy  requests failed p50_ms p99_ms fail_run fail_run_s change_s wall_s",
                flush=True,
            )
            image = 1
            for strategy in STRATEGIES:
                say(f"{strategy} onto {stack.images[image]}")
                got = measure(stack, strategy, stack.images[image], load)
                image = 1 - image
                s = got.run.summary()
                change = dict(got.timeline.figures)["change until all in rotation"]
                print(
                    f"{size:4} {strategy:9} {s.requests:8} {s.failed:6} "
                    f"{(s.p50 or 0) * 1000:6.1f} {(s.p99 or 0) * 1000:6.1f} "
                    f"{s.longest_failure_run:8} {s.longest_failure_seconds:10.1f} "
                    f"{change.removesuffix(' s'):>8} {s.wall:6.1f}",
                    flush=True,
                )
                if report is not None:
                    _png, page = write_report(got.timeline, report, name=f"{size}-{strategy}")
                    say(f"report {page}")
                ok &= strategy == "tutorial" or s.failed == 0
            if headline:
                # the droplets run images[image ^ 1] now: the last one rolled
                snap = add_droplet(stack, playbook=False)
                base = add_droplet(stack, playbook=True)
                print(
                    f"# add a web droplet until it serves through the balancer: from the baked "
                    f"snapshot {snap:.1f}s, from the base image plus the playbook {base:.1f}s",
                    flush=True,
                )
        finally:
            say("terraform destroy")
            with local_provider(cloud.env()) as env:
                Terraform(stack.dir, env=env).destroy()
            for image_id in stack.images:
                stack.api(f"images/{image_id}", "DELETE")
    shutil.rmtree(tmp, ignore_errors=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3", help="web droplets, comma-separated (e.g. 3,20)")
    parser.add_argument("--rps", type=float, help="requests per second (default: 20%% of capacity)")
    parser.add_argument("--report", type=Path, help="write a PNG+HTML report per strategy here")
    parser.add_argument("--no-headline", action="store_true", help="skip the add-a-droplet times")
    args = parser.parse_args()
    ok = True
    for size in args.sizes.split(","):
        ok &= run_size(int(size), args.rps, args.report, not args.no_headline)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
