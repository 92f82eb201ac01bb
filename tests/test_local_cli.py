"""`scaler local up|status|down` through the real console script, with a real background server."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI_CLOUD_NETWORK_BASE, xdist_worker_index

SCALER = Path(sys.executable).parent / "scaler"
NETWORK = CLI_CLOUD_NETWORK_BASE + xdist_worker_index()


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
    where = ["--state-dir", str(state_dir), "--port", str(port), "--network", str(NETWORK)]
    return [str(SCALER), "local", "up", *where]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "state"
    yield folder
    scaler("down", "--state-dir", str(folder))  # never leave a server behind a failed test


def test_up_status_down_and_state_across_restarts(state_dir: Path) -> None:
    port = _free_port()
    where = ["--state-dir", str(state_dir)]
    started = scaler("up", *where, "--port", str(port), "--network", str(NETWORK))
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    env = _exports(started.stdout)
    assert env == {
        "DIGITALOCEAN_TOKEN": "scaler-local-token",
        "DIGITALOCEAN_ACCESS_TOKEN": "scaler-local-token",
        "DIGITALOCEAN_END_POINT": f"{url}/v2/",
        "DIGITALOCEAN_API_URL": url,
        "SCALER_LOCAL_URL": url,
    }
    assert started.stderr.strip() == (
        f"local cloud running at {url} (pid {_pid(state_dir)}, network {NETWORK}, "
        f'state {state_dir}); use it with: eval "$(scaler local up --state-dir {state_dir})"'
    )
    server = json.loads((state_dir / "server.json").read_text())
    assert (server["port"], server["network"]) == (port, NETWORK)

    key = _post_key(url, env["DIGITALOCEAN_TOKEN"])
    status = scaler("status", *where)
    assert status.returncode == 0
    assert status.stdout.splitlines() == [
        f"running at {url} (pid {server['pid']}, network {NETWORK})",
        "holds 0 droplets, 0 images, 1 ssh keys, 0 load balancers, 0 floating ips, 0 tags",
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

    restarted = scaler("up", *where, "--port", str(port), "--network", str(NETWORK))
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


def test_up_on_a_busy_port_says_so(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = scaler("up", "--state-dir", str(state_dir), "--port", str(port))
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
