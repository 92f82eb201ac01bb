"""Local droplets. Directory droplets (machines.py): real roots on disk and real HTTP on their own
loopback addresses, and no SSH at all. Real droplets (droplets.py): Linux hosts of their own,
created, shut down, snapshotted and destroyed through the API."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RealDroplet, boot_real_droplet, cloud_api, need

from scaler.bake import ed25519_key_pair
from scaler.local import netns
from scaler.local.api import LocalCloud
from scaler.local.machines import BASE_IMAGES, MachineError, Machines
from scaler.local.netclaim import claim_network

_HOSTS = itertools.count(1)
WORDPRESS = Path("/usr/share/wordpress")


_NETWORK: list[int] = []  # the number the module's claim holds (set by _network)


@pytest.fixture(scope="module", autouse=True)
def _network() -> Iterator[None]:
    """A network number of this module's own for the directory droplets' 127.N.x.k addresses."""
    with claim_network() as claim:
        _NETWORK[:] = [claim.number]
        yield


def _addresses() -> tuple[str, str]:
    k = next(_HOSTS)
    return f"127.{_NETWORK[0]}.1.{k}", f"127.{_NETWORK[0]}.2.{k}"


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def _refused(ip: str, port: int) -> bool:
    """Whether a TCP connection to ip:port is refused (nothing listens there)."""
    try:
        socket.create_connection((ip, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    m = Machines(tmp_path / "state")
    yield m
    m.close()


def test_port_mapping_is_documented_rule(tmp_path: Path) -> None:
    as_root = os.geteuid() == 0
    default = Machines(tmp_path / "a")
    assert default.web_port() == (80 if as_root else 8080)
    assert default.ssh_port() is None
    assert Machines(tmp_path / "b", web_port=18080).web_port() == 18080


def test_directory_droplet_offers_no_ssh(machines: Machines) -> None:
    """A directory droplet is no host: an sshd for it would land on this machine."""
    public, private = _addresses()
    machines.create(13, public, private, "debian-12-x64", ["ssh-ed25519 AAAAkey one\n"], None)
    (machines.web_root(13) / "index.html").write_text("up")
    assert _get(f"http://{public}:{machines.web_port()}/")[::2] == (200, b"up")
    assert machines.ssh_port() is None
    for ip in (public, private):
        for port in (22, 2222):
            assert _refused(ip, port), f"something listens on {ip}:{port}"


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
    first = Machines(tmp_path / "state")
    first.create(8, public, private, "debian-12-x64", [], None)
    (first.web_root(8) / "index.html").write_text("persisted")
    first.close()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://{public}:{first.web_port()}/")

    second = Machines(tmp_path / "state")
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
    other = Machines(tmp_path / "other")
    try:
        other.create(10, public, private, "debian-12-x64", [], None)
    except MachineError as err:
        assert str(err).startswith(f"droplet 10 cannot serve {public}:{machines.web_port()} (")
    else:
        pytest.fail("a second web server bound the same address")
    finally:
        other.close()
    assert not other.is_running(10)


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
def test_droplet_made_through_the_api_has_insides(fresh_cloud: LocalCloud, tmp_path: Path) -> None:
    _private, public_key = ed25519_key_pair(tmp_path)
    key = {"name": "me", "public_key": public_key}
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
    assert machines.ssh_port() is None and _refused(nets["public"], 22)

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


# --- real droplets --------------------------------------------------------------------------------


def _action(cloud: LocalCloud, droplet_id: int, body: dict[str, Any], timeout: float = 90) -> None:
    """Run one droplet action through the API and wait until it has completed."""
    action = cloud_api(cloud, "POST", f"droplets/{droplet_id}/actions", body)["action"]
    deadline = time.monotonic() + timeout
    while (status := cloud_api(cloud, "GET", f"actions/{action['id']}")["action"]["status"]) != (
        "completed"
    ):
        assert status == "in-progress", status
        assert time.monotonic() < deadline, f"{body['type']} of droplet {droplet_id} never ended"
        time.sleep(0.1)


def _names(cloud: LocalCloud, droplet_id: int) -> set[str]:
    """The names of one real droplet's namespace and host-side veth end (the other end is in
    the namespace)."""
    net = netns.DropletNet(cloud.network, droplet_id, "", "")
    return {net.namespace, net.host_if}


def _wtmp_users(path: Path) -> list[str]:
    """ut_user of each record in a wtmp file (glibc's 384-byte struct utmp)."""
    raw = path.read_bytes()
    return [raw[i + 44 : i + 76].rstrip(b"\0").decode() for i in range(0, len(raw), 384)]


def _host_key(droplet: RealDroplet) -> str:
    done = droplet.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub /etc/machine-id")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_real_droplet_lifecycle(real_cloud: LocalCloud, tmp_path: Path) -> None:
    """create, shutdown (clean), snapshot (generalized), destroy (nothing left), and a droplet
    from the snapshot with new host keys."""
    machines = real_cloud.machines
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = boot_real_droplet(real_cloud, tmp_path / "first", "lifecycle", "debian-12-x64")
    made: list[int] = [first.id]
    ids = [first.id]
    image_id: int | None = None
    try:
        # created: running, its network in place, its first boot's host key and machine-id
        assert machines.is_running(first.id)
        assert _names(real_cloud, first.id) <= set(netns.leftovers(real_cloud.network))
        first_identity = _host_key(first)
        host_key, machine_id = first_identity.splitlines()
        assert host_key.startswith("ssh-ed25519 ") and len(machine_id) == 32
        # the public half of the key the droplet was created with (cloud-init authorized it)
        creation_key = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(first.key)], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert creation_key in first.ssh("cat /root/.ssh/authorized_keys").stdout
        assert first.ssh("echo kept > /root/kept.txt").returncode == 0

        # halted through the API: its systemd stops its units, then the namespaces end
        _action(real_cloud, first.id, {"type": "shutdown"})
        droplet = cloud_api(real_cloud, "GET", f"droplets/{first.id}")["droplet"]
        assert droplet["status"] == "off"
        assert not machines.is_running(first.id)
        assert not _names(real_cloud, first.id) & set(netns.leftovers(real_cloud.network))
        assert _refused(first.public_ip, 22)
        folder = machines.base / "droplets" / str(first.id)
        # systemd wrote the shutdown record (systemd-update-utmp's stop) after the boot's
        assert _wtmp_users(folder / "upper/var/log/wtmp") == ["reboot", "runlevel", "shutdown"]

        # snapshot: the layer keeps what was written, not what must differ per droplet
        _action(real_cloud, first.id, {"type": "snapshot", "name": "lifecycle-snap"})
        (image,) = cloud_api(real_cloud, "GET", f"droplets/{first.id}/snapshots")["snapshots"]
        image_id = int(image["id"])
        layer = machines.image_root(image_id)
        assert (layer / "root/kept.txt").read_text() == "kept\n"
        assert list((layer / "etc/ssh").glob("ssh_host_*")) == []
        assert not (layer / "var/lib/cloud").exists()
        assert (layer / "etc/machine-id").read_text() == ""
        authorized = layer / "root/.ssh/authorized_keys"
        kept = authorized.read_text() if authorized.exists() else ""
        assert creation_key not in kept

        # destroyed: no process, namespace, veth or route of it is left
        cloud_api(real_cloud, "DELETE", f"droplets/{first.id}")
        made.remove(first.id)
        assert not folder.exists()
        assert not _names(real_cloud, first.id) & set(netns.leftovers(real_cloud.network))
        routes = subprocess.run(
            ["ip", "route", "show", "table", "local"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert [r for r in routes if {first.public_ip, first.private_ip} & set(r.split())] == []

        # a droplet from the snapshot: the kept file, new host keys and machine-id, and only
        # its own creation key lets in
        second = boot_real_droplet(real_cloud, tmp_path / "second", "from-snapshot", image_id)
        made.append(second.id)
        ids.append(second.id)
        assert second.ssh("cat /root/kept.txt").stdout == "kept\n"
        second_key, second_id = _host_key(second).splitlines()
        assert second_key.startswith("ssh-ed25519 ") and second_key != host_key
        assert len(second_id) == 32 and second_id != machine_id
        assert second.ssh("hostname").stdout == "from-snapshot\n"
        stale = RealDroplet(second.id, second.public_ip, second.private_ip, first.key)
        assert stale.ssh("true").returncode == 255  # the first droplet's key: refused
    finally:
        for droplet_id in made:
            cloud_api(real_cloud, "DELETE", f"droplets/{droplet_id}")
        if image_id is not None:
            cloud_api(real_cloud, "DELETE", f"images/{image_id}")
    ended = set().union(*(_names(real_cloud, i) for i in ids))
    assert not ended & set(netns.leftovers(real_cloud.network))


@pytest.mark.slow
def test_a_restarted_cloud_brings_real_droplets_back_with_their_services(
    real_cloud: LocalCloud, tmp_path: Path
) -> None:
    """A local cloud of its own (real droplets) stopped and started on its state: the droplet
    boots again with its sshd, keeps what was written to it, and keeps its address."""
    from scaler.local.api import Delays

    state = tmp_path / "cloud"
    with LocalCloud(state, droplets="real", delays=Delays.uniform(0.1)) as cloud:
        network = cloud.network
        (tmp_path / "key").mkdir()
        droplet = boot_real_droplet(cloud, tmp_path / "key", "restarted", "debian-12-x64")
        assert droplet.ssh("echo kept > /root/kept").returncode == 0
    # stopped: its namespace and veth are gone, nothing answers on its address
    assert netns.leftovers(network) == []
    with LocalCloud(state, droplets="real", delays=Delays.uniform(0.1)) as again:
        assert again.network == network  # the state folder's number, taken back
        deadline = time.monotonic() + 90
        while True:
            answer = droplet.ssh("cat /root/kept; systemctl is-active ssh", timeout=30)
            if answer.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert answer.stdout.split() == ["kept", "active"], answer.stderr
    assert netns.leftovers(network) == []
