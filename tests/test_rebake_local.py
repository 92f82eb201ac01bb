"""A whole unattended `scaler rebake` on the local cloud: decide, bake, roll out, then not due.

Real Terraform (a tmp copy of terraform/) on real droplets, the real bake (a small play over
SSH into the build droplet: a page and a web service the image starts at boot) and the real
rollout with health checks against the droplets' own web servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import (
    ROOT,
    QuietHandler,
    serve_loopback,
    stop_loopback,
)
from conftest import cloud_api as api

from scaler.bake import bake_image
from scaler.cli import main
from scaler.cloud import Cloud, Pacing
from scaler.config import load_config_file
from scaler.local.api import LocalCloud
from scaler.manifest import last_artifact
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

TOKEN = "dop_v1_" + "5e" * 32
# Real droplets boot for a few seconds before their web server answers: failures count after
# the grace (the rollout's default), as on DigitalOcean.
FAST = ["--health-interval", "0.05", "--health-grace", "30s", "--health-timeout", "90s"]


# A web service the image enables (a systemd unit the droplet's init starts at boot).
UNIT = """[Unit]
Description=The page this image serves

[Service]
ExecStart=/usr/bin/python3 -m http.server 80 --directory /var/www/html

[Install]
WantedBy=multi-user.target
"""


def play(page: str | None) -> str:
    """A bake play that enables a web service serving `page`; None: no page and no service."""
    tasks: list[dict[str, Any]] = [{"file": {"path": "/var/www/html", "state": "directory"}}]
    if page is None:
        return json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}])
    tasks += [
        {"copy": {"dest": "/etc/systemd/system/page.service", "content": UNIT}},
        {
            "file": {
                "src": "/etc/systemd/system/page.service",
                "dest": "/etc/systemd/system/multi-user.target.wants/page.service",
                "state": "link",
            }
        },
        {"copy": {"dest": "/var/www/html/index.html", "content": page}},
    ]
    return json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}])


def assert_host_untouched() -> None:
    """The bake's play ran in the build droplet only: what it writes is not on this machine."""
    assert not Path("/etc/systemd/system/page.service").exists()
    assert not Path("/etc/systemd/system/multi-user.target.wants/page.service").exists()


def served(cloud: LocalCloud, droplet: dict[str, Any]) -> str:
    """The page a running droplet serves, read from its own root."""
    return (cloud.machines.root(droplet["id"]) / "var/www/html/index.html").read_text()


@pytest.fixture(name="cloud")
def cloud_fixture(real_cloud: LocalCloud) -> LocalCloud:
    """The session's local cloud with real droplets."""
    return real_cloud


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
    """terraform/ applied on image `old`, baked by scaler from today's play (in the manifest)."""
    work = tmp_path / "work"
    (work / "roles").mkdir(parents=True)
    (work / "play.yml").write_text(play("WordPress 1\n"))
    shutil.copy(ROOT / "config" / "cloud-config.yaml", work / "cloud-config.yaml")
    (work / "scaler.toml").write_text(
        '[bake]\nproject = "wordpress"\nimage = "debian-12-x64"\nregion = "nyc3"\n'
        'manifest = "manifest.json"\nplaybook = "play.yml"\nroles_path = "roles"\n'
        'user_data_file = "cloud-config.yaml"\n'
        "poll_min = 0.05\npoll_max = 0.2\n"
    )
    config = load_config_file(work / "scaler.toml")
    old = bake_image(config, Cloud(TOKEN, cloud.endpoint, pacing=Pacing.fast(0.05))).id
    stack = Path(shutil.copytree(ROOT / "terraform", tmp_path / "terraform"))
    (stack / "terraform.tfvars").write_text(
        f'project_name  = "wordpress"\nimage_slug    = "{old}"\nwp_node_count = 2\n'
        # scaler's probe dials the droplets from this host: the stack's firewalls would drop it
        "firewall      = false\n"
    )
    with local_provider(cloud.env()) as env:
        Terraform(stack, env=env).init()
        Terraform(stack, env=env).apply()
    try:
        yield Site(cloud, stack, work, old)
    finally:
        with local_provider(cloud.env()) as env:
            Terraform(stack, env=env).destroy()
        for image in api(cloud, "GET", "images?private=true&per_page=200")["images"]:
            if image["name"].startswith("wordpress_"):
                api(cloud, "DELETE", f"images/{image['id']}")


@pytest.mark.slow
def test_unattended_rebake_bakes_rolls_out_and_then_is_not_due(site: Site) -> None:
    stack, work, old, cloud = site.stack, site.work, site.old, site.cloud
    quiet = site.rebake("--log-format", "json")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == f"{stack}: not-due: nothing says a rebake is due\n"

    # The provisioning changes: the next scheduled run bakes and rolls out on its own.
    (work / "play.yml").write_text(play("WordPress 2\n"))
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
        assert served(cloud, droplet) == "WordPress 2\n"
    assert_host_untouched()

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
    # paced by the API budget as a hand-run rollout is: it read what the token used
    rolled = next(e for e in events if e["step"] == "rollout" and e["outcome"] == "ok")
    assert rolled["ids"]["api_requests"] > 0
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
def test_rollout_bakes_first_without_an_image(site: Site) -> None:
    """`scaler rollout` with no --image: bake as scaler.toml says, record it, roll it out."""
    (site.work / "play.yml").write_text(play("WordPress 9\n"))
    runner = CliRunner()
    args = ["rollout", "-C", str(site.stack), "--bake-config", str(site.work / "scaler.toml")]
    result = runner.invoke(
        main, [*args, "--batch-size", "2", "--yes", *FAST], env=site.env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    baked = last_artifact(site.work / "manifest.json").id
    assert baked != site.old
    assert f"] baked snapshot {baked} (wordpress_" in result.stderr
    assert result.stdout.splitlines()[0] == f"done: 2 droplets now run image {baked}, all healthy"
    assert get_tfvar(site.stack / "terraform.tfvars", "image_slug") == str(baked)
    droplets = site.web_droplets()
    assert sorted(d["image"]["id"] for d in droplets) == [baked, baked]
    for droplet in droplets:
        assert served(site.cloud, droplet) == "WordPress 9\n"
    assert_host_untouched()


@pytest.mark.slow
def test_a_broken_bake_is_rolled_back_with_exit_4(site: Site) -> None:
    # The new play leaves the web root empty: the canary fails the load balancer's check.
    (site.work / "play.yml").write_text(play(None))
    result = site.rebake(
        # the rollback waits for the balancer's own check too (3 passes 10 s apart)
        "--canary",
        "--batch-size",
        "1",
        *FAST,
        "--prune-keep",
        "0",
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
    (site.work / "play.yml").write_text(play("WordPress 3\n"))
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
    progress = json.loads((site.stack / ".scaler" / "rollout.json").read_text())
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
