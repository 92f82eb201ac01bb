"""`scaler rollout` on the local cloud with the real Terraform, in a tmp copy of terraform/."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import (
    ROOT,
    module_cloud,
    wait_for,
)
from conftest import cloud_api as api

from scaler import health
from scaler.cli import main
from scaler.cloud import Cloud
from scaler.local.api import LocalCloud
from scaler.rollout import (
    ApiBudget,
    PlanRefused,
    Settings,
    apply_rollout,
    check_plan,
    open_terraform,
    prepare_rollout,
)
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

WORDPRESS = Path("/usr/share/wordpress")
WEB_PORT = 18080  # the droplets' port 80, mapped (as a non-root local cloud would)


def failed_404(address: str, path: str) -> str:
    """A pattern of the health failure of a new droplet whose image lacks `path`: the droplet,
    its public address, the URL on its private address, the status and the body's first bytes."""
    return (
        re.escape(address)
        + r" \(127\.\d+\.1\.\d+\): http://127\.\d+\.2\.\d+:"
        + re.escape(f"{WEB_PORT}{path} -> 404, body '404 not found\\n'")
    )


WEB = [f"digitalocean_droplet.wp_node[{i}]" for i in range(3)]
LB = "digitalocean_loadbalancer.wp_lb"
DROPLET = "digitalocean_droplet"
FAST = ["--health-interval", "0.05", "--health-grace", "0", "--health-timeout", "20s"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of this module's own: quick delays, no rate limit, web on WEB_PORT."""
    with module_cloud(
        tmp_path_factory,
        "rollout-cloud",
        rate_limit_per_minute=100_000,
        web_port=WEB_PORT,
    ) as cloud:
        yield cloud


def make_image(
    cloud: LocalCloud, name: str, index_php: str | None, extra: dict[str, str] | None = None
) -> str:
    """A snapshot made the way a bake would: a droplet, its web root filled (or not), snapshot."""
    droplet = api(
        cloud,
        "POST",
        "droplets",
        {
            "name": f"build-{name}",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "debian-12-x64",
        },
    )["droplet"]
    droplet_id = droplet["id"]
    wait_for(
        "the build droplet",
        lambda: api(cloud, "GET", f"droplets/{droplet_id}")["droplet"]["status"] == "active",
    )
    if index_php is not None:
        web_root = cloud.machines.web_root(droplet_id)
        web_root.mkdir(parents=True, exist_ok=True)
        (web_root / "index.php").write_text(index_php)
    for name_in_root, text in (extra or {}).items():
        cloud.machines.web_root(droplet_id).mkdir(parents=True, exist_ok=True)
        (cloud.machines.web_root(droplet_id) / name_in_root).write_text(text)
    action = api(
        cloud, "POST", f"droplets/{droplet_id}/actions", {"type": "snapshot", "name": name}
    )["action"]
    wait_for(
        "the snapshot",
        lambda: api(cloud, "GET", f"actions/{action['id']}")["action"]["status"] == "completed",
    )
    snapshots = api(cloud, "GET", f"droplets/{droplet_id}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"droplets/{droplet_id}")
    return str(next(s["id"] for s in snapshots if s["name"] == name))


@dataclass
class Stack:
    """A stack applied on the local cloud: its directory, images and the ids it started with."""

    dir: Path
    cloud: LocalCloud
    good: str
    good2: str
    bad: str
    before: dict[str, int]

    @property
    def tfvars(self) -> Path:
        return self.dir / "terraform.tfvars"

    def env(self) -> dict[str, str]:
        return {**self.cloud.env(), "SCALER_LOCAL_WEB_PORT": str(WEB_PORT)}

    def rollout(self, *args: str) -> Any:
        runner = CliRunner()
        return runner.invoke(
            main, ["rollout", "-C", str(self.dir), *args], env=self.env(), catch_exceptions=False
        )

    def ids(self) -> dict[str, int]:
        return resource_ids(self.dir)

    def web_images(self) -> dict[str, str]:
        found = api(self.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
        return {d["name"]: str(d["image"]["id"]) for d in found}


def resource_ids(stack: Path) -> dict[str, int]:
    """Address -> id of every resource instance in the state file."""
    state = json.loads((stack / "terraform.tfstate").read_text())
    out = {}
    for res in state["resources"]:
        prefix = f"{res['module']}." if res.get("module") else ""
        for inst in res["instances"]:
            key = inst.get("index_key")
            suffix = "" if key is None else f"[{key}]"
            out[f"{prefix}{res['type']}.{res['name']}{suffix}"] = inst["attributes"]["id"]
    return out


@pytest.fixture
def stack(cloud: LocalCloud, tmp_path: Path) -> Stack:
    """terraform/ copied, with image_slug = a WordPress snapshot, applied on a clean cloud."""
    cloud.reset()
    login = {"wp-login.php": "<?php /* login */ ?>\n"}
    good = make_image(cloud, "wp-1", "<?php /* WordPress */ ?>\n", login)
    good2 = make_image(cloud, "wp-2", "<?php /* WordPress, newer */ ?>\n", login)
    bad = make_image(cloud, "empty", None)
    directory = Path(shutil.copytree(ROOT / "terraform", tmp_path / "terraform"))
    (directory / "terraform.tfvars").write_text(
        f'# the web image\nimage_slug    = "{good}"\nwp_node_count = 3\n'
        # directory droplets enforce no firewall; the API budgets and timings below are the
        # rollout's own, measured without the firewalls' refreshes
        "firewall      = false\n"
    )
    with local_provider(cloud.env()) as env:
        tf = Terraform(directory, env=env)
        tf.init()
        tf.apply()
    return Stack(directory, cloud, good, good2, bad, resource_ids(directory))


class Sampler:
    """Counts the healthy droplets behind the load balancer, over and over, in a thread."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.check = health.HealthCheck(response_timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            (lb,) = api(self.cloud, "GET", "load_balancers")["load_balancers"]
            droplets = api(self.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")
            ips = {
                d["id"]: next(n["ip_address"] for n in d["networks"]["v4"] if n["type"] == "public")
                for d in droplets["droplets"]
            }
            behind = [ips[i] for i in lb["droplet_ids"] if i in ips]
            self.counts.append(health.count_healthy(behind, self.check, {80: WEB_PORT}))
            self._stop.wait(0.03)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def all_healthy(stack: Stack) -> bool:
    droplets = api(stack.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
    ips = [
        next(n["ip_address"] for n in d["networks"]["v4"] if n["type"] == "public")
        for d in droplets
    ]
    check = health.HealthCheck(response_timeout=1.0)
    return len(ips) == 3 and health.count_healthy(ips, check, {80: WEB_PORT}) == 3


def others(ids: dict[str, int]) -> dict[str, int]:
    """Everything but the web droplets (and the LB's droplet list, which is not an id)."""
    return {a: i for a, i in ids.items() if not a.startswith("digitalocean_droplet.wp_node")}


@pytest.mark.slow
def test_rolling_rollout_replaces_only_the_web_droplets(stack: Stack) -> None:
    with Sampler(stack.cloud) as sampler:
        result = stack.rollout("--image", stack.good2, "--batch-size", "1", "--yes", *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"done: 3 droplets now run image {stack.good2}, all healthy"
    )
    assert re.search(r"\[ *\d+\.\ds\] batch 3/3: healthy", result.stderr)
    assert set(stack.web_images().values()) == {stack.good2}
    assert all_healthy(stack)
    after = stack.ids()
    assert others(after) == others(stack.before)  # db droplets, LB, floating IP, tags kept
    assert not {after[a] for a in WEB} & {stack.before[a] for a in WEB}
    table = result.stdout.splitlines()
    assert table[1] == f"  {'target':<31}  before (droplet image)   after (droplet image)"
    for line, address in zip(table[2:5], WEB, strict=True):
        then = f"{stack.before[address]} {stack.good}"
        assert line == f"  {address}  {then:<23}  {after[address]} {stack.good2}"
    assert re.search(r"^  API requests seen during the batches: \d+$", result.stdout, re.M)
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good2
    assert stack.tfvars.read_text().startswith("# the web image\n")
    assert sampler.counts and min(sampler.counts) >= 2  # floor: 3 - max-unavailable 1
    progress = json.loads((stack.dir / ".scaler" / "rollout.json").read_text())
    assert (progress["status"], progress["done"]) == ("done", WEB)
    assert [b for b in progress["batches"]] == [[a] for a in WEB]


@pytest.mark.slow
def test_load_balancer_still_busy_with_the_last_batch_is_waited_for(stack: Stack) -> None:
    """DigitalOcean answers 403 to a balancer change while it applies the last one."""
    before = stack.cloud.delays
    # long enough that the next batch's change always meets the last one still applying
    stack.cloud.delays = replace(before, lb_update=10.0)
    stack.cloud.reset_log()
    try:
        result = stack.rollout("--image", stack.good2, "--batch-size", "1", "--yes", *FAST)
    finally:
        stack.cloud.delays = before
    assert result.exit_code == 0, result.output
    assert "the load balancer is still applying its last change; waiting" in result.stderr
    assert set(stack.web_images().values()) == {stack.good2}
    assert all_healthy(stack)
    puts = [r.status for r in stack.cloud.requests() if r.template == "PUT /v2/load_balancers/{id}"]
    assert 403 in puts and puts[-1] == 200, puts
    after = stack.ids()
    assert others(after) == others(stack.before)


@pytest.mark.slow
def test_rollback_waits_for_a_load_balancer_still_busy_with_the_canary(stack: Stack) -> None:
    """The canary's balancer change is still being applied when its health check fails: the
    rollback's own change gets DigitalOcean's 403, waits it out, and rolls back healthy."""
    before = stack.cloud.delays
    # Long enough that the failed canary's change is still being applied on a loaded machine.
    stack.cloud.delays = replace(before, lb_update=20.0)
    stack.cloud.reset_log()
    try:
        result = stack.rollout("--image", stack.bad, "--canary", "--yes", *FAST)
    finally:
        stack.cloud.delays = before
    assert result.exit_code == 4, result.output  # rolled back, healthy
    assert "rollback: the load balancer is still applying its last change; waiting" in (
        result.stderr
    )
    # the reason names the droplet, the URL on its private address, the status and the body
    assert re.search(
        rf"Error: rollout rolled-back: batch 1/3: {re.escape(WEB[0])} failed its health check "
        rf"\({re.escape(WEB[0])} \(127\.[\d.]+\): http://127\.[\d.]+:\d+/ -> 404, "
        rf"body '404 not found\\n'\); rolled back 1 droplets to image {stack.good} \(healthy\)\n$",
        result.stderr,
    ), result.stderr
    puts = [r.status for r in stack.cloud.requests() if r.template == "PUT /v2/load_balancers/{id}"]
    assert 403 in puts and puts[-1] == 200, puts
    assert set(stack.web_images().values()) == {stack.good}
    assert all_healthy(stack)
    after = stack.ids()
    tagged = api(stack.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
    assert sorted(str(d["id"]) for d in tagged) == sorted(str(after[a]) for a in WEB)  # no orphan
    assert others(after) == others(stack.before)


@pytest.mark.slow
def test_unhealthy_image_stops_at_the_canary_and_rolls_back(stack: Stack) -> None:
    with Sampler(stack.cloud) as sampler:
        result = stack.rollout("--image", stack.bad, "--canary", "--yes", "--json", *FAST)
    assert result.exit_code == 4  # rolled back, healthy
    summary = json.loads(result.stdout)
    assert summary["status"] == "rolled-back"
    assert re.fullmatch(
        re.escape(f"batch 1/3: {WEB[0]} failed its health check (")
        + failed_404(WEB[0], "/")
        + re.escape(f"); rolled back 1 droplets to image {stack.good} (healthy)"),
        summary["message"],
    ), summary["message"]
    assert [b["addresses"] for b in summary["batches"]] == [[WEB[0]]]
    assert [b["healthy"] for b in summary["batches"]] == [False]
    assert summary["floor"] == 2 and summary["min_healthy"] >= 2
    assert result.stderr.endswith(f"Error: rollout rolled-back: {summary['message']}\n")
    assert set(stack.web_images().values()) == {stack.good}
    assert all_healthy(stack)
    after = stack.ids()
    assert others(after) == others(stack.before)
    assert [after[a] for a in WEB[1:]] == [stack.before[a] for a in WEB[1:]]  # never touched
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good
    assert min(sampler.counts) >= 2


@pytest.mark.slow
def test_strategy_all_replaces_everything_at_once_and_verifies(stack: Stack) -> None:
    stack.cloud.reset_log()
    result = stack.rollout("--image", stack.good2, "--strategy", "all", "--yes", *FAST)
    assert result.exit_code == 0, result.output
    # the new droplets joined the balancer (through the API) before any old one was deleted
    log = [(r.method, r.path) for r in stack.cloud.requests()]
    joined = log.index(("POST", f"/v2/load_balancers/{stack.before[LB]}/droplets"))
    deletes = [i for i, (m, p) in enumerate(log) if m == "DELETE" and p.startswith("/v2/drop")]
    assert len(deletes) == 3 and min(deletes) > joined
    assert not plan_changes(stack)
    assert "batch 1: digitalocean_droplet.wp_node[0], digitalocean_droplet.wp_node[1]" in (
        result.stdout
    )
    assert set(stack.web_images().values()) == {stack.good2}
    assert all_healthy(stack)
    assert others(stack.ids()) == others(stack.before)


def plan_changes(stack: Stack) -> bool:
    """True when a plain `terraform plan` of the stack has anything to do (outputs too)."""
    with local_provider(stack.cloud.env()) as env:
        return Terraform(stack.dir, env=env).plan(out=stack.dir / "check.tfplan").changed


def no_scaler_addresses(stack: Stack) -> bool:
    """True when the state holds no address a surge moved a droplet to, and no state backup
    of `terraform state mv` was left beside the state."""
    state = json.loads((stack.dir / "terraform.tfstate").read_text())
    names = {r["name"] for r in state["resources"]}
    backups = list(stack.dir.glob("terraform.tfstate.*.backup"))
    return not [n for n in names if "_scaler_" in n] and not backups


def test_unhealthy_image_with_strategy_all_is_undone_and_the_old_droplets_serve(
    stack: Stack,
) -> None:
    with Sampler(stack.cloud) as sampler:
        result = stack.rollout("--image", stack.bad, "--strategy", "all", "--yes", "--json", *FAST)
    assert result.exit_code == 4, result.output  # rolled back, healthy
    message = json.loads(result.stdout)["message"]
    assert message.endswith(
        f"rolled back: the 3 new droplets were destroyed, and the old ones on image {stack.good} "
        "served throughout (healthy)"
    ), message
    assert "undoing the surge: destroying the 3 new droplets" in result.stderr
    assert stack.ids() == stack.before  # the same droplets, at the same addresses
    assert set(stack.web_images().values()) == {stack.good}
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good
    assert min(sampler.counts) >= 3
    assert not plan_changes(stack)
    assert no_scaler_addresses(stack)


def test_killed_surge_is_undone_by_resume_then_finished(stack: Stack) -> None:
    """kill -9 once the old droplets are aside and the new ones made: --resume puts the old ones
    back at their addresses, destroys the new ones, and runs the surge again."""
    state = stack.dir / "terraform.tfstate"

    def surging() -> bool:
        try:
            resources = json.loads(state.read_text())["resources"]
        except (OSError, ValueError):
            return False  # being written
        count = {r["name"]: len(r["instances"]) for r in resources if r["type"] == DROPLET}
        return count.get("wp_node_scaler_retiring") == 3 and count.get("wp_node") == 3

    cmd = [str(Path(sys.executable).parent / "scaler"), "rollout", "-C", str(stack.dir)]
    cmd += ["--image", stack.good2, "--strategy", "all", "--yes", "--health-interval", "2"]
    cmd += ["--health-grace", "0"]
    proc = subprocess.Popen(cmd, env={**os.environ, **stack.env()}, stderr=subprocess.PIPE)
    try:
        wait_for("the surge", surging, timeout=60)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    record = stack.dir / ".scaler" / "rollout.json"
    assert json.loads(record.read_text())["retiring"]
    # another checkout (no record of it) is told what the state holds, and changes nothing
    kept = record.rename(stack.dir / "kept.json")
    other = stack.rollout("--image", stack.good2, "--yes", *FAST)
    assert other.exit_code == 1, other.output
    assert "the Terraform state holds droplets a surge moved aside (" in other.stderr
    assert "digitalocean_droplet.wp_node_scaler_retiring[0]" in other.stderr
    kept.rename(record)
    resumed = stack.rollout("--resume", "--yes", *FAST)
    assert resumed.exit_code == 0, resumed.output
    assert "undid the interrupted surge" in resumed.stderr
    assert set(stack.web_images().values()) == {stack.good2}
    assert all_healthy(stack)
    assert others(stack.ids()) == others(stack.before)
    assert not plan_changes(stack)
    assert no_scaler_addresses(stack)


def test_guard_refuses_a_plan_that_replaces_the_load_balancer(stack: Stack) -> None:
    main_tf = stack.dir / "main.tf"
    text = main_tf.read_text()
    old = "  droplet_ids = digitalocean_droplet.wp_node[*].id\n"
    main_tf.write_text(
        text.replace(
            old,
            old
            + "\n  lifecycle {\n    replace_triggered_by = [digitalocean_droplet.wp_node]\n  }\n",
        )
    )
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good2, "--yes", *FAST)
    assert result.exit_code == 7  # refused by the guard
    assert result.stderr.splitlines()[-1] == (
        "Error: refusing to roll out: the plan would replace digitalocean_loadbalancer.wp_lb; "
        "a rollout may only replace digitalocean_droplet.wp_node (and update a load balancer in "
        f"place); nothing was applied and image_slug in {stack.tfvars} is back to '{stack.good}'"
    )
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before
    assert not (stack.dir / ".scaler" / "rollout.json").exists()


def test_guard_on_real_plans(stack: Stack) -> None:
    with local_provider(stack.cloud.env()) as env:
        tf = Terraform(stack.dir, env=env)
        image_plan = tf.plan(stack.dir / "a.tfplan", vars={"image_slug": stack.good2})
        changes = check_plan(tf.show_plan_json(image_plan.file), ["digitalocean_droplet.wp_node"])
        assert {(c.address, c.kind) for c in changes} == {
            *((a, "replace") for a in WEB),
            (LB, "update"),
        }
        db_plan = tf.plan(stack.dir / "b.tfplan", vars={"db_image": "ubuntu-22-04-x64"})
        with pytest.raises(PlanRefused) as err:
            check_plan(tf.show_plan_json(db_plan.file), ["digitalocean_droplet.wp_node"])
        pins = {"wp_node_images": {"0": stack.good, "2": stack.good}}
        batch = tf.plan(stack.dir / "c.tfplan", vars={"image_slug": stack.good2, **pins})
        batch_changes = check_plan(
            tf.show_plan_json(batch.file), ["digitalocean_droplet.wp_node"], expect=[WEB[1]]
        )
    dbs = ", ".join(f"replace module.galera.digitalocean_droplet.db_node[{i}]" for i in range(3))
    assert str(err.value) == (
        f"the plan would {dbs}, "
        "replace module.galera.digitalocean_reserved_ip_assignment.ha_db_fip; "
        "a rollout may only replace digitalocean_droplet.wp_node "
        "(and update a load balancer in place)"
    )
    assert {(c.address, c.kind) for c in batch_changes} == {(WEB[1], "replace"), (LB, "update")}


def test_nothing_to_do_changes_nothing(stack: Stack) -> None:
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good, *FAST)
    assert result.exit_code == 0
    assert result.stdout == f"nothing to do: every target already runs image {stack.good}\n"
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before


def test_dry_run_shows_each_batch_and_changes_nothing(stack: Stack) -> None:
    before = stack.tfvars.read_bytes()
    cloud_before = cloud_snapshot(stack)
    result = stack.rollout("--image", stack.good2, "--canary", "--batch-size", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Rollout of image {stack.good2} (from {stack.good}), strategy rolling:"
    assert f"  batch 1: {WEB[0]}" in lines
    assert f"  batch 2: {WEB[1]}, {WEB[2]}" in lines
    assert f"  plan up to {WEB[0]}: replace {WEB[0]}, update {LB}" in lines
    assert f"  plan up to {WEB[2]}: {', '.join(f'replace {a}' for a in WEB)}, update {LB}" in lines
    assert lines[-1] == "dry run: nothing was changed"
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before
    assert cloud_snapshot(stack) == cloud_before
    assert not (stack.dir / ".scaler" / "rollout.json").exists()


def test_refuses_without_a_terminal_or_yes(stack: Stack) -> None:
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good2, *FAST)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: refusing to roll out without confirmation: stdin is not a terminal; pass --yes"
    )
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before


def spawn_rollout(stack: Stack, **popen: Any) -> subprocess.Popen[Any]:
    """`scaler rollout` of good2 in batches of one, as its own process (slow checks)."""
    cmd = [str(Path(sys.executable).parent / "scaler"), "rollout", "-C", str(stack.dir)]
    cmd += ["--image", stack.good2, "--batch-size", "1", "--yes", "--health-interval", "0.3"]
    cmd += ["--health-grace", "0"]
    return subprocess.Popen(cmd, env={**os.environ, **stack.env()}, **popen)


def batches_done(progress: Path) -> int:
    """Droplets the progress file records as done (0 before it exists)."""
    if not progress.exists():
        return 0
    return len(json.loads(progress.read_text())["done"])


@pytest.mark.slow
def test_interrupted_rollout_resumes(stack: Stack) -> None:
    progress = stack.dir / ".scaler" / "rollout.json"
    proc = spawn_rollout(stack, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the first batch", lambda: batches_done(progress) >= 1, timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    recorded = json.loads(progress.read_text())
    assert recorded["status"] == "interrupted"
    done = recorded["done"]
    assert 1 <= len(done) < 3
    assert out.startswith(f"interrupted: interrupted after {len(done)} of 3 droplets; ")
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good2

    again = stack.rollout("--image", stack.good2, "--yes", *FAST)
    assert again.exit_code == 1
    assert "pass --resume to continue it" in again.stderr

    resumed = stack.rollout("--resume", "--yes", *FAST)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.splitlines()[0] == (
        f"done: {3 - len(done)} droplets now run image {stack.good2}, all healthy"
    )
    assert set(stack.web_images().values()) == {stack.good2}
    assert all_healthy(stack)
    assert others(stack.ids()) == others(stack.before)
    assert json.loads(progress.read_text())["status"] == "done"


def test_second_rollout_is_refused_while_one_holds_the_lock(stack: Stack) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from scaler.lock import hold\n"
            "with hold(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n",
            str(stack.dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        result = stack.rollout("--image", stack.good2, "--yes", *FAST)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]
    assert re.fullmatch(
        rf"Error: another scaler operation holds {re.escape(str(stack.dir))}/"
        rf"\.scaler/rollout\.lock: pid {holder.pid} on \S+, since \d{{4}}-\d\d-\d\d "
        r"\d\d:\d\d:\d\d UTC \(rollout\); wait for it to finish, or stop that process "
        r"\(a dead holder's lock is taken over automatically\)",
        last,
    ), last
    assert stack.ids() == stack.before


@pytest.mark.slow
def test_failed_apply_rolls_back(stack: Stack) -> None:
    stack.cloud.faults.error_action(action_type="create")
    result = stack.rollout("--image", stack.good2, "--batch-size", "1", "--yes", *FAST)
    assert result.exit_code == 4  # rolled back, healthy
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "rolled-back: batch 1: terraform apply failed (exit 1): Error: action "
    ), first
    assert first.endswith(f"rolled back 1 droplets to image {stack.good} (healthy)"), first
    assert set(stack.web_images().values()) == {stack.good}
    assert all_healthy(stack)
    assert others(stack.ids()) == others(stack.before)
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good


def test_no_rollback_leaves_the_failed_batch(stack: Stack) -> None:
    result = stack.rollout("--image", stack.bad, "--canary", "--no-rollback", "--yes", *FAST)
    assert result.exit_code == 5  # failed, left for a person
    assert re.fullmatch(
        re.escape(f"failed: batch 1/3: {WEB[0]} failed its health check (")
        + failed_404(WEB[0], "/")
        + re.escape(
            f"); left as it is (--no-rollback): "
            f"image_slug stays {stack.bad}, run scaler rollout --resume to retry; {stack.tfvars} "
            f"holds image_slug = {stack.bad} and wp_node_images pins [1] {stack.good}, [2] "
            f"{stack.good}: a plain terraform apply changes nothing this rollout has not changed"
        ),
        result.stdout.splitlines()[0],
    ), result.stdout
    images = stack.web_images()
    assert sorted(images.values()) == sorted([stack.bad, stack.good, stack.good])
    assert get_tfvar(stack.tfvars, "image_slug") == stack.bad
    assert json.loads((stack.dir / ".scaler" / "rollout.json").read_text())["status"] == "failed"


def test_deadline_passed_puts_the_old_image_back(stack: Stack) -> None:
    result = stack.rollout("--image", stack.good2, "--deadline", "1ms", "--yes", *FAST)
    assert result.exit_code == 4  # rolled back, healthy
    assert result.stdout.splitlines()[0] == (
        "rolled-back: the deadline passed before batch 1; rolled back 0 droplets to image "
        f"{stack.good} (healthy)"
    )
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good
    assert stack.ids() == stack.before


def test_image_from_a_packer_manifest(stack: Stack, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    build = {"name": "digitalocean", "builder_type": "digitalocean", "build_time": 1}
    build |= {"files": [], "artifact_id": f"nyc3:{stack.good2}", "packer_run_uuid": "r1"}
    manifest.write_text(json.dumps({"builds": [build], "last_run_uuid": "r1"}))
    result = stack.rollout("--from-manifest", str(manifest), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"Rollout of image {stack.good2} (from {stack.good}), strategy rolling:"
    )
    both = stack.rollout("--from-manifest", str(manifest), "--image", stack.good2)
    assert both.exit_code == 2
    assert both.stderr.splitlines()[-1] == "Error: give --image or --from-manifest, not both"


def droplet_id_of(stack: Stack, address: str) -> int:
    return int(stack.ids()[address])


def test_low_capacity_stops_before_the_batch_and_resumes(stack: Stack) -> None:
    # wp_node[1] loses its index: 404 on the check, so replacing wp_node[0] would leave one.
    web_root = stack.cloud.machines.web_root(droplet_id_of(stack, WEB[1]))
    index = web_root / "index.php"
    saved = index.read_text()
    index.unlink()
    result = stack.rollout(
        "--image",
        stack.good2,
        "--max-unavailable",
        "1",
        "--yes",
        *FAST[:-2],
        "--health-timeout",
        "1s",
    )
    assert result.exit_code == 5  # waiting for capacity: a person fixes it
    message = (
        "batch 1/3: only 1 healthy droplets would stay behind the load balancer wordpress-lb "
        f"(digitalocean_loadbalancer.wp_lb) while {WEB[0]} is replaced, under the floor of 2 "
        f"(--max-unavailable 1); not healthy: {WEB[1]} (the balancer's check http:80/); "
        "nothing of this batch was changed: fix that and run scaler rollout --resume"
        f"; {stack.tfvars} holds image_slug = {stack.good2} and wp_node_images pins [0] "
        f"{stack.good}, [1] {stack.good}, [2] {stack.good}: a plain terraform apply changes "
        "nothing this rollout has not changed"
    )
    assert result.stdout.splitlines()[0] == f"failed: {message}"
    assert result.stderr.splitlines()[-1] == f"Error: rollout failed: {message}"
    assert re.search(r"\] batch 1/3: only 1 healthy .*; waiting up to \d+s$", result.stderr, re.M)
    assert stack.ids() == stack.before  # nothing replaced
    progress = json.loads((stack.dir / ".scaler" / "rollout.json").read_text())
    assert (progress["status"], progress["done"]) == ("waiting-for-capacity", [])

    index.write_text(saved)  # fixed: the resume goes through
    resumed = stack.rollout("--resume", "--yes", *FAST)
    assert resumed.exit_code == 0, resumed.output
    assert set(stack.web_images().values()) == {stack.good2}
    assert others(stack.ids()) == others(stack.before)


def test_max_unavailable_zero_is_refused_with_the_reason(stack: Stack) -> None:
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good2, "--max-unavailable", "0", "--yes", *FAST)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: --max-unavailable 0 would never let a droplet go: a replaced droplet leaves the "
        "load balancer's healthy set until its new droplet passes the check; give 1 or more"
    )
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before


@pytest.mark.slow
def test_the_load_balancers_health_path_decides(stack: Stack) -> None:
    # Every droplet so far serves / and /wp-login.php; the new image serves / only.
    with stack.tfvars.open("a") as tfvars:
        tfvars.write('health_path = "/wp-login.php"\n')  # the stack's variable for the path
    with local_provider(stack.cloud.env()) as env:
        Terraform(stack.dir, env=env).apply()  # the balancer's check changes in place
    no_login = make_image(stack.cloud, "no-login", "<?php /* WordPress, no login */ ?>\n")
    result = stack.rollout("--image", no_login, "--canary", "--yes", *FAST)
    assert result.exit_code == 4  # rolled back, healthy
    assert "waiting for 1 droplets to pass http:80/wp-login.php 3 times" in result.stderr
    assert re.fullmatch(
        re.escape(f"rolled-back: batch 1/3: {WEB[0]} failed its health check (")
        + failed_404(WEB[0], "/wp-login.php")
        + re.escape(f"); rolled back 1 droplets to image {stack.good} (healthy)"),
        result.stdout.splitlines()[0],
    ), result.stdout
    assert set(stack.web_images().values()) == {stack.good}
    assert others(stack.ids()) == others(stack.before)


@pytest.mark.slow
def test_api_budget_paces_the_batches(stack: Stack) -> None:
    """A budget of 14 requests per 2 s: batches wait for room, no 2 s window holds more."""
    stack.cloud.reset_log()
    token = stack.env()["DIGITALOCEAN_TOKEN"]  # the provider's: the budget is per token
    meter = ApiBudget.for_cloud(Cloud(token, stack.cloud.endpoint), 14, window=2.0)
    lines: list[str] = []
    settings = Settings(
        terraform_dir=stack.dir,
        env=stack.env(),
        local=True,
        health_interval=0.05,
        health_grace=0,
        health_timeout=20,
        port_map={80: WEB_PORT},
    )
    with open_terraform(settings) as tf:
        meter.mark()
        prepared = prepare_rollout(tf, settings, stack.good2, batch_size="1")
        # the plan's refresh is Terraform's burst, before any batch: the budget paces batches
        batches_from = time.time()
        result = apply_rollout(tf, settings, prepared, report=lines.append, budget=meter)
    assert result.status == "done", result.message
    pauses = [line for line in lines if "for the API budget" in line]
    assert pauses and all(
        re.fullmatch(
            r"batch \d/3: pausing \d+s for the API budget \(\d+ requests in the last 2s, this "
            r"batch about \d+, budget 14\)",
            line,
        )
        for line in pauses
    ), lines
    times = sorted(r.time for r in stack.cloud.requests() if r.time >= batches_from)
    peak = max(sum(1 for t in times if start <= t < start + 2.0) for start in times)
    assert peak <= 14
    assert result.api_requests == sum(u.requests for u in meter.uses) > 3 * 4
    assert set(stack.web_images().values()) == {stack.good2}


# ---------------------------------------------------------------------------------------------
# Terraform as it is run: exact command lines, the embedded engine, workspaces, state lock


def terraform_commands(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The command lines python-terraform ran (its `command: ...` debug log), in order."""
    prefix = "command: "
    return [
        r.getMessage()[len(prefix) :]
        for r in caplog.records
        if r.name == "python_terraform" and r.getMessage().startswith(prefix)
    ]


def cloud_snapshot(stack: Stack) -> dict[str, Any]:
    """Every droplet (id, image), the balancer's droplets and the floating IP, from the API."""
    droplets = api(stack.cloud, "GET", "droplets?per_page=200")["droplets"]
    (lb,) = api(stack.cloud, "GET", "load_balancers")["load_balancers"]
    fips = api(stack.cloud, "GET", "floating_ips")["floating_ips"]
    return {
        "droplets": sorted((d["id"], str(d["image"]["id"])) for d in droplets),
        "lb": sorted(lb["droplet_ids"]),
        "fips": sorted((f["ip"], (f.get("droplet") or {}).get("id")) for f in fips),
    }


@pytest.mark.slow
def test_exact_terraform_command_lines_with_the_embedded_engine(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """No terraform on PATH: the embedded engine runs plan -out, show -json, apply PLANFILE."""
    caplog.set_level(logging.DEBUG, logger="python_terraform")
    bin_dir = Path(sys.executable).parent
    path = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    assert shutil.which("terraform", path=path) is None
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            *("rollout", "-C", str(stack.dir), "--image", stack.good2, "--batch-size", "2"),
            *("--yes", "--lock-timeout", "7s", "--parallelism", "3", *FAST),
        ],
        env={**stack.env(), "PATH": path},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # every Terraform dies with scaler: started under setpriv's parent-death signal
    engine = f"{shutil.which('setpriv')} --pdeathsig KILL -- {bin_dir / 'scaler-terraform'}"
    d = stack.dir
    commands = terraform_commands(caplog)
    assert commands and all(c.startswith(engine + " ") for c in commands), commands
    ran = [
        re.sub(r"-var-file=\S+\.tfvars\.json", "-var-file=PINS", c[len(engine) + 1 :])
        for c in commands
        if c != f"{engine} state pull -no-color"
    ]
    plan = "plan -input=false"
    common = f"-lock-timeout=7s -var-file={d}/terraform.tfvars -parallelism=3"
    batch = f"{plan} -refresh=false -out={d}/.scaler/batch.tfplan {common} -var-file=PINS"
    assert ran == [
        # the whole change, for the guard and the summary (tfvars pins overridden: none)
        f"{plan} -out={d}/.scaler/rollout.tfplan {common} -var-file=PINS -no-color",
        f"show -json -no-color {d}/.scaler/rollout.tfplan",
        # batch 1 of 2: wp_node[2] pinned; batch 2: nothing pinned
        f"{batch} -no-color",
        f"show -json -no-color {d}/.scaler/batch.tfplan",
        f"apply -input=false -lock-timeout=7s -parallelism=3 -no-color {d}/.scaler/batch.tfplan",
        f"{batch} -no-color",
        f"show -json -no-color {d}/.scaler/batch.tfplan",
        f"apply -input=false -lock-timeout=7s -parallelism=3 -no-color {d}/.scaler/batch.tfplan",
    ]
    assert get_tfvar(stack.tfvars, "wp_node_images") == {}  # done: every droplet on image_slug
    assert set(stack.web_images().values()) == {stack.good2}
    assert others(stack.ids()) == others(stack.before)


def test_workspace_is_the_one_terraform_reads(stack: Stack) -> None:
    with local_provider(stack.cloud.env()) as env:
        tf = Terraform(stack.dir, env=env)
        tf.run("workspace new", "staging")
        tf.run("workspace select", "default")
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good2, "--workspace", "staging", "--yes", *FAST)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: no Terraform state in workspace 'staging' of {stack.dir}; apply the stack in "
        "that workspace first, or pass the --workspace that holds it"
    )
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before


