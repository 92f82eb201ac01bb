"""The build droplet's host key: made by scaler, handed over in cloud-config, strictly checked
(issue 13, hole 1). Real sshd and ssh; a host with another key is never provisioned."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import need
from realbake import write_playbook

from scaler.hostkey import HostKey, UserDataError, new_host_key, with_host_key, write_known_hosts
from scaler.provision import (
    CLOUD_CONFIG,
    HostKeyMismatch,
    ProvisionFailed,
    SshConnection,
    check_host_key,
    remove_host_keys,
    render_user_data,
    run_playbook,
)


def test_the_key_is_merged_into_the_cloud_config_keeping_its_text() -> None:
    key = new_host_key()
    base = render_user_data("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI0 bake")
    merged = with_host_key(base, key, str(CLOUD_CONFIG))
    assert merged.startswith(base.rstrip("\n"))  # comments and all
    parsed = yaml.safe_load(merged)
    assert parsed["ssh_keys"] == {"ed25519_private": key.private, "ed25519_public": key.public}
    assert parsed["users"] == yaml.safe_load(base)["users"]
    assert key.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key.key_text.startswith("ssh-ed25519 ") and len(key.key_text.split()) == 2


def test_a_flow_style_cloud_config_is_rewritten_whole() -> None:
    key = new_host_key()
    merged = with_host_key("#cloud-config\n{packages: [python3]}\n", key, "ud")
    assert yaml.safe_load(merged) == {
        "packages": ["python3"],
        "ssh_keys": {"ed25519_private": key.private, "ed25519_public": key.public},
    }
    assert merged.startswith("#cloud-config\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "#!/bin/sh\necho hi\n",
            "the user data ud is not cloud-config (it starts with '#!/bin/sh'); scaler gives the "
            "build droplet its SSH host key through cloud-config's ssh_keys: make it a "
            "cloud-config file starting with #cloud-config",
        ),
        (
            "Content-Type: multipart/mixed; boundary=x\n",
            "the user data ud is not cloud-config (it starts with 'Content-Type: multipart/mixed;'"
            "); scaler gives the build droplet its SSH host key through cloud-config's ssh_keys: "
            "make it a cloud-config file starting with #cloud-config",
        ),
        (
            "#cloud-config\nssh_keys: {}\n",
            "the user data ud sets ssh_keys itself; scaler sets the build droplet's host key: "
            "remove ssh_keys from it",
        ),
        ("#cloud-config\n- a\n", "the user data ud is cloud-config but not a mapping; fix it"),
        ("#cloud-config\na: [\n", "the user data ud is not valid YAML at line 3; fix it"),
    ],
    ids=["script", "multipart", "own ssh_keys", "a list", "bad YAML"],
)
def test_user_data_that_cannot_carry_the_key(text: str, message: str) -> None:
    with pytest.raises(UserDataError) as caught:
        with_host_key(text, new_host_key(), "ud")
    assert str(caught.value) == message


def one_host(name: str = "packerbox") -> dict[str, Any]:
    """A static inventory of one host."""
    return {"all": {"hosts": {name: {}}}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway sshd on 127.0.0.1 (port, client key), its host key in tmp_path/host_key."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    need(
        Path(binary).is_file() and shutil.which("ssh-keygen") is not None,
        "openssh-server is not installed",
    )
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    shutil.copy(tmp_path / "client_key.pub", tmp_path / "authorized_keys")
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin yes\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the loopback sshd did not start")
                time.sleep(0.05)
        yield port, tmp_path / "client_key"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _sshd_key(folder: Path) -> HostKey:
    public = (folder / "host_key.pub").read_text().strip()
    return HostKey((folder / "host_key").read_text(), public)


def _connection(tmp_path: Path, port: int, client_key: Path, key: HostKey) -> SshConnection:
    known = write_known_hosts(tmp_path, "127.0.0.1", port, key)
    user = pwd.getpwuid(os.getuid()).pw_name
    return SshConnection(
        "127.0.0.1", user, client_key, port=port, python=sys.executable, known_hosts=known
    )


@pytest.mark.slow
def test_the_right_host_key_passes_and_ansible_checks_it_strictly(
    tmp_path: Path, sshd: tuple[int, Path]
) -> None:
    port, client_key = sshd
    key = _sshd_key(tmp_path)
    connection = _connection(tmp_path, port, client_key, key)
    assert (tmp_path / "known_hosts").read_text() == f"[127.0.0.1]:{port} {key.key_text}\n"
    assert oct((tmp_path / "known_hosts").stat().st_mode & 0o777) == "0o600"
    check_host_key(connection, key.key_text, "droplet 1", wait=0)
    out = tmp_path / "ran"
    play = write_playbook(tmp_path, [{"ansible.builtin.copy": {"content": "x", "dest": str(out)}}])
    assert run_playbook(one_host(), playbook=play, connection=connection).ok
    assert out.read_text() == "x"


@pytest.mark.slow
def test_another_host_key_stops_before_any_task(tmp_path: Path, sshd: tuple[int, Path]) -> None:
    port, client_key = sshd
    ours = new_host_key()
    connection = _connection(tmp_path, port, client_key, ours)
    with pytest.raises(HostKeyMismatch) as caught:
        check_host_key(connection, ours.key_text, "droplet 7", wait=0)
    theirs = _sshd_key(tmp_path).key_text.split()[1]
    assert str(caught.value) == (
        f"127.0.0.1:{port} is not droplet 7: it presents host key {theirs[:16]}..., not the "
        "host key scaler gave the droplet in its user data; nothing was run there (is the user "
        "data's ssh_keys applied by cloud-init, and is that address the droplet's?)"
    )
    # and Ansible itself refuses that host with this known_hosts (checking is really on)
    out = tmp_path / "ran"
    play = write_playbook(tmp_path, [{"ansible.builtin.copy": {"content": "x", "dest": str(out)}}])
    with pytest.raises(ProvisionFailed) as failed:
        run_playbook(one_host(), playbook=play, connection=connection)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in str(failed.value)
    assert not out.exists()


@pytest.mark.slow
def test_host_keys_are_removed_only_where_they_are_ours(
    tmp_path: Path, sshd: tuple[int, Path]
) -> None:
    """The loopback sshd runs on this machine: its /etc/ssh keys are not the key scaler made,
    so nothing there is touched."""
    port, client_key = sshd
    key = _sshd_key(tmp_path)
    connection = _connection(tmp_path, port, client_key, key)
    before = sorted(Path("/etc/ssh").glob("ssh_host_*"))
    why = remove_host_keys(connection, key.key_text)
    assert why == "its /etc/ssh/ssh_host_ed25519_key.pub is not the key scaler gave it"
    assert sorted(Path("/etc/ssh").glob("ssh_host_*")) == before
