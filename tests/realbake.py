"""Helpers for bake tests in real local droplets (their own network namespace, cloud-init and
sshd): one local cloud per module and worker, a one-task play, the cloud's resource ids."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need

from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.inventory import build_inventory, list_json
from scaler.local.api import Delays, LocalCloud
from scaler.state import read_state

EXAMPLE_STATE = ROOT / "examples" / "terraform.tfstate"
PING = [{"name": "Ping", "ansible.builtin.ping": {}}]


def api(cloud: LocalCloud, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One authenticated call to the local cloud's /v2 API."""
    request = urllib.request.Request(
        cloud.endpoint + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer test", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def resources(cloud: LocalCloud) -> dict[str, set[int]]:
    """Ids of the droplets, SSH keys and snapshots the cloud holds."""
    return {
        "droplets": {d["id"] for d in api(cloud, "GET", "droplets?per_page=200")["droplets"]},
        "keys": {k["id"] for k in api(cloud, "GET", "account/keys?per_page=200")["ssh_keys"]},
        "snapshots": {
            i["id"] for i in api(cloud, "GET", "images?private=true&per_page=200")["images"]
        },
    }


def write_playbook(folder: Path, tasks: list[dict[str, Any]]) -> Path:
    """A small play on packerbox (JSON is YAML)."""
    path = folder / "play.yml"
    path.write_text(json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}]))
    return path


def quick_config(tmp_path: Path, tasks: list[dict[str, Any]] | None = None, **values: Any) -> Any:
    """A bake of a small play, polling fast (the role is not the point here)."""
    settings: dict[str, Any] = {
        "project": "reliab",
        "manifest": str(tmp_path / "manifest.json"),
        "playbook": str(write_playbook(tmp_path, tasks or PING)),
        "poll_min": 0.1,
        "poll_max": 0.3,
    }
    settings.update(values)
    return apply(BakeConfig(), settings)


def example_inventory() -> dict[str, Any]:
    """The Terraform-state inventory the bake hands Ansible."""
    return list_json(build_inventory(read_state(EXAMPLE_STATE)))


def fast_cloud(cloud: LocalCloud, lines: list[str] | None = None, **pacing: Any) -> Cloud:
    """A client of the local cloud with short polls."""
    from dataclasses import replace

    say = lines.append if lines is not None else None
    return Cloud(
        "test", cloud.endpoint, pacing=replace(Pacing.fast(0.05), **pacing), on_progress=say
    )


def bake_env(cloud: LocalCloud, home: Path) -> dict[str, str]:
    """The environment of a `scaler` subprocess against the cloud (no stray TF_ or DO_ vars)."""
    home = home / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(cloud.env())
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module", name="real_cloud")
def real_cloud_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of real droplets for one module and worker (skips where they cannot run)."""
    cloud = LocalCloud(
        tmp_path_factory.mktemp("real-cloud"), delays=Delays.uniform(0.1), droplets="auto"
    )
    with cloud:
        need(cloud.machines.kind == "real", "real local droplets need root on Debian here")
        yield cloud


@pytest.fixture(name="cloud")
def cloud_fixture(real_cloud: LocalCloud) -> Iterator[LocalCloud]:
    """The real cloud without faults; the test must leave no droplet or key behind."""
    real_cloud.faults.clear()
    before = resources(real_cloud)
    yield real_cloud
    real_cloud.faults.clear()
    after = resources(real_cloud)
    assert after["droplets"] == before["droplets"]
    assert after["keys"] == before["keys"]


class ScalerProcess:
    """A `scaler` command as a real subprocess, its stderr followed line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "scaler"), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first stderr line matching pattern (regex); fails the test after timeout."""
        import re
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no stderr line matching {pattern!r}; got:\n" + "\n".join(self.lines)
                    )
                self._changed.wait(min(left, 0.2))

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        """Exit code, stdout and the whole stderr."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, out, "\n".join(self.lines)