def test_terraform_state_lock_is_waited_for_then_refused(stack: Stack) -> None:
    """A terraform console holds the state lock: the plan waits --lock-timeout, then stops."""
    lock_info = stack.dir / ".terraform.tfstate.lock.info"
    before = stack.tfvars.read_bytes()
    with local_provider(stack.cloud.env()) as env:
        console = subprocess.Popen(
            [str(shutil.which("terraform")), "console"],
            cwd=stack.dir,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for("the console's state lock", lock_info.exists)
            began = time.monotonic()
            result = stack.rollout("--image", stack.good2, "--lock-timeout", "2s", "--yes", *FAST)
            waited = time.monotonic() - began
        finally:
            assert console.stdin is not None
            console.stdin.close()
            console.wait(timeout=30)
    assert result.exit_code == 1
    assert re.fullmatch(
        r"Error: Terraform's state lock is held by \S+@\S+ \(OperationTypeInvalid\) and was "
        r"not released within --lock-timeout 2s; wait for that run to finish or raise "
        r"--lock-timeout; nothing was applied and image_slug in "
        rf"{re.escape(str(stack.tfvars))} is back to '{stack.good}'",
        result.stderr.splitlines()[-1],
    ), result.stderr
    assert waited >= 2
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before


def test_rolling_needs_the_pin_variable_and_says_how_to_add_it(stack: Stack) -> None:
    variables = stack.dir / "variables.tf"
    text = variables.read_text()
    start = text.index('variable "wp_node_images"')
    variables.write_text(text[:start] + text[text.index("\n}\n", start) + 3 :])
    main_tf = stack.dir / "main.tf"
    main_tf.write_text(
        main_tf.read_text().replace(
            "lookup(var.wp_node_images, tostring(count.index), var.image_slug)", "var.image_slug"
        )
    )
    before = stack.tfvars.read_bytes()
    result = stack.rollout("--image", stack.good2, "--yes", *FAST)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: rolling batches need the variable 'wp_node_images' in the Terraform "
        "configuration, a map from count index to image that overrides image_slug per droplet: "
        'add variable "wp_node_images" (type map(string), default {}) and set the droplets\' '
        "image = lookup(var.wp_node_images, tostring(count.index), var.image_slug) "
        "(as scaler's terraform/ does), or add lifecycle { ignore_changes = [image] } to the "
        "droplets (scaler then replaces each batch with -replace), or use --strategy all"
    )
    assert stack.tfvars.read_bytes() == before
    assert stack.ids() == stack.before
    help_text = stack.rollout("--help").stdout
    assert (
        "    image = lookup(var.wp_node_images, tostring(count.index), var.image_slug)\n"
        in help_text
    )


