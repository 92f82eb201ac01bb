"""A tutorial user's own project, end to end on real local droplets: their Packer template and var
file, their playbook and their own role (nginx serving a page and a health file, nothing of
scaler's), their stacks (a balancer selecting droplets by `droplet_tag`, a `for_each` stack),
a rolling rollout with canary, an interrupted rollout and `--resume`, and a scheduled rebake
(not due, the role edited, due, rolled out). The role runs in build droplets only.

The user's role is baked twice per session (two versions of the page), in one fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, wait_for
from conftest import cloud_api as api
from tutorial import WEB_TAG, Attach, set_page, write_project, write_stack

from scaler.local.api import LocalCloud
from scaler.manifest import read_manifest
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

TOKEN = "dop_v1_" + "7a" * 32
SCALER = str(Path(sys.executable).parent / "scaler")
# Real droplets boot for a few seconds before nginx answers: failures count after the grace.
FAST = ["--health-interval", "0.2", "--health-grace", "30s", "--health-timeout", "120s"]
HOST_PATHS = (
    "/var/www/html/healthz",
    "/etc/scaler",
    "/var/www/wordpress",
    "/etc/nginx/sites-available/wordpress",
)


def assert_host_clean() -> None:
    """The user's role ran in build droplets only: nothing of it is on this machine."""
    for path in HOST_PATHS:
        assert not Path(path).exists(), path
    index = Path("/var/www/html/index.html")
    assert not index.is_file() or "tutorial site" not in index.read_text(errors="replace")


def user_env(cloud: LocalCloud, home: Path) -> dict[str, str]:
    """A user's shell: the token only in DIGITALOCEAN_TOKEN (the var file has none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(cloud.env())
    env.update(DIGITALOCEAN_TOKEN=TOKEN, DIGITALOCEAN_ACCESS_TOKEN=TOKEN, HOME=str(home))
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> Any:
    done = subprocess.run(
        [SCALER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert TOKEN not in done.stdout + done.stderr
    return done


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode().strip())
    except OSError:
        return None


@dataclass(frozen=True)
class Baked:
    """The user's project and the two snapshots baked from it (page v1, then v2)."""

    cloud: LocalCloud
    project: Path
    home: Path
    v1: int
    v2: int
    first_bake_err: str

    def env(self) -> dict[str, str]:
        return user_env(self.cloud, self.home)


