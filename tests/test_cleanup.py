"""`scaler cleanup` after kill -9 of a bake at each phase: it lists (dry run) and then removes
exactly what the dead run made, and never a user's own droplet, key or snapshot."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from realbake import (  # noqa: F401 - fixtures
    EXAMPLE_STATE,
    PING,
    ScalerProcess,
    api,
    bake_env,
    cloud_fixture,
    real_cloud_fixture,
    resources,
    write_playbook,
)

from scaler.local.api import Delays, LocalCloud

SCALER = Path(sys.executable).parent / "scaler"


def _config_file(tmp_path: Path, tasks: list[dict[str, Any]]) -> None:
    playbook = write_playbook(tmp_path, tasks)
    (tmp_path / "scaler.toml").write_text(
        f'[bake]\nproject = "kill"\nplaybook = "{playbook}"\npoll_min = 0.1\npoll_max = 0.3\n'
    )


@contextlib.contextmanager
def slower(cloud: LocalCloud, **delays: float) -> Iterator[None]:
    """Some of the cloud's delays changed for one block."""
    before: Delays = cloud.delays
    cloud.delays = replace(before, **delays)
    try:
        yield
    finally:
        cloud.delays = before


SLEEP = [{"name": "Take a while", "ansible.builtin.command": "sleep 60"}]
PHASES = {
    # phase: (stderr line to kill at, play, stall the droplet, what the cloud keeps)
    "key registered": (r"registered temporary SSH key", PING, True, {"keys"}),
    "droplet booting": (
        r"waiting for droplet \d+ to become active",
        PING,
        True,
        {"keys", "droplets"},
    ),
    "provisioning": (r"provisioning droplet \d+", SLEEP, False, {"keys", "droplets"}),
    "snapshot running": (r"waiting for snapshot", PING, False, {"keys", "droplets", "snapshots"}),
}


def _cleanup(cloud: LocalCloud, tmp_path: Path, temp: Path, *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [str(SCALER), "cleanup", "--temp-dir", str(temp), *args],
        capture_output=True,
        text=True,
        env=bake_env(cloud, tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


def _user_resources(cloud: LocalCloud) -> tuple[int, int, int]:
    """A droplet named like a build droplet but untagged, a key and a snapshot of the user's."""
    droplet = api(
        cloud,
        "POST",
        "droplets",
        {
            "name": "scaler-bake-0badc0de",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "debian-12-x64",
        },
    )["droplet"]["id"]
    key = api(
        cloud,
        "POST",
        "account/keys",
        {
            "name": "laptop",
            "public_key": "ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIB3lWe8PKrW9Ahb0p7jY1CN0m3ELpHOCjMlNgr7sy5Yx me",
        },
    )["ssh_key"]["id"]
    deadline = time.monotonic() + 30
    while api(cloud, "GET", f"droplets/{droplet}")["droplet"]["status"] != "active":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    action = api(cloud, "POST", f"droplets/{droplet}/actions", {"type": "snapshot", "name": "mine"})
    action_id = action["action"]["id"]
    while api(cloud, "GET", f"actions/{action_id}")["action"]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (image,) = [
        i["id"] for i in api(cloud, "GET", "images?private=true")["images"] if i["name"] == "mine"
    ]
    return droplet, key, image


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_cleanup_after_kill_9(phase: str, cloud: LocalCloud, tmp_path: Path) -> None:
    pattern, play, stall, kept = PHASES[phase]
    mine = _user_resources(cloud)
    before = resources(cloud)
    _config_file(tmp_path, play)
    temp = tmp_path / "t"
    temp.mkdir()
    env = {**bake_env(cloud, tmp_path), "TMPDIR": str(temp)}
    if stall:
        cloud.faults.stall(name="^scaler-bake-")
    try:
        with slower(cloud, snapshot=1.5):
            bake = ScalerProcess(["bake", "--state", str(EXAMPLE_STATE)], tmp_path, env)
            bake.wait_for(pattern)
            bake.proc.send_signal(signal.SIGKILL)
            bake.finish()
            if "snapshots" in kept:
                # the snapshot action the dead bake started finishes without it
                deadline = time.monotonic() + 20
                while resources(cloud)["snapshots"] == before["snapshots"]:
                    assert time.monotonic() < deadline, "the snapshot never appeared"
                    time.sleep(0.1)
        left = resources(cloud)
        for kind in ("droplets", "keys", "snapshots"):
            grew = left[kind] != before[kind]
            assert grew == (kind in kept), (kind, left, before)
        (folder,) = list(temp.glob("scaler-bake-*"))
        record = json.loads((folder / "run.json").read_text())
        run = record["run_id"]

        code, out, err = _cleanup(cloud, tmp_path, temp)
        assert code == 0, err
        lines = out.splitlines()
        assert f"temp folder {folder} (run {run} died)" in lines
        assert len(lines) == 1 + sum(len(left[k] - before[k]) for k in kept), out
        assert resources(cloud) == left  # a dry run
        assert folder.exists()
        for ident in (*mine,):
            assert str(ident) not in out

        code, out, err = _cleanup(cloud, tmp_path, temp, "--yes")
        assert code == 0, err
        assert resources(cloud) == before
        assert not folder.exists()
        # no file is left (no key, no secret); known gap: after a kill during provisioning,
        # empty folders of Ansible's private dir can stay (its forked workers outlive it)
        assert [p for p in temp.rglob("*") if not p.is_dir()] == []
        if phase != "provisioning":
            assert list(temp.iterdir()) == []
            code, out, _ = _cleanup(cloud, tmp_path, temp)
            assert (code, out) == (0, "nothing left behind\n")
    finally:
        cloud.faults.clear()
        for ident in resources(cloud)["droplets"] - before["droplets"]:
            api(cloud, "DELETE", f"droplets/{ident}")
        for ident in resources(cloud)["keys"] - before["keys"]:
            api(cloud, "DELETE", f"account/keys/{ident}")
        droplet, key, image = mine
        api(cloud, "DELETE", f"droplets/{droplet}")
        api(cloud, "DELETE", f"account/keys/{key}")
        api(cloud, "DELETE", f"images/{image}")