def state_web(stack: Stack) -> dict[str, tuple[int, str]]:
    """wp_node address -> (droplet id, image) as the cloud has them, for the state's droplets."""
    out = {}
    for address in WEB:
        droplet_id = stack.ids()[address]
        droplet = api(stack.cloud, "GET", f"droplets/{droplet_id}")["droplet"]
        out[address] = (int(droplet_id), str(droplet["image"]["id"]))
    return out


@pytest.mark.slow
def test_lost_machine_refuses_a_second_rollout_then_resumes(stack: Stack) -> None:
    """A running rollout refuses a second one; after kill -9 of it all, --resume finishes."""
    progress = stack.dir / ".scaler" / "rollout.json"
    # Its own process group: scaler, Terraform and the provider die together.
    proc = spawn_rollout(
        stack, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:

        def creates() -> int:
            return sum(
                1 for r in stack.cloud.requests() if (r.method, r.path) == ("POST", "/v2/droplets")
            )

        wait_for("the first batch", lambda: batches_done(progress) >= 1, timeout=60)
        second = stack.rollout("--image", stack.good2, "--yes", *FAST)
        created = creates()
        wait_for("the second batch's droplet create", lambda: creates() > created, timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)  # the machine is gone mid-apply: no cleanup runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert second.exit_code == 1
    assert second.stderr.splitlines()[-1].startswith(
        f"Error: another scaler operation holds {stack.dir}/.scaler/rollout.lock: "
        f"pid {proc.pid} on "
    )
    assert proc.returncode == -signal.SIGKILL
    recorded = json.loads(progress.read_text())
    assert recorded["status"] == "running" and 1 <= len(recorded["done"]) < 3
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good2

    resumed = stack.rollout("--resume", "--yes", *FAST)
    assert resumed.exit_code == 0, resumed.output
    assert re.search(rf"\] took over a stale lock of pid {proc.pid} on \S+, since ", resumed.stderr)
    assert re.fullmatch(
        rf"done: [12] droplets now run image {stack.good2}, all healthy",
        resumed.stdout.splitlines()[0],
    )
    web = state_web(stack)
    assert {image for _, image in web.values()} == {stack.good2}
    (lb,) = api(stack.cloud, "GET", "load_balancers")["load_balancers"]
    assert sorted(lb["droplet_ids"]) == sorted(droplet_id for droplet_id, _ in web.values())
    ips = [
        next(n["ip_address"] for n in d["networks"]["v4"] if n["type"] == "public")
        for d in (api(stack.cloud, "GET", f"droplets/{i}")["droplet"] for i in lb["droplet_ids"])
    ]
    assert health.count_healthy(ips, health.HealthCheck(response_timeout=1.0), {80: WEB_PORT}) == 3
    assert others(stack.ids()) == others(stack.before)
    assert json.loads(progress.read_text())["status"] == "done"
    # Terraform never recorded the droplet it was creating when the machine died: the record
    # named it before the apply, and the resume removed it (no orphan outside the state)
    tagged = api(stack.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
    assert len(tagged) == 3, resumed.stderr
