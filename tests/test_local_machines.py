"""Local droplets: real roots on disk, real HTTP on their own loopback addresses, real SSH."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import need

from scaler.local.api import LocalCloud
from scaler.local.machines import BASE_IMAGES, MachineError, Machines

# 127.<octet>.1.k: one octet per xdist worker, away from the API fixture's 42 + worker
_OCTET = 77 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_HOSTS = itertools.count(1)
WORDPRESS = Path("/usr/share/wordpress")


def _addresses() -> tuple[str, str]:
    k = next(_HOSTS)
    return f"127.{_OCTET}.1.{k}", f"127.{_OCTET}.2.{k}"


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


def _ssh(key: Path, ip: str, port: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
            f"root@{ip}", command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path / "state", ssh=False)
    yield m
    m.close()


@pytest.fixture
def ssh_machines(tmp_path: Path) -> Iterator[Machines]:
    need(shutil.which("ssh") is not None, "the ssh client is not installed")
    m = Machines(tmp_path / "state")
    need(m.ssh_port() is not None, "sshd is not installed (Debian package openssh-server)")
    yield m
    m.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    folder = tmp_path_factory.mktemp("keys")
    return _keygen(folder / "good"), _keygen(folder / "wrong")


def test_port_mapping_is_documented_rule(tmp_path: Path) -> None:
    as_root = os.geteuid() == 0
    default = Machines(tmp_path / "a", ssh=False)
    assert default.web_port() == (80 if as_root else 8080)
    assert default.ssh_port() is None
    assert Machines(tmp_path / "b", web_port=18080, ssh=False).web_port() == 18080
    with_ssh = Machines(tmp_path / "c")
    if with_ssh.ssh_port() is not None:
        assert with_ssh.ssh_port() == (22 if as_root else 2222)


@pytest.mark.parametrize("slug", BASE_IMAGES)
def test_base_image_lays_out_root(machines: Machines, slug: str) -> None:
    public, private = _addresses()
    machines.create(
        5, public, private, slug, ["ssh-ed25519 AAAAkey one\n"], "#cloud-config\nruncmd: []\n"
    )
    root = machines.root(5)
    assert root == machines.base / "droplets" / "5" / "root"
    release = (root / "etc" / "os-release").read_text()
    assert f"ID={slug.split('-')[0]}\n" in release
    assert f"SCALER_LOCAL_IMAGE={slug}\n" in release
    assert (root / "etc" / "hostname").read_text() == "droplet-5\n"
    assert (
        root / "var/lib/cloud/instance/user-data.txt"
    ).read_text() == "#cloud-config\nruncmd: []\n"
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAkey one\n"
    assert machines.web_root(5) == root / "var" / "www" / "html"
    assert list(machines.web_root(5).iterdir()) == []


def test_unbaked_droplet_fails_health_check_until_index_exists(machines: Machines) -> None:
    public, private = _addresses()
    machines.create(1, public, private, "debian-12-x64", [], None)
    port = machines.web_port()
    assert not (machines.root(1) / "var/lib/cloud/instance/user-data.txt").exists()
    for ip in (public, private):
        assert _get(f"http://{ip}:{port}/")[0] == 404

    web = machines.web_root(1)
    (web / "index.php").write_text("<?php require 'wp-blog-header.php';")
    (web / "readme.txt").write_text("plain")
    (web / "wp-admin").mkdir()
    for ip in (public, private):
        assert _get(f"http://{ip}:{port}/") == (
            200,
            "text/html; charset=utf-8",
            b"<?php require 'wp-blog-header.php';",
        )
    assert _get(f"http://{public}:{port}/readme.txt?x=1") == (
        200,
        "text/plain; charset=utf-8",
        b"plain",
    )
    assert _get(f"http://{public}:{port}/wp-admin/")[0] == 404
    assert _get(f"http://{public}:{port}/missing.php")[0] == 404
    assert _get(f"http://{public}:{port}/%2e%2e/%2e%2e/etc/os-release")[0] == 404

    (web / "wp-admin" / "index.html").write_text("<h1>admin</h1>")
    assert _get(f"http://{public}:{port}/wp-admin")[:2] == (200, "text/html; charset=utf-8")


def test_webroot_marker_points_the_web_server_elsewhere(machines: Machines) -> None:
    public, private = _addresses()
    machines.create(2, public, private, "ubuntu-22-04-x64", [], None)
    root = machines.root(2)
    (root / "var/www/wordpress").mkdir(parents=True)
    (root / "var/www/wordpress/index.php").write_text("wordpress")
    assert _get(f"http://{public}:{machines.web_port()}/")[0] == 404
    (root / "etc/scaler").mkdir()
    (root / "etc/scaler/webroot").write_text("/var/www/wordpress\n")
    assert machines.web_root(2) == root / "var/www/wordpress"
    assert _get(f"http://{public}:{machines.web_port()}/")[::2] == (200, b"wordpress")


def test_snapshot_captures_root_and_new_droplet_starts_with_it(machines: Machines) -> None:
    need(WORDPRESS.is_dir(), f"{WORDPRESS} is absent (Debian package wordpress)")
    public, private = _addresses()
    machines.create(3, public, private, "debian-12-x64", [], None)
    site = machines.root(3) / "var/www/wordpress"
    shutil.copytree(WORDPRESS, site, symlinks=True)
    (machines.root(3) / "etc/scaler").mkdir()
    (machines.root(3) / "etc/scaler/webroot").write_text("/var/www/wordpress")

    size = machines.snapshot(3, 900)
    files = [p for p in machines.root(3).rglob("*") if p.is_file() and not p.is_symlink()]
    assert size >= sum(p.stat().st_size for p in files) > 40_000_000
    image = machines.image_root(900)
    assert (image / "var/www/wordpress/wp-login.php").read_bytes() == (
        WORDPRESS / "wp-login.php"
    ).read_bytes()

    # the image is a copy: the droplet changing a file in place does not reach it
    with (site / "index.php").open("a") as out:
        out.write("// changed after the snapshot\n")
    assert (image / "var/www/wordpress/index.php").read_bytes() == (
        WORDPRESS / "index.php"
    ).read_bytes()

    public2, private2 = _addresses()
    machines.create(4, public2, private2, 900, [], "user data")
    assert _get(f"http://{public2}:{machines.web_port()}/") == (
        200,
        "text/html; charset=utf-8",
        (WORDPRESS / "index.php").read_bytes(),
    )
    status, ctype, body = _get(f"http://{private2}:{machines.web_port()}/wp-login.php")
    assert (status, ctype, body) == (
        200,
        "text/html; charset=utf-8",
        (WORDPRESS / "wp-login.php").read_bytes(),
    )
    assert (machines.root(4) / "etc/hostname").read_text() == "droplet-4\n"
    assert (machines.root(4) / "var/lib/cloud/instance/user-data.txt").read_text() == "user data"

    machines.delete_image(900)
    assert not image.exists()
    with pytest.raises(
        MachineError, match=r"^no snapshot 900 in .*; create the droplet from a snapshot"
    ):
        machines.create(6, *_addresses(), 900, [], None)
    assert not (machines.base / "droplets" / "6").exists()


def test_halt_stops_answering_and_boot_brings_it_back(machines: Machines) -> None:
    public, private = _addresses()
    machines.create(7, public, private, "debian-12-x64", [], None)
    (machines.web_root(7) / "index.html").write_text("up")
    url = f"http://{public}:{machines.web_port()}/"
    assert _get(url)[0] == 200 and machines.is_running(7)

    machines.halt(7)
    assert not machines.is_running(7)
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(url)
    machines.halt(7)  # halting a halted droplet is a no-op

    machines.boot(7)
    machines.boot(7)  # already running: a no-op, not a second bind
    assert _get(url)[::2] == (200, b"up")


def test_boot_after_restart_uses_files_only(tmp_path: Path) -> None:
    public, private = _addresses()
    first = Machines(tmp_path / "state", ssh=False)
    first.create(8, public, private, "debian-12-x64", [], None)
    (first.web_root(8) / "index.html").write_text("persisted")
    first.close()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://{public}:{first.web_port()}/")

    second = Machines(tmp_path / "state", ssh=False)
    try:
        second.boot(8)
        assert _get(f"http://{private}:{second.web_port()}/")[::2] == (200, b"persisted")
        with pytest.raises(MachineError, match=r"^no droplet 99 in .*; create it first$"):
            second.boot(99)
    finally:
        second.close()


def test_destroy_removes_root_and_listeners(machines: Machines) -> None:
    public, private = _addresses()
    machines.create(9, public, private, "debian-12-x64", [], None)
    with pytest.raises(
        MachineError, match=r"^droplet 9 already has a root at .*; destroy it first$"
    ):
        machines.create(9, public, private, "debian-12-x64", [], None)
    machines.destroy(9)
    assert not (machines.base / "droplets" / "9").exists()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://{public}:{machines.web_port()}/")
    machines.destroy(9)  # gone already: a no-op


def test_address_in_use_is_a_clear_error(machines: Machines, tmp_path: Path) -> None:
    public, private = _addresses()
    machines.create(10, public, private, "debian-12-x64", [], None)
    other = Machines(tmp_path / "other", ssh=False)
    try:
        other.create(10, public, private, "debian-12-x64", [], None)
    except MachineError as err:
        assert str(err).startswith(f"droplet 10 cannot serve {public}:{machines.web_port()} (")
    else:
        pytest.fail("a second web server bound the same address")
    finally:
        other.close()
    assert not other.is_running(10)


@pytest.mark.slow
def test_ssh_login_with_droplet_key_and_refusal_of_another(
    ssh_machines: Machines, keys: tuple[Path, Path]
) -> None:
    good, wrong = keys
    public, private = _addresses()
    pub = good.with_name("good.pub").read_text()
    ssh_machines.create(11, public, private, "debian-12-x64", [pub], None)
    port = ssh_machines.ssh_port()
    assert port is not None

    ok = _ssh(good, public, port, "true")
    assert ok.returncode == 0, ok.stderr
    env = _ssh(good, private, port, 'printf "%s %s" "$SCALER_DROPLET_ID" "$SCALER_DROPLET_ROOT"')
    assert env.stdout == f"11 {ssh_machines.root(11)}"

    refused = _ssh(wrong, public, port, "true")
    assert refused.returncode == 255
    assert "Permission denied (publickey)" in refused.stderr

    ssh_machines.halt(11)
    down = _ssh(good, public, port, "true")
    assert down.returncode == 255 and "Connection refused" in down.stderr
    ssh_machines.boot(11)
    assert _ssh(good, public, port, "true").returncode == 0


@pytest.mark.slow
def test_sshd_left_by_a_crashed_run_is_replaced_on_boot(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    good, _wrong = keys
    need(Machines(tmp_path / "probe").ssh_port() is not None, "sshd is not installed")
    public, private = _addresses()
    state = tmp_path / "state"
    crashed = f"""
