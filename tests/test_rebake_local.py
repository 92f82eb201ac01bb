"""A whole unattended `scaler rebake` on the local cloud: decide, bake, roll out, then not due.

Real Terraform (a tmp copy of terraform/), the real bake (a small play over the local
connection, confined to the droplet's root) and the real rollout with health checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import (
    ROOT,
    QuietHandler,
    module_cloud,
    serve_loopback,
    stop_loopback,
    wait_for,
)
from conftest import cloud_api as api

from scaler.bake import provisioning_hash
from scaler.cli import main
from scaler.local.api import LocalCloud
from scaler.manifest import append_build, last_artifact
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

WEB_PORT = 18081
TOKEN = "dop_v1_" + "5e" * 32
FAST = ["--health-interval", "0.05", "--health-grace", "0", "--health-timeout", "20s"]


def play(page: str) -> str:
    """A bake play that puts `page` at the droplet's web root (JSON is YAML)."""
    tasks = [
        {"file": {"path": "{{ welp_root }}/var/www/html", "state": "directory"}},
        {"copy": {"dest": "{{ welp_root }}/var/www/html/index.php", "content": page}},
    ]
    return json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with module_cloud(
        tmp_path_factory,
        "rebake-cloud",
        rate_limit_per_minute=100_000,
        web_port=WEB_PORT,
    ) as cloud:
        yield cloud


