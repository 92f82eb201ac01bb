"""`scaler local up|status|down` through the real console script, with a real background server."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, free_network

from scaler.local.api import PACE, Delays

SCALER = Path(sys.executable).parent / "scaler"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scaler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCALER), "local", *args], capture_output=True, text=True, timeout=60)


def _exports(stdout: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())
    return dict(pairs)


def _post_key(url: str, token: str) -> dict[str, object]:
    blob = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"k" * 32).decode()
    body = {"name": "cli", "public_key": f"ssh-ed25519 {blob} cli@test"}
    request = urllib.request.Request(
        f"{url}/v2/account/keys",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return dict(json.loads(resp.read())["ssh_key"])


def _get(url: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def _pid(state_dir: Path) -> int:
    return int(json.loads((state_dir / "server.json").read_text())["pid"])


def _up_args(state_dir: Path, port: int) -> list[str]:
    where = ["--state-dir", str(state_dir), "--port", str(port), "--network", str(free_network())]
    return [str(SCALER), "local", "up", *where, "--droplets", "directory"]


@pytest.fixture
def network() -> int:
    """A network number of this test's own, for the cloud it starts."""
    return free_network()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "state"
    yield folder
    scaler("down", "--state-dir", str(folder))  # never leave a server behind a failed test


def test_up_status_down_and_state_across_restarts(state_dir: Path, network: int) -> None:
    port = _free_port()
    where = ["--state-dir", str(state_dir)]
    started = scaler(
        "up", *where, "--port", str(port), "--network", str(network), "--droplets", "directory"
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    env = _exports(started.stdout)
    assert env == {
        "DIGITALOCEAN_TOKEN": "scaler-local-token",
        "DIGITALOCEAN_ACCESS_TOKEN": "scaler-local-token",
        "DIGITALOCEAN_END_POINT": f"{url}/v2/",
        "DIGITALOCEAN_API_URL": url,
        "SCALER_LOCAL_URL": url,
        "SCALER_LOCAL_WEB_PORT": "80" if os.geteuid() == 0 else "8080",
    }
    assert started.stderr.strip() == (
        f"local cloud running at {url} (pid {_pid(state_dir)}, network {network}, "
        f'state {state_dir}); use it with: eval "$(scaler local up --state-dir {state_dir})"\n'
        "droplets: directory (asked for); scaler bake needs real droplets"
    )
    server = json.loads((state_dir / "server.json").read_text())
    assert (server["port"], server["network"]) == (port, network)

    key = _post_key(url, env["DIGITALOCEAN_TOKEN"])
    status = scaler("status", *where)
    assert status.returncode == 0
    assert status.stdout.splitlines() == [
        f"running at {url} (pid {server['pid']}, network {network})",
        "holds 0 droplets, 0 images, 1 ssh keys, 0 load balancers, 0 floating ips, 0 tags",
        "droplets: directory",
    ]

    again = scaler("up", *where, "--port", str(_free_port()))
    assert again.returncode == 0
    assert again.stderr.strip() == f"local cloud already running at {url} (pid {server['pid']})"
    assert _exports(again.stdout) == env

    stopped = scaler("down", *where)
    assert stopped.returncode == 0
    assert f"local cloud stopped (pid {server['pid']}, {url})" in stopped.stderr
    assert not (state_dir / "server.json").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/_local/health", timeout=2)

    down_again = scaler("down", *where)
    assert down_again.returncode == 0
    assert (
        down_again.stderr.strip() == f"no local cloud is running for {state_dir}; nothing to stop"
    )
    not_running = scaler("status", *where)
    assert not_running.returncode == 3
    assert not_running.stdout.strip() == (
        f"not running (state dir {state_dir}); start it with: scaler local up"
    )

    restarted = scaler(
        "up", *where, "--port", str(port), "--network", str(network), "--droplets", "directory"
    )
    assert restarted.returncode == 0, restarted.stderr
    keys = _get(f"{url}/v2/account/keys", "any-token")["ssh_keys"]
    assert keys == [key]


def test_foreground_serves_until_sigterm(state_dir: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*_up_args(state_dir, port), "--foreground"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
        assert _exports("".join(lines))["SCALER_LOCAL_URL"] == f"http://127.0.0.1:{port}"
        assert _get(f"http://127.0.0.1:{port}/v2/regions?per_page=1", "t")["meta"] == {"total": 11}
        status = scaler("status", "--state-dir", str(state_dir))
        assert status.stdout.startswith(f"running at http://127.0.0.1:{port} (pid {proc.pid},")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "GET /v2/regions?per_page=1 -> 200" in err
    assert f"local cloud stopped; its state stays in {state_dir}" in err
    assert not (state_dir / "server.json").exists()


def test_up_on_a_busy_port_says_so(state_dir: Path, network: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        where = ["--state-dir", str(state_dir), "--port", str(port), "--network", str(network)]
        result = scaler("up", *where, "--droplets", "directory")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "Error: the local cloud did not start (cannot listen on 127.0.0.1:"
    )
    assert "pick another port with --port" in result.stderr
    assert result.stdout == ""


def test_help_names_the_commands() -> None:
    result = scaler("--help")
    assert result.returncode == 0
    for command in ("up", "down", "status"):
        assert f"  {command} " in result.stdout
    assert 'eval "$(scaler local up)"' in result.stdout
    assert os.path.basename(SCALER) == "scaler"


def _call(url: str, method: str, path: str, body: dict[str, object] | None = None) -> Any:
    request = urllib.request.Request(
        f"{url}/v2/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer cli-test", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _web(ip: str, port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A project directory to run `scaler local` in with the default state dir."""
    yield tmp_path
    subprocess.run([str(SCALER), "local", "down"], cwd=tmp_path, capture_output=True, timeout=60)


def test_restart_keeps_droplets_images_and_their_listeners(workdir: Path, network: int) -> None:
    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCALER), "local", *args], cwd=workdir, capture_output=True, text=True, timeout=60
        )

    port = _free_port()
    up = ["up", "--port", str(port), "--network", str(network), "--delay", "0.1"]
    up += ["--droplets", "directory"]
    started = local(*up)
    assert started.returncode == 0, started.stderr
    # the default state dir, relative to where scaler runs
    state = workdir / ".scaler" / "local"
    assert json.loads((state / "server.json").read_text())["port"] == port
    assert 'use it with: eval "$(scaler local up)"\ndroplets: directory' in started.stderr
    url = _exports(started.stdout)["DIGITALOCEAN_API_URL"]
    # loopback only, and on 127.0.0.1 exactly
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", port), timeout=2):
        pass

    body = {"name": "keep-1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64"}
    droplet = _call(url, "POST", "droplets", body)["droplet"]
    path = f"droplets/{droplet['id']}"
    _until(lambda: _call(url, "GET", path)["droplet"]["status"] == "active", "droplet active")
    (ip,) = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"]
    assert ip == f"127.{network}.1.1"
    web_port = 80 if os.geteuid() == 0 else 8080  # the documented mapping of the droplet's :80
    assert _web(ip, web_port)[0] == 404  # an empty web root: it answers, the check fails
    page = state / "machines" / "droplets" / str(droplet["id"]) / "root/var/www/html/index.html"
    page.write_text("kept\n")
    assert _web(ip, web_port) == (200, b"kept\n")
    action = _call(url, "POST", f"{path}/actions", {"type": "snapshot", "name": "kept"})["action"]
    _until(
        lambda: _call(url, "GET", f"actions/{action['id']}")["action"]["status"] == "completed",
        "snapshot",
    )
    (image,) = _call(url, "GET", "images?private=true")["images"]

    stopped = local("down")
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(urllib.error.URLError):
        _web(ip, web_port)

    restarted = local(*up)
    assert restarted.returncode == 0, restarted.stderr
    assert _call(url, "GET", path)["droplet"]["status"] == "active"
    assert _web(ip, web_port) == (200, b"kept\n")
    assert _call(url, "GET", "images?private=true")["images"] == [image]
    status = local("status")
    assert status.stdout.splitlines()[1] == (
        "holds 1 droplets, 1 images, 0 ssh keys, 0 load balancers, 0 floating ips, 0 tags"
    )
    clone = _call(url, "POST", "droplets", body | {"name": "clone-1", "image": image["id"]})
    clone_path = f"droplets/{clone['droplet']['id']}"
    _until(lambda: _call(url, "GET", clone_path)["droplet"]["status"] == "active", "clone active")
    assert _web(f"127.{network}.1.2", web_port) == (200, b"kept\n")


def test_up_sets_delays_and_rate_limit(state_dir: Path, network: int) -> None:
    port = _free_port()
    where = ["--state-dir", str(state_dir), "--port", str(port), "--network", str(network)]
    started = scaler(
        "up", *where, "--delay", "0.05", "--rate-limit", "3", "--droplets", "directory"
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{url}/_local/delays", timeout=5) as resp:
        delays = json.loads(resp.read())["delays"]
    # --delay paces boots and actions; DigitalOcean's lags stay off
    assert {k: v for k, v in delays.items() if k in PACE} == dict.fromkeys(PACE, 0.05)
    assert {v for k, v in delays.items() if k not in PACE} == {0.0}
    with urllib.request.urlopen(f"{url}/_local/health", timeout=5) as resp:
        assert json.loads(resp.read())["rate_limit_per_minute"] == 3
    for _ in range(3):
        _get(f"{url}/v2/account", "budget")
    with pytest.raises(urllib.error.HTTPError) as limited:
        _get(f"{url}/v2/account", "budget")
    assert limited.value.code == 429
    assert 1 <= int(limited.value.headers["retry-after"]) <= 60


def test_up_at_digitaloceans_pace(state_dir: Path, network: int) -> None:
    port = _free_port()
    where = ["--state-dir", str(state_dir), "--port", str(port), "--network", str(network)]
    started = scaler("up", *where, "--timing", "realistic", "--droplets", "directory")
    assert started.returncode == 0, started.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_local/delays", timeout=5) as resp:
        delays = json.loads(resp.read())["delays"]
    assert delays == asdict(Delays.realistic())
    assert delays["droplet_boot"] >= 20 and delays["load_balancer"] >= 45


def test_up_refuses_a_bad_rate_limit(state_dir: Path) -> None:
    result = scaler("up", "--state-dir", str(state_dir), "--rate-limit", "0")
    assert result.returncode == 2
    assert "Invalid value for '--rate-limit': 0 is not in the range x>=1." in result.stderr
    assert not (state_dir / "server.json").exists()


def test_terraform_runs_against_the_running_cloud(state_dir: Path, tmp_path: Path) -> None:
    stack = Path(shutil.copytree(ROOT / "terraform", tmp_path / "stack"))
    where = ["--state-dir", str(state_dir)]
    refused = scaler("terraform", "-C", str(stack), *where, "--", "plan")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"Error: no local cloud is running for {state_dir}; start it with: scaler local up\n"
    )

    started = subprocess.run(
        [*_up_args(state_dir, _free_port()), "--delay", "0.05"], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    env = _exports(started.stdout)
    init = scaler("terraform", "-C", str(stack), *where, "--", "init", "-no-color")
    assert init.returncode == 0, init.stderr
    args = ["-auto-approve", "-no-color", "-var", "wp_node_count=1", "-var", "db_node_count=1"]
    applied = scaler("terraform", "-C", str(stack), *where, "--", "apply", *args)
    assert applied.returncode == 0, applied.stderr
    # the 3 tags, 2 droplets, balancer, reserved IP, its assignment and the 2 firewalls
    assert "Apply complete! Resources: 10 added, 0 changed, 0 destroyed." in applied.stdout
    droplets = _get(env["DIGITALOCEAN_API_URL"] + "/v2/droplets", env["DIGITALOCEAN_TOKEN"])
    assert sorted(d["name"] for d in droplets["droplets"]) == [  # type: ignore[attr-defined]
        "wordpress-db-node-01",
        "wordpress-wp-node-01",
    ]
    # Terraform's own exit code comes back: a plan with changes under -detailed-exitcode is 2.
    planned = scaler(
        "terraform", "-C", str(stack), *where, "--", "plan", "-detailed-exitcode", "-no-color"
    )
    assert planned.returncode == 2, planned.stderr
