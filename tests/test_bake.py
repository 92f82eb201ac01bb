"""scaler bake end to end on the local cloud: real Ansible, real SSH, real snapshots, real HTTP.

The helpers here are shared with tests/test_bake_faults.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BAKE_SECRET_TOKEN, BakedWordPress

from scaler.bake import BakeResult, bake_image
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.inventory import build_inventory, list_json
from scaler.local.api import LocalCloud
from scaler.manifest import last_artifact, read_manifest
from scaler.state import read_state

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_STATE = ROOT / "examples" / "terraform.tfstate"
DB_FIP = "203.0.113.50"  # module.galera.digitalocean_floating_ip.ha_db_fip in EXAMPLE_STATE
WORDPRESS = Path("/usr/share/wordpress")
SCALER = Path(sys.executable).parent / "scaler"
SECRET_TOKEN = BAKE_SECRET_TOKEN


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
    """A small play on packerbox (JSON is YAML) for steps where the role is not the point."""
    path = folder / "play.yml"
    path.write_text(json.dumps([{"hosts": "packerbox", "gather_facts": False, "tasks": tasks}]))
    return path


class BakeProcess:
    """`scaler bake` as a real subprocess, its stderr followed line by line."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], *, stdin: bool = False
    ) -> None:
        self.proc = subprocess.Popen(
            [str(SCALER), "bake", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
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

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The first stderr line matching pattern (regex); fails the test after timeout."""
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

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit code, stdout and the whole stderr."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, out, "\n".join(self.lines)


def bake_env(cloud: LocalCloud, home: Path) -> dict[str, str]:
    """The environment of a bake subprocess: the local cloud, a secret token, no stray TF_STATE.

    HOME is the test's own (a long path: ssh's control socket must not live under it)."""
    home = home / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(
        DIGITALOCEAN_API_URL=cloud.url,
        DIGITALOCEAN_TOKEN=SECRET_TOKEN,
        HOME=str(home),
        PYTHONPATH=str(ROOT),
    )
    return env


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(name="bake_cloud")
def bake_cloud_fixture(real_cloud: LocalCloud) -> LocalCloud:
    """The session's local cloud with real droplets: a bake provisions a host of its own."""
    return real_cloud


@pytest.fixture(name="cloud")
def cloud_fixture(bake_cloud: LocalCloud) -> Iterator[LocalCloud]:
    """The bake cloud without faults; the test must leave no droplet or key behind."""
    bake_cloud.faults.clear()
    before = resources(bake_cloud)
    yield bake_cloud
    bake_cloud.faults.clear()
    after = resources(bake_cloud)
    assert after["droplets"] == before["droplets"]
    assert after["keys"] == before["keys"]


def example_inventory() -> dict[str, Any]:
    """The Terraform-state inventory the bake hands Ansible (ha_db_fip inside module galera)."""
    return list_json(build_inventory(read_state(EXAMPLE_STATE)))


def role_config(tmp_path: Path, **values: Any) -> BakeConfig:
    """A bake of the real role with WordPress from Debian's package (in the droplet)."""
    settings: dict[str, Any] = {
        "project": "nav-guide",
        "manifest": str(tmp_path / "manifest.json"),
        "extra_vars": {"welp_db_password": "s3cret-db", "welp_wordpress_package": "wordpress"},
    }
    settings.update(values)
    return apply(BakeConfig(), settings)


def fast_cloud(cloud: LocalCloud, lines: list[str] | None = None) -> Cloud:
    say = lines.append if lines is not None else None
    return Cloud("test", cloud.endpoint, pacing=Pacing.fast(0.05), on_progress=say)


def wait_active(cloud: LocalCloud, droplet_id: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        droplet: dict[str, Any] = api(cloud, "GET", f"droplets/{droplet_id}")["droplet"]
        if droplet["status"] == "active":
            return droplet
        assert time.monotonic() < deadline, f"droplet {droplet_id} never became active"
        time.sleep(0.05)


def serves_wordpress(
    cloud: LocalCloud, image_id: int, region: str = "nyc3"
) -> tuple[int, bytes, str]:
    """A droplet from the snapshot, no Ansible run of its own: HTTP status and body of /, and
    its wp-config.php (read from the running droplet's root)."""
    created = api(
        cloud,
        "POST",
        "droplets",
        {"name": "from-snapshot", "region": region, "size": "s-1vcpu-1gb", "image": image_id},
    )
    droplet_id = created["droplet"]["id"]
    try:
        droplet = wait_active(cloud, droplet_id)
        (address,) = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"]
        status, body = http_get(f"http://{address}:{cloud.machines.web_port()}/", wait=60)
        config = cloud.machines.root(droplet_id) / "var/www/wordpress/wp-config.php"
        return status, body, config.read_text()
    finally:
        api(cloud, "DELETE", f"droplets/{droplet_id}")


def http_get(url: str, wait: float = 0) -> tuple[int, bytes]:
    """Status and body of GET url. For `wait` seconds a droplet still booting is waited for:
    connection errors, and nginx's 502/503 while PHP-FPM is not up yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            if err.code not in (502, 503) or time.monotonic() > deadline:
                return err.code, err.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def drop_snapshot(cloud: LocalCloud, result: BakeResult) -> None:
    api(cloud, "DELETE", f"images/{result.id}")


# --- happy paths --------------------------------------------------------------------------------


def test_bake_honours_429_and_copies_to_extra_regions(cloud: LocalCloud, tmp_path: Path) -> None:
    """A 429 on droplet create waits retry-after; the snapshot, manifest and description."""
    cloud.faults.fail("POST", "/v2/droplets", status=429, retry_after=1)
    cloud.reset_log()
    lines: list[str] = []
    play = write_playbook(tmp_path, [{"ansible.builtin.ping": {}}])
    config = role_config(tmp_path, playbook=str(play), snapshot_regions=["ams3"])
    result = bake_image(
        config,
        fast_cloud(cloud, lines),
        inventory=example_inventory(),
        on_progress=lines.append,
    )
    try:
        creates = [r for r in cloud.requests() if r.template == "POST /v2/droplets"]
        assert [r.status for r in creates] == [429, 202]
        assert creates[1].time - creates[0].time >= 1.0
        assert any(line == "rate limited on POST /v2/droplets; retrying in 1.0s" for line in lines)

        assert re.fullmatch(r"nav-guide_\d\d-\d\d-\d\d-\d\d-\d\d-\d\d", result.name)
        assert result.regions == ("ams3", "nyc3")
        assert result.artifact_id == f"ams3,nyc3:{result.id}"
        image = api(cloud, "GET", f"images/{result.id}")["image"]
        assert image["name"] == result.name and sorted(image["regions"]) == ["ams3", "nyc3"]

        manifest = read_manifest(tmp_path / "manifest.json")
        (build,) = manifest["builds"]
        assert build["artifact_id"] == result.artifact_id
        assert build["builder_type"] == "digitalocean" and build["files"] is None
        assert manifest["last_run_uuid"] == build["packer_run_uuid"]
        assert re.fullmatch(r"[0-9a-f]{64}", build["custom_data"]["provisioning_sha256"])
        assert build["custom_data"]["base_image"] == "debian-12-x64"
        # The id behind the slug at bake time (the local cloud's debian-12-x64), for `rebake`.
        assert build["custom_data"]["base_image_id"] == "150000001"
        assert image["description"] == (
            f"scaler bake: provisioning_sha256={build['custom_data']['provisioning_sha256']} "
            "base_image=debian-12-x64 base_image_id=150000001"
        )
        artifact = last_artifact(tmp_path / "manifest.json")
        assert (artifact.id, artifact.regions, artifact.name) == (
            result.id,
            ("ams3", "nyc3"),
            result.name,
        )
    finally:
        drop_snapshot(cloud, result)


@pytest.mark.slow
def test_tutorial_files_bake_over_ssh(baked_wordpress: BakedWordPress) -> None:
    """`scaler bake --packer-template wp-node.json --var-file variables.json` over SSH into a
    real build droplet: the files as given (debian-9-x64, no DB password, no WordPress
    source), only the state added; a droplet from the snapshot serves WordPress through PHP."""
    cloud, out, err = baked_wordpress.cloud, baked_wordpress.out, baked_wordpress.err
    result = baked_wordpress.result
    assert set(result) == {
        "id",
        "name",
        "regions",
        "artifact_id",
        "build_time",
        "duration",
        "custom_data",
    }
    # the template's builder: sfo2, snapshot_name {{user `project_name`}}_{{isotime ...}}
    assert result["regions"] == ["sfo2"] and result["artifact_id"] == f"sfo2:{result['id']}"
    assert re.fullmatch(r"nav-guide_\d\d-\d\d-\d\d-\d\d-\d\d-\d\d", result["name"])
    assert re.search(r"^\[\s*\d+\.\d+s\] waiting for SSH on 127\.\d+\.1\.\d+:22$", err, re.M)
    assert re.search(r"^\[\s*\d+\.\d+s\] waiting for droplet \d+ to become active$", err, re.M)
    # debian-9-x64 cannot be built here: said once, with the image the droplet gets instead
    assert re.search(
        r"^\[\s*\d+\.\d+s\] local cloud: image debian-9-x64 cannot be built on this machine; "
        r"the droplet gets debian-12-x64 instead \(the nearest real image\)$",
        err,
        re.M,
    )
    assert re.search(
        r"^\[\s*\d+\.\d+s\] local cloud: no welp_db_password given; a random one goes "
        r"into the snapshot's wp-config\.php$",
        err,
        re.M,
    )
    # the role really ran on the droplet: apt installed nginx and PHP-FPM there
    assert re.search(r"ansible changed: \[packerbox\] Install nginx and PHP-FPM", err)
    create = [r for r in cloud.requests() if r.template == "POST /v2/droplets"][-1]
    assert create.status == 202
    layer = cloud.machines.image_root(result["id"])
    wp_config = (layer / "var/www/wordpress/wp-config.php").read_text()
    assert f"'{DB_FIP}'" in wp_config
    (password,) = re.findall(r"define\('DB_PASSWORD', '([A-Za-z0-9_-]{32})'\);", wp_config)
    assert password not in out + err  # generated, written, never shown
    manifest = json.loads((baked_wordpress.work / "manifest.json").read_text())
    assert manifest["builds"][-1]["artifact_id"] == result["artifact_id"]
    # the token: not in any output, nor in any file the bake wrote
    assert BAKE_SECRET_TOKEN not in out + err
    for path in baked_wordpress.work.parent.rglob("*"):
        if path.is_file():
            assert BAKE_SECRET_TOKEN.encode() not in path.read_bytes(), path

    status, body, served_config = serves_wordpress(cloud, result["id"], result["regions"][0])
    # PHP ran (no source sent): WordPress itself answers that no database is there yet
    assert status == 500, body[:300]
    assert b"<?php" not in body and b"Error establishing a database connection" in body
    assert f"define('DB_HOST', '{DB_FIP}');" in served_config


@pytest.mark.slow
def test_plain_output_is_the_bare_id(cloud: LocalCloud, tmp_path: Path) -> None:
    """Without --json stdout is only the snapshot id; a clashing name gets -2."""
    (tmp_path / "scaler.toml").write_text(
        '[bake]\nproject = "clash"\nsnapshot_name = "fixed-name"\n'
        f'playbook = "{write_playbook(tmp_path, [{"ansible.builtin.ping": {}}])}"\n'
        "poll_min = 0.05\npoll_max = 0.2\n"
    )
    old = api(cloud, "GET", "images?private=true")["images"]
    first = bake_once(cloud, tmp_path)
    second = bake_once(cloud, tmp_path)
    try:
        names = {i["id"]: i["name"] for i in api(cloud, "GET", "images?private=true")["images"]}
        assert names[first] == "fixed-name" and names[second] == "fixed-name-2"
        assert len(names) == len(old) + 2
    finally:
        api(cloud, "DELETE", f"images/{first}")
        api(cloud, "DELETE", f"images/{second}")


def bake_once(cloud: LocalCloud, work: Path) -> int:
    args = ["--state", str(EXAMPLE_STATE)]
    code, out, err = BakeProcess(args, work, bake_env(cloud, work)).finish()
    assert code == 0, err
    assert re.fullmatch(r"\d+\n", out)
    return int(out)
