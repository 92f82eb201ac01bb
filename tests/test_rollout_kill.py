"""kill -9 of `scaler rollout` at each phase, then `--resume`, then a second rollout (issue 13,
hole 3): no orphan droplet, no deposed object, Terraform and the provider die with scaler,
their temp folders go, the record ends done, and tfvars never invites a bare apply to do more."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cloud_api as api
from conftest import wait_for
from test_rollout import FAST, Stack, cloud, stack  # noqa: F401 - fixtures

from scaler.tfvars import get_tfvar

SCALER = Path(sys.executable).parent / "scaler"


class Rollout:
    """`scaler rollout` as a process of its own, stderr followed."""

    def __init__(self, site: Stack, temp: Path, *args: str) -> None:
        env = {**os.environ, **site.env(), "TMPDIR": str(temp)}
        self.posts = 0
        self.proc = subprocess.Popen(
            [str(SCALER), "rollout", "-C", str(site.dir), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self.thread.join(timeout=10)
        return code, out, "\n".join(self.lines)


def _record(site: Stack) -> dict[str, object]:
    path = site.dir / ".scaler" / "rollout.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _posts(site: Stack) -> int:
    return sum(1 for r in site.cloud.requests() if (r.method, r.path) == ("POST", "/v2/droplets"))


def _using(folder: Path) -> list[int]:
    """Processes with a file open under folder or their working directory in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            paths = [os.readlink(entry / "cwd")]
            paths += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(p.startswith(str(folder)) for p in paths):
            found.append(int(entry.name))
    return found