import os, sys
from pathlib import Path
from scaler.local.machines import Machines
m = Machines(Path({str(state)!r}))
key = {good.with_name("good.pub").read_text()!r}
m.create(12, {public!r}, {private!r}, "debian-12-x64", [key], None)
os._exit(0)  # no close(), no atexit: its sshd is left running
"""
    subprocess.run([sys.executable, "-c", crashed], check=True, cwd=Path(__file__).parent.parent)
    pid = int((state / "machines/droplets/12/sshd.pid").read_text())
    assert Path(f"/proc/{pid}").exists()

    again = Machines(state)
    try:
        again.boot(12)
        port = again.ssh_port()
        assert port is not None
        assert _ssh(good, public, port, "true").returncode == 0
        assert int((state / "machines/droplets/12/sshd.pid").read_text()) != pid
    finally:
        again.close()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _call(cloud: LocalCloud, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        cloud.endpoint + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer local", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _wait(cloud: LocalCloud, path: str, key: str, field: str, value: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found: dict[str, Any] = _call(cloud, "GET", path)[key]
        if found[field] == value:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


@pytest.mark.slow
def test_droplet_made_through_the_api_has_insides(
    fresh_cloud: LocalCloud, keys: tuple[Path, Path]
) -> None:
    good, _wrong = keys
    key = {"name": "me", "public_key": good.with_name("good.pub").read_text()}
    key_id = _call(fresh_cloud, "POST", "account/keys", key)["ssh_key"]["id"]
    body = {
        "name": "wp-node-1",
        "region": "nyc3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "ssh_keys": [key_id],
        "user_data": "#cloud-config\n",
    }
    created = _call(fresh_cloud, "POST", "droplets", body)["droplet"]
    droplet = _wait(fresh_cloud, f"droplets/{created['id']}", "droplet", "status", "active")
    nets = {n["type"]: n["ip_address"] for n in droplet["networks"]["v4"]}
    machines = fresh_cloud.machines
    root = machines.root(droplet["id"])
    assert "ID=ubuntu\n" in (root / "etc/os-release").read_text()
    assert (root / "var/lib/cloud/instance/user-data.txt").read_text() == "#cloud-config\n"
    port = machines.web_port()
    assert _get(f"http://{nets['public']}:{port}/")[0] == 404  # not baked: health check fails
    (machines.web_root(droplet["id"]) / "index.php").write_text("wp")
    assert _get(f"http://{nets['private']}:{port}/")[::2] == (200, b"wp")
    ssh_port = machines.ssh_port()
    if ssh_port is not None:
        assert _ssh(good, nets["public"], ssh_port, "true").returncode == 0

    action = _call(fresh_cloud, "POST", f"droplets/{droplet['id']}/actions", {"type": "shutdown"})
    _wait(fresh_cloud, f"actions/{action['action']['id']}", "action", "status", "completed")
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(f"http://{nets['public']}:{port}/")

    action = _call(fresh_cloud, "POST", f"droplets/{droplet['id']}/actions", {"type": "power_on"})
    _wait(fresh_cloud, f"actions/{action['action']['id']}", "action", "status", "completed")
    assert _get(f"http://{nets['public']}:{port}/")[::2] == (200, b"wp")

    _call(fresh_cloud, "DELETE", f"droplets/{droplet['id']}")
    assert not root.exists()
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(f"http://{nets['public']}:{port}/")


def test_ssh_works_with_a_relative_state_dir(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `scaler local up` defaults to the relative .scaler/local; sshd needs absolute paths.
    need(shutil.which("ssh") is not None, "the ssh client is not installed")
    good, _wrong = keys
    monkeypatch.chdir(tmp_path)
    machines = Machines(Path("relative-state"))
    need(machines.ssh_port() is not None, "sshd is not installed (Debian package openssh-server)")
    try:
        public, private = _addresses()
        machines.create(
            12, public, private, "debian-12-x64", [good.with_suffix(".pub").read_text()], None
        )
        port = machines.ssh_port()
        assert port is not None
        done = _ssh(good, public, port, 'printf "%s" "$SCALER_DROPLET_ROOT"')
        assert done.returncode == 0, done.stderr
        assert done.stdout == str(
            tmp_path / "relative-state" / "machines" / "droplets" / "12" / "root"
        )
    finally:
        machines.close()