@pytest.fixture(scope="session")
def tutorial_baked(real_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Baked:
    """`scaler bake --packer-template web-node.json -var-file=variables.json`, twice."""
    base = tmp_path_factory.mktemp("tutorial-user")
    project = write_project(base / "site", "tutorial site v1")
    home = base / "home"
    home.mkdir()
    env = user_env(real_cloud, home)
    args = ["bake", "--packer-template", "web-node.json", "-var-file=variables.json"]
    args += ["--state", str(ROOT / "examples" / "terraform.tfstate"), "--json"]
    first = run(args, project, env)
    assert first.returncode == 0, first.stderr
    set_page(project, "tutorial site v2")
    second = run(args, project, env)
    assert second.returncode == 0, second.stderr
    v1, v2 = json.loads(first.stdout)["id"], json.loads(second.stdout)["id"]
    return Baked(real_cloud, project, home, int(v1), int(v2), first.stderr)


@dataclass
class Stack:
    dir: Path
    baked: Baked

    def rollout(self, *args: str) -> Any:
        return run(["rollout", "-C", str(self.dir), *args], self.dir, self.baked.env())

    def pages(self) -> list[str]:
        """What each web droplet answers on GET / (its own nginx, over its own address)."""
        droplets = api(self.baked.cloud, "GET", f"droplets?tag_name={WEB_TAG}&per_page=200")
        port = self.baked.cloud.env()["SCALER_LOCAL_WEB_PORT"]
        out = []
        for droplet in droplets["droplets"]:
            ip = next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")
            # a droplet just created boots for a while before its nginx answers
            out.append(wait_for(f"nginx on {ip}", lambda ip=ip: _get(f"http://{ip}:{port}/"), 180))
        return sorted(out)

    def images(self) -> list[int]:
        droplets = api(self.baked.cloud, "GET", f"droplets?tag_name={WEB_TAG}&per_page=200")
        return sorted(int(d["image"]["id"]) for d in droplets["droplets"])


@contextlib.contextmanager
def applied(
    baked: Baked, folder: Path, attach: Attach, image: int, **options: Any
) -> Iterator[Stack]:
    """The user's stack applied on `image`; destroyed afterwards, also when the test fails."""
    write_stack(folder, attach, image, path="/healthz", **options)
    with local_provider(baked.cloud.env()) as env:
        Terraform(folder, env=env).init()
        try:
            Terraform(folder, env=env).apply()
            yield Stack(folder, baked)
        finally:
            Terraform(folder, env=env).destroy()


def plain_plan_changes(stack: Stack) -> bool:
    """Would a plain `terraform plan` (the team's old habit) change anything?"""
    with local_provider(stack.baked.cloud.env()) as env:
        return Terraform(stack.dir, env=env).plan().changed


def progress_done(stack: Stack, image: int) -> int:
    """Droplets the rollout record of the rollout to `image` counts as done (0 before it)."""
    record = stack.dir / ".scaler" / "rollout.json"
    if not record.exists():
        return 0
    data = json.loads(record.read_text())
    return len(data["done"]) if data["target_image"] == str(image) else 0


@pytest.mark.slow
def test_the_bake_runs_the_users_role_in_the_build_droplet(tutorial_baked: Baked) -> None:
    baked = tutorial_baked
    assert baked.v1 != baked.v2
    # the role has no welp_db_password: nothing says anything about one
    assert "welp_db_password" not in baked.first_bake_err
    builds = read_manifest(baked.project / "manifest.json")["builds"]
    hashes = [b["custom_data"]["provisioning_sha256"] for b in builds]
    assert len(builds) == 2 and hashes[0] != hashes[1]  # the role's edit is in the hash
    assert [b["artifact_id"] for b in builds] == [f"nyc3:{baked.v1}", f"nyc3:{baked.v2}"]
    assert_host_clean()


@pytest.mark.slow
def test_tag_balancer_rolling_canary_then_interrupted_and_resumed(
    tutorial_baked: Baked, tmp_path: Path
) -> None:
    baked = tutorial_baked
    with applied(baked, tmp_path / "stack", "droplet_tag", baked.v1) as stack:
        assert stack.pages() == ["tutorial site v1"] * 3
        done = stack.rollout(
            "--image", str(baked.v2), "--canary", "--batch-size", "1", "--yes", *FAST
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == (
            f"done: 3 droplets now run image {baked.v2}, all healthy"
        )
        assert "batch 1/3: healthy" in done.stderr and "batch 3/3: healthy" in done.stderr
        assert stack.images() == [baked.v2] * 3
        assert stack.pages() == ["tutorial site v2"] * 3
        assert not plain_plan_changes(stack)

        # Back to v1, interrupted after the first batch (Ctrl-C), then resumed.
        cmd = [SCALER, "rollout", "-C", str(stack.dir), "--image", str(baked.v1)]
        cmd += ["--batch-size", "1", "--yes", *FAST]
        proc = subprocess.Popen(
            cmd, env=baked.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for("the first batch", lambda: progress_done(stack, baked.v1) >= 1, timeout=300)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err
        record = json.loads((stack.dir / ".scaler" / "rollout.json").read_text())
        assert record["status"] == "interrupted"
        rolled = len(record["done"])
        assert 1 <= rolled < 3
        tfvars = stack.dir / "terraform.tfvars"
        assert out.splitlines()[0].startswith(
            f"interrupted: interrupted after {rolled} of 3 droplets; run scaler rollout --resume "
            f"to continue; {tfvars} holds image_slug = {baked.v1} and wp_node_images pins "
        )
        assert out.splitlines()[0].endswith(
            ": a plain terraform apply changes nothing this rollout has not changed"
        )
        pins = get_tfvar(tfvars, "wp_node_images")
        assert isinstance(pins, dict) and sorted(pins.values()) == [str(baked.v2)] * (3 - rolled)
        # what the message says: a plain plan changes nothing
        assert not plain_plan_changes(stack)
        assert stack.images() == sorted([baked.v1] * rolled + [baked.v2] * (3 - rolled))

        resumed = stack.rollout("--resume", "--yes", *FAST)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.splitlines()[0] == (
            f"done: {3 - rolled} droplets now run image {baked.v1}, all healthy"
        )
        assert stack.images() == [baked.v1] * 3
        assert stack.pages() == ["tutorial site v1"] * 3
        assert get_tfvar(tfvars, "wp_node_images") == {}
        assert not plain_plan_changes(stack)
    assert_host_clean()


@pytest.mark.slow
def test_for_each_stack_rolls_with_a_canary(tutorial_baked: Baked, tmp_path: Path) -> None:
    baked = tutorial_baked
    with applied(baked, tmp_path / "stack", "for_each", baked.v1, galera=False) as stack:
        done = stack.rollout(
            "--image", str(baked.v2), "--canary", "--batch-size", "2", "--yes", *FAST
        )
        assert done.returncode == 0, done.stderr
        assert 'batch 1/2: planning digitalocean_droplet.wp_node["blue"]' in done.stderr
        assert stack.images() == [baked.v2] * 3
        assert stack.pages() == ["tutorial site v2"] * 3
        assert not plain_plan_changes(stack)


@pytest.mark.slow
def test_scheduled_rebake_not_due_then_the_role_edited_then_rolled_out(
    tutorial_baked: Baked, tmp_path: Path
) -> None:
    baked = tutorial_baked
    project = Path(shutil.copytree(baked.project, tmp_path / "site"))
    rebake = ["rebake", "--packer-template", "web-node.json", "--packer-var-file"]
    rebake += ["variables.json"]
    with applied(baked, tmp_path / "stack", "droplet_tag", baked.v2, galera=False) as stack:
        rebake += ["-C", str(stack.dir)]
        quiet = run([*rebake, "--check"], project, baked.env())
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stdout == f"{stack.dir}: not-due: nothing says a rebake is due\n"

        set_page(project, "tutorial site v3")  # the user edits their role
        due = run([*rebake, "--check"], project, baked.env())
        assert due.returncode == 6, due.stderr
        assert due.stdout.startswith(f"{stack.dir}: due: ")

        started = time.monotonic()
        rolled = run([*rebake, "--canary", "--batch-size", "1", *FAST], project, baked.env())
        assert rolled.returncode == 3, rolled.stderr
        new = read_manifest(project / "manifest.json")["builds"][-1]["artifact_id"]
        new_id = int(new.rpartition(":")[2])
        assert rolled.stdout == (
            f"{stack.dir}: rolled-out: 3 droplets now run image {new_id}, all healthy\n"
        )
        assert stack.images() == [new_id] * 3
        assert stack.pages() == ["tutorial site v3"] * 3
        assert get_tfvar(stack.dir / "terraform.tfvars", "image_slug") == str(new_id)
        assert time.monotonic() - started < 1800

        again = run([*rebake, "--check"], project, baked.env())
        assert again.returncode == 0, again.stderr
    assert_host_clean()