PHASES: dict[str, Callable[[Stack, Rollout], bool]] = {
    "planning": lambda s, r: r.saw(r"planning the rollout of image"),
    "applying a batch": lambda s, r: (
        _record(s).get("creating") not in (None, []) and _posts(s) > r.posts
    ),  # type: ignore[attr-defined]
    "health check": lambda s, r: r.saw(r"batch 1/3: waiting for 1 droplets to pass"),
    "after the last batch": lambda s, r: (
        len(_record(s).get("done") or []) == 3  # type: ignore[arg-type]
        and _record(s).get("status") == "running"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_then_resume_then_a_second_rollout(
    phase: str,
    stack: Stack,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    temp = tmp_path / "t"
    temp.mkdir()
    stack.cloud.reset_log()
    run = Rollout(
        stack,
        temp,
        "--image",
        stack.good2,
        "--batch-size",
        "1",
        "--yes",
        "--health-interval",
        "0.3",
        "--health-grace",
        "0",
    )
    run.posts = _posts(stack)
    try:
        wait_for(phase, lambda: PHASES[phase](stack, run), timeout=120)
        os.kill(run.proc.pid, signal.SIGKILL)  # scaler only: its children must follow
        run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    assert run.proc.returncode == -signal.SIGKILL
    # Terraform (cwd: the stack) and the provider (files in its temp folder) die with scaler
    wait_for(
        "Terraform and the provider to die",
        lambda: not _using(stack.dir) and not _using(temp),
        timeout=20,
    )
    images = {stack.good, stack.good2}
    # a plain terraform apply now would change nothing the rollout had not: every droplet
    # not yet rolled is pinned to the image it runs
    slug = get_tfvar(stack.tfvars, "image_slug")
    assert slug in images
    if slug == stack.good2:
        # each droplet not rolled yet is pinned to the image it was on
        pins = get_tfvar(stack.tfvars, "wp_node_images")
        assert isinstance(pins, dict) and set(pins.values()) <= {stack.good}
        # (the batch being applied when scaler died is no longer pinned: it was changing)
        not_done = 3 - len(_record(stack).get("done") or [])  # type: ignore[arg-type]
        assert len(pins) in (not_done, not_done - 1)

    env = {**os.environ, **stack.env(), "TMPDIR": str(temp)}
    resumed = subprocess.run(
        [str(SCALER), "rollout", "-C", str(stack.dir), "--resume", "--yes", *FAST],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    if phase == "applying a batch":
        # the droplet the dead apply was creating is not in the state: found and removed
        assert "the interrupted apply of digitalocean_droplet.wp_node[" in resumed.stderr
    assert resumed.stdout.startswith("done: "), resumed.stdout
    assert "nothing to do" not in resumed.stdout + resumed.stderr
    assert _record(stack)["status"] == "done"
    assert get_tfvar(stack.tfvars, "wp_node_images") == {}
    tagged = api(stack.cloud, "GET", "droplets?tag_name=wp_node&per_page=200")["droplets"]
    assert len(tagged) == 3, resumed.stderr  # no orphan outside the state
    assert {str(d["image"]["id"]) for d in tagged} == {stack.good2}
    state = json.loads((stack.dir / "terraform.tfstate").read_text())
    deposed = [i for r in state["resources"] for i in r["instances"] if "deposed" in i]
    assert deposed == []
    assert list(temp.glob("scaler-provider-*")) == []

    second = subprocess.run(
        [str(SCALER), "rollout", "-C", str(stack.dir), "--image", stack.good, "--yes", *FAST],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("done: 3 droplets now run image"), second.stdout
    assert list(temp.glob("scaler-*")) == []


def _snapshot_in(site: Stack, region: str, name: str, size: str = "s-1vcpu-1gb") -> str:
    """A snapshot taken of a droplet in region, through the API; the droplet goes."""
    spec = {"name": f"build-{name}", "region": region, "size": size}
    droplet = api(site.cloud, "POST", "droplets", spec | {"image": "debian-12-x64"})["droplet"]
    wait_for(
        "the build droplet",
        lambda: (
            api(site.cloud, "GET", f"droplets/{droplet['id']}")["droplet"]["status"] == "active"
        ),
    )
    body = {"type": "snapshot", "name": name}
    action = api(site.cloud, "POST", f"droplets/{droplet['id']}/actions", body)["action"]
    wait_for(
        "the snapshot",
        lambda: (
            api(site.cloud, "GET", f"actions/{action['id']}")["action"]["status"] == "completed"
        ),
    )
    snapshots = api(site.cloud, "GET", f"droplets/{droplet['id']}/snapshots")["snapshots"]
    api(site.cloud, "DELETE", f"droplets/{droplet['id']}")
    return str(next(s["id"] for s in snapshots if s["name"] == name))


@pytest.mark.slow
def test_a_bad_image_is_refused_before_any_plan(stack: Stack) -> None:  # noqa: F811
    before = stack.tfvars.read_bytes()
    cases = {
        "999999": "Error: image 999999 does not exist (the API has no image 999999); nothing "
        "was planned: pass a snapshot id from manifest.json or `scaler snapshots list`",
        "-5": "Error: --image '-5' is not an image id (a positive number) or slug; pass the "
        "snapshot id from manifest.json or `scaler snapshots list`",
        "0": "Error: --image '0' is not an image id (a positive number) or slug; pass the "
        "snapshot id from manifest.json or `scaler snapshots list`",
        "x/../droplets": "Error: --image 'x/../droplets' is not an image id (a positive number) "
        "or slug; pass the snapshot id from manifest.json or `scaler snapshots list`",
    }
    # A snapshot that exists, but in another region than the droplets' (nyc3).
    elsewhere = _snapshot_in(stack, "ams3", "wp-ams3")
    cases[elsewhere] = (
        f"Error: image {elsewhere} (wp-ams3) is not in nyc3, where the droplets run (it is in "
        "ams3); nothing was planned: transfer it there first (scaler bake --snapshot-region)"
    )
    # One baked on a larger size: its disk (80 GB) does not fit the droplets' (25 GB).
    larger = _snapshot_in(stack, "nyc3", "wp-80gb", size="s-2vcpu-4gb")
    cases[larger] = (
        f"Error: image {larger} (wp-80gb) needs a disk of 80 GB and the droplets have 25 GB; "
        "nothing was planned: bake it on a size no larger than the droplets' (scaler bake "
        "--size), or give the droplets a larger size"
    )
    for image, message in cases.items():
        result = stack.rollout("--image", image, "--yes", *FAST)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines()[-1] == message
    assert stack.tfvars.read_bytes() == before
    assert not (stack.dir / ".scaler" / "rollout.json").exists()
    assert stack.ids() == stack.before