def first_image(cloud: LocalCloud) -> int:
    """The snapshot the stack starts on: a droplet with a page at its web root, snapshotted."""
    droplet = api(
        cloud,
        "POST",
        "droplets",
        {"name": "build", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"},
    )["droplet"]
    wait_for(
        "the build droplet",
        lambda: api(cloud, "GET", f"droplets/{droplet['id']}")["droplet"]["status"] == "active",
    )
    web = cloud.machines.web_root(droplet["id"])
    web.mkdir(parents=True, exist_ok=True)
    (web / "index.php").write_text("<?php /* WordPress 1 */ ?>\n")
    action = api(
        cloud,
        "POST",
        f"droplets/{droplet['id']}/actions",
        {"type": "snapshot", "name": "wordpress_first"},
    )["action"]
    wait_for(
        "the snapshot",
        lambda: api(cloud, "GET", f"actions/{action['id']}")["action"]["status"] == "completed",
    )
    snaps = api(cloud, "GET", f"droplets/{droplet['id']}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"droplets/{droplet['id']}")
    return int(snaps[0]["id"])


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = serve_loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@dataclass
class Site:
    """A stack applied on the local cloud, its first image, and the project folder."""

    cloud: LocalCloud
    stack: Path
    work: Path
    old: int

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.cloud.env(),
            "DIGITALOCEAN_TOKEN": TOKEN,
            "DIGITALOCEAN_ACCESS_TOKEN": TOKEN,
            "SCALER_LOCAL_WEB_PORT": str(WEB_PORT),
            "SCALER_LOCAL_STATE_DIR": str(self.cloud.state_dir),
        }

    def rebake(self, *args: str) -> Result:
        base = ["rebake", "--config", str(self.work / "scaler.toml"), "-C", str(self.stack)]
        return CliRunner().invoke(main, [*base, *args], env=self.env)

    def web_droplets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = api(
            self.cloud, "GET", "droplets?tag_name=wp_node&per_page=200"
        )["droplets"]
        return found


@pytest.fixture
def site(cloud: LocalCloud, tmp_path: Path) -> Iterator[Site]:
    """terraform/ applied on image `old`; a manifest saying `old` was baked from today's play."""
    cloud.reset()
    old = first_image(cloud)
    stack = Path(shutil.copytree(ROOT / "terraform", tmp_path / "terraform"))
    (stack / "terraform.tfvars").write_text(
        f'project_name  = "wordpress"\nimage_slug    = "{old}"\nwp_node_count = 2\n'
    )
    with local_provider(cloud.env()) as env:
        Terraform(stack, env=env).init()
        Terraform(stack, env=env).apply()
    work = tmp_path / "work"
    (work / "roles").mkdir(parents=True)
    (work / "play.yml").write_text(play("<?php /* WordPress 1 */ ?>\n"))
    shutil.copy(ROOT / "config" / "cloud-config.yaml", work / "cloud-config.yaml")
    (work / "scaler.toml").write_text(
        '[bake]\nproject = "wordpress"\nimage = "debian-12-x64"\nregion = "nyc3"\n'
        'manifest = "manifest.json"\nplaybook = "play.yml"\nroles_path = "roles"\n'
        'user_data_file = "cloud-config.yaml"\nconnection = "local"\n'
        "poll_min = 0.05\npoll_max = 0.2\n"
    )
    append_build(
        work / "manifest.json",
        regions=["nyc3"],
        image_id=old,
        build_time=int(time.time()),
        custom_data={
            "base_image": "debian-12-x64",
            "base_image_id": 150000001,
            "provisioning_sha256": provisioning_hash(
                work / "play.yml", work / "roles", work / "cloud-config.yaml"
            ),
        },
    )
    yield Site(cloud, stack, work, old)
    with local_provider(cloud.env()) as env:
        Terraform(stack, env=env).destroy()


@pytest.mark.slow
def test_unattended_rebake_bakes_rolls_out_and_then_is_not_due(site: Site) -> None:
    stack, work, old, cloud = site.stack, site.work, site.old, site.cloud
    quiet = site.rebake("--log-format", "json")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == f"{stack}: not-due: nothing says a rebake is due\n"

    # The provisioning changes: the next scheduled run bakes and rolls out on its own.
    (work / "play.yml").write_text(play("<?php /* WordPress 2 */ ?>\n"))
    hook = Hook()
    try:
        result = site.rebake(
            "--batch-size",
            "1",
            *FAST,
            "--log-format",
            "json",
            "--notify-url",
            hook.url,
            "--prune-keep",
            "0",
        )
    finally:
        stop_loopback(hook.server)
    assert result.exit_code == 3, result.output
    new = last_artifact(work / "manifest.json")
    assert new.id != old
    assert result.stdout == (
        f"{stack}: rolled-out: 2 droplets now run image {new.id}, all healthy\n"
    )
    assert get_tfvar(stack / "terraform.tfvars", "image_slug") == str(new.id)
    droplets = site.web_droplets()
    assert sorted(d["image"]["id"] for d in droplets) == [new.id, new.id]
    for droplet in droplets:
        served = cloud.machines.web_root(droplet["id"]) / "index.php"
        assert served.read_text() == "<?php /* WordPress 2 */ ?>\n"

    events = [json.loads(line) for line in result.stderr.splitlines()]
    finished = [(e["step"], e["outcome"]) for e in events if e["outcome"] != "info"]
    assert finished == [
        ("lock", "ok"),
        ("decide", "ok"),
        ("bake", "ok"),
        ("rollout", "ok"),
        ("prune", "ok"),
        ("finish", "ok"),
        ("notify", "ok"),
    ]
    decide = next(e for e in events if e["step"] == "decide")
    assert decide["ids"]["reasons"] == ["provisioning"]
    bake = next(e for e in events if e["step"] == "bake" and e["outcome"] == "ok")
    assert bake["ids"]["snapshot"] == new.id
    assert TOKEN not in result.stderr + result.stdout
    # The old snapshot runs nowhere any more: the prune after the rollout deleted it.
    prune = next(e for e in events if e["step"] == "prune")
    assert (prune["ids"]["deleted"], prune["ids"]["kept"]) == ([old], [new.id])
    images = api(cloud, "GET", "images?private=true&per_page=200")["images"]
    assert [i["id"] for i in images if i["name"].startswith("wordpress_")] == [new.id]

    (body,) = hook.bodies
    assert body["exit_code"] == 3 and body["outcome"] == "rolled-out"
    assert body["sites"][0]["snapshot_id"] == new.id
    assert body["sites"][0]["previous_image"] == str(old)
    assert body["sites"][0]["pruned"] == [old]
    assert TOKEN not in json.dumps(body)

    again = site.rebake()
    assert again.exit_code == 0, again.output
    assert again.stdout == f"{stack}: not-due: nothing says a rebake is due\n"


@pytest.mark.slow
def test_a_broken_bake_is_rolled_back_with_exit_4(site: Site) -> None:
    # The new play leaves the web root empty: the canary fails the load balancer's check.
    (site.work / "play.yml").write_text(
        json.dumps(
            [
                {
                    "hosts": "packerbox",
                    "gather_facts": False,
                    "tasks": [
                        {"file": {"path": "{{ welp_root }}/var/www/html", "state": "directory"}}
                    ],
                }
            ]
        )
    )
    result = site.rebake(
        "--canary", "--batch-size", "1", *FAST[:4], "--health-timeout", "3s", "--prune-keep", "0"
    )
    assert result.exit_code == 4, result.output
    new = last_artifact(site.work / "manifest.json").id
    assert result.stdout.startswith(f"{site.stack}: rolled-back: ")
    assert f"rolled back 1 droplets to image {site.old} (healthy)" in result.stdout
    assert get_tfvar(site.stack / "terraform.tfvars", "image_slug") == str(site.old)
    assert [d["image"]["id"] for d in site.web_droplets()] == [site.old, site.old]
    assert new != site.old
    # No prune after a failure: the new snapshot stays for a person to look at.
    images = api(site.cloud, "GET", "images?private=true&per_page=200")["images"]
    assert {site.old, new} <= {i["id"] for i in images}


@pytest.mark.slow
def test_sigterm_during_the_rollout_stops_after_the_batch_and_needs_a_person(
    site: Site, tmp_path: Path
) -> None:
    (site.work / "play.yml").write_text(play("<?php /* WordPress 3 */ ?>\n"))
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "scaler"),
            "rebake",
            "--config",
            str(site.work / "scaler.toml"),
            "-C",
            str(site.stack),
            "--batch-size",
            "1",
            *FAST,
            "--log-format",
            "json",
        ],
        env={**os.environ, **site.env, "HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    events = []
    for line in proc.stderr:
        events.append(json.loads(line))
        if events[-1]["step"] == "rollout" and events[-1]["outcome"] == "info":
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    events += [json.loads(line) for line in err.splitlines()]
    assert proc.returncode == 5, out + err
    assert out.startswith(f"{site.stack}: needs-person: ")
    assert "run scaler rollout --resume to continue" in out
    assert [e["message"] for e in events if e["step"] == "stop"] == [
        "SIGTERM: stopping after the current step"
    ]
    rollout = [e for e in events if e["step"] == "rollout" and e["outcome"] != "info"]
    assert [e["outcome"] for e in rollout] == ["failed"]
    assert rollout[0]["ids"]["status"] == "interrupted"
    progress = json.loads((site.stack / ".scaler-rollout.json").read_text())
    assert progress["status"] == "interrupted"
    # The next scheduled run leaves the half-done rollout to a person.
    after = site.rebake()
    assert after.exit_code == 5
    assert "finish it with `scaler rollout --resume` before rebaking" in after.stdout


@pytest.mark.slow
def test_sigterm_during_a_bake_cleans_up_and_skips_the_other_sites(
    site: Site, tmp_path: Path
) -> None:
    with (site.work / "scaler.toml").open("a") as toml:
        toml.write(
            f'\n[[sites]]\nname = "a"\nterraform_dir = "{site.stack}"\n'
            f'\n[[sites]]\nname = "b"\nterraform_dir = "{site.stack}"\n'
        )
    tfvars_before = (site.stack / "terraform.tfvars").read_text()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "scaler"),
            "rebake",
            "--all",
            "--force",
            "--config",
            str(site.work / "scaler.toml"),
            "--log-format",
            "json",
        ],
        env={**os.environ, **site.env, "HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line)
        if event["step"] == "bake" and event["outcome"] == "info":
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    first, second = out.splitlines()
    assert first.startswith("a: error: bake interrupted (SIGTERM) while ")
    assert second == "b: error: not started: the run was stopped"
    assert (site.stack / "terraform.tfvars").read_text() == tfvars_before
    leftovers = api(site.cloud, "GET", "droplets?per_page=200")["droplets"]
    assert not [d for d in leftovers if d["name"].startswith("scaler-bake-")]
