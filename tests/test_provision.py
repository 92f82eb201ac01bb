"""scaler.provision: real ansible-runner runs of small playbooks, local and over loopback SSH."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
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

from scaler.errors import HostNotFound, ScalerError
from scaler.provision import (
    LocalConnection,
    ProvisionFailed,
    SshConnection,
    render_user_data,
    run_playbook,
    to_static_inventory,
)

TOKEN = "dop_v1_" + "7" * 64


def write_playbook(folder: Path, tasks: list[dict[str, Any]], hosts: str = "packerbox") -> Path:
    path = folder / "play.yml"
    path.write_text(yaml.safe_dump([{"hosts": hosts, "gather_facts": False, "tasks": tasks}]))
    return path


def one_host(name: str = "packerbox") -> dict[str, Any]:
    return {"all": {"hosts": {name: {}}}}


def test_progress_lines_and_result(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Write a file",
                "ansible.builtin.copy": {"content": "hi\n", "dest": str(target)},
            },
            {"name": "Look at it", "ansible.builtin.stat": {"path": str(target)}},
            {"name": "Never", "ansible.builtin.debug": {"msg": "x"}, "when": False},
        ],
    )
    lines: list[str] = []
    result = run_playbook(one_host(), playbook=playbook, on_progress=lines.append)
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "changed: [packerbox] Write a file",
        "ok: [packerbox] Look at it",
        "skipped: [packerbox] Never",
    ]
    assert all(line.endswith("s)") for line in lines)
    assert result.ok and result.status == "successful" and result.rc == 0
    assert result.changed == 1
    stats = result.stats["packerbox"]
    assert (stats.ok, stats.changed, stats.skipped, stats.failed) == (2, 1, 1, 0)
    assert result.failure is None and result.duration > 0
    assert target.read_text() == "hi\n"


def test_only_the_limited_host_runs(tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Mark",
                "ansible.builtin.file": {
                    "path": str(tmp_path / "{{ inventory_hostname }}"),
                    "state": "touch",
                },
            }
        ],
        hosts="all",
    )
    inventory = {
        "wp_node": ["packerbox", "wp-1"],
        "_meta": {"hostvars": {"wp-1": {"ansible_host": "127.60.2.1"}}},
    }
    result = run_playbook(inventory, playbook=playbook)
    assert list(result.stats) == ["packerbox"]
    assert (tmp_path / "packerbox").exists() and not (tmp_path / "wp-1").exists()


def test_interpreter_is_explicit(tmp_path: Path) -> None:
    out = tmp_path / "python.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Record",
                "ansible.builtin.copy": {
                    "content": "{{ ansible_python_interpreter }}",
                    "dest": str(out),
                },
            }
        ],
    )
    run_playbook(one_host(), playbook=playbook, connection=LocalConnection())
    assert out.read_text() == sys.executable


def test_api_token_never_reaches_ansible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("SCALER_PROBE", "visible")
    controller = tmp_path / "controller.txt"
    module_env = tmp_path / "module-env.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Controller environment",
                "ansible.builtin.copy": {
                    "content": "{{ lookup('env', 'DIGITALOCEAN_TOKEN') }}|"
                    "{{ lookup('env', 'SCALER_PROBE') }}",
                    "dest": str(controller),
                },
            },
            {"name": "Module environment", "ansible.builtin.shell": f"env > {module_env}"},
            {"name": "Fail loudly", "ansible.builtin.shell": "env >&2; exit 1"},
        ],
    )
    lines: list[str] = []
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, on_progress=lines.append)
    assert controller.read_text() == "|visible"
    assert "SCALER_PROBE=visible" in module_env.read_text()
    assert TOKEN not in module_env.read_text()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in "\n".join(lines)
    assert str(caught.value).startswith("provisioning failed at task 'Fail loudly' on packerbox: ")


def test_failed_task_is_one_line_with_stderr(tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        [
            {"name": "Tolerated", "ansible.builtin.command": "false", "ignore_errors": True},
            {
                "name": "Breaks",
                "ansible.builtin.shell": "echo first >&2; echo 'disk is full' >&2; exit 3",
            },
            {"name": "Not reached", "ansible.builtin.command": "true"},
        ],
    )
    lines: list[str] = []
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, on_progress=lines.append)
    assert str(caught.value) == (
        "provisioning failed at task 'Breaks' on packerbox: non-zero return code: disk is full"
    )
    assert isinstance(caught.value, ScalerError)
    result = caught.value.result
    assert result is not None
    assert (result.status, result.rc) == ("failed", 2)
    assert result.stats["packerbox"].ignored == 1
    assert [line.split(" (")[0] for line in lines] == [
        "ignored: [packerbox] Tolerated",
        "failed: [packerbox] Breaks",
    ]


def test_failed_loop_item_message(tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Check files",
                "ansible.builtin.assert": {
                    "that": ["item != 'b'"],
                    "fail_msg": "item {{ item }} is bad",
                },
                "loop": ["a", "b", "c"],
            }
        ],
    )
    with pytest.raises(
        ProvisionFailed,
        match=r"^provisioning failed at task 'Check files' on packerbox: item b is bad$",
    ):
        run_playbook(one_host(), playbook=playbook)


def test_broken_playbook_reports_ansibles_error(tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, [{"name": "Typo", "ansible.builtin.copyy": {}}])
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook)
    assert str(caught.value).startswith(
        "ansible-playbook failed (rc 4): [ERROR]: couldn't resolve module/action "
        "'ansible.builtin.copyy'."
    )
    assert "\n" not in str(caught.value)


def test_missing_playbook(tmp_path: Path) -> None:
    with pytest.raises(
        ProvisionFailed, match=r"^no playbook at .*/nope\.yml; pass the path of packer-build\.yml$"
    ):
        run_playbook(one_host(), playbook=tmp_path / "nope.yml")


def test_build_host_must_be_in_the_inventory(tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, [])
    with pytest.raises(
        HostNotFound, match=r"^no host 'packerbox' in the inventory \(have: wp-1\)$"
    ):
        run_playbook({"wp_node": ["wp-1"]}, playbook=playbook)


def test_extra_vars_stay_off_the_command_line(tmp_path: Path) -> None:
    seen = tmp_path / "cmdlines.txt"
    # Every process's command line while the play runs, ansible-playbook's among them.
    script = f"for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done > {seen} 2>/dev/null"
    playbook = write_playbook(
        tmp_path, [{"name": "Record command lines", "ansible.builtin.shell": script}]
    )
    run_playbook(one_host(), playbook=playbook, extravars={"welp_db_password": "hunter2-secret"})
    text = seen.read_text()
    assert "ansible-playbook" in text and "--limit packerbox" in text
    assert "hunter2-secret" not in text


# --- interrupts ---------------------------------------------------------------------------

# On Ctrl-C it reports, while the exception (and so ansible-runner's frames) is still alive, the
# processes that name its temp dir: none may outlive run_playbook's raise.
INTERRUPTED_RUN = """
import os, sys, time
from pathlib import Path
from scaler.provision import run_playbook
try:
    run_playbook({"all": {"hosts": {"packerbox": {}}}}, playbook=Path(sys.argv[1]))
except KeyboardInterrupt as err:
    kept = err
    time.sleep(0.5)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if os.environ["TMPDIR"].encode() in cmdline:
                print("left:", cmdline.replace(b"\\0", b" ").decode())
    print("KeyboardInterrupt")
    sys.exit(130)
print("finished")
"""


def processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that contain text."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_ansible_behind(tmp_path: Path, signum: signal.Signals) -> None:
    """A signal during a slow task stops ansible-playbook and its module at once."""
    need(Path("/proc/self/cmdline").is_file(), "needs /proc")
    started = tmp_path / "sleep.pid"
    playbook = write_playbook(
        tmp_path,
        [{"name": "Slow", "ansible.builtin.shell": f"echo $$ > {started}; exec sleep 60"}],
    )
    temp = tmp_path / "t"  # the private data dir lands here, so its processes are findable
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_RUN, str(playbook)],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.is_file() or not started.read_text().strip():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow task never started"
            time.sleep(0.05)
        sleeper = int(started.read_text())
        assert processes_naming(str(temp)), "ansible-playbook should be running now"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    if signum == signal.SIGINT:
        assert (proc.returncode, out) == (130, "KeyboardInterrupt\n"), err
    else:  # Python's default for SIGTERM: the process ends by the signal, after the cleanup
        assert (proc.returncode, out) == (-signal.SIGTERM, ""), err
    assert processes_naming(str(temp)) == []
    assert not alive(sleeper)
    # the private data dir is gone too (a killed module may leave its own payload dir)
    assert [p.name for p in temp.iterdir() if p.name.startswith("scaler-ansible-")] == []


def test_cancel_callback_stops_the_run(tmp_path: Path) -> None:
    started = tmp_path / "started"
    playbook = write_playbook(
        tmp_path, [{"name": "Slow", "ansible.builtin.shell": f"touch {started}; sleep 60"}]
    )
    began = time.monotonic()
    with pytest.raises(ProvisionFailed, match=r"^provisioning was canceled$") as caught:
        run_playbook(one_host(), playbook=playbook, cancel=started.is_file)
    assert time.monotonic() - began < 20
    assert caught.value.result is not None and caught.value.result.status == "canceled"


# --- inventory shapes -------------------------------------------------------------------


def ansible_inventory_list(tmp_path: Path, inventory: dict[str, Any]) -> dict[str, Any]:
    """What Ansible itself makes of a static inventory file."""
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(inventory))
    binary = Path(sys.executable).parent / "ansible-inventory"
    out = subprocess.run(
        [str(binary), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_INVENTORY_ENABLED": "yaml", "ANSIBLE_NOCOLOR": "1"},
    )
    listed: dict[str, Any] = json.loads(out.stdout)
    return listed


def groups_of(listed: dict[str, Any]) -> dict[str, set[str]]:
    return {
        name: set(group.get("hosts", []))
        for name, group in listed.items()
        if name not in ("_meta", "all") and group.get("hosts")
    }


def test_script_inventory_converts_losslessly(tmp_path: Path, shared_data: Path) -> None:
    source = json.loads(
        (shared_data / "tfstate/terraform-inventory/expected_list_012.json").read_text()
    )
    listed = ansible_inventory_list(tmp_path, to_static_inventory(source))
    expected = {name: set(hosts) for name, hosts in source.items() if name != "all"}
    assert groups_of(listed) == expected
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["35.159.25.34"]["my_endpoint"] == "a.b.c.d.example.com"
    assert hostvars["10.0.0.2"]["map"] == {"first": "a", "second": "b"}


def test_meta_hostvars_children_and_group_vars(tmp_path: Path) -> None:
    source = {
        "all": {"children": ["web", "db"], "vars": {"project": "nav"}},
        "web": {"children": ["wp_node"]},
        "wp_node": {"hosts": ["wp-1", "packerbox"], "vars": {"php": "8.2"}},
        "db": {"hosts": ["db-1"]},
        "ha_db_fip": ["fip-0"],
        "_meta": {
            "hostvars": {
                "fip-0": {"ip_address": "127.60.3.1"},
                "wp-1": {"ansible_host": "127.60.2.1"},
            }
        },
    }
    listed = ansible_inventory_list(tmp_path, to_static_inventory(source))
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["fip-0"] == {"ip_address": "127.60.3.1", "project": "nav"}
    assert hostvars["packerbox"] == {"php": "8.2", "project": "nav"}
    assert set(listed["web"]["children"]) == {"wp_node"}
    assert set(listed["wp_node"]["hosts"]) == {"wp-1", "packerbox"}


def test_static_inventory_passes_through() -> None:
    static = {
        "all": {"hosts": {"packerbox": {"x": 1}}, "children": {"ha_db_fip": {"hosts": {"f": {}}}}}
    }
    converted = to_static_inventory(static)
    assert converted == static and converted is not static


# --- user data ----------------------------------------------------------------------------


def test_user_data_fills_the_placeholders() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q bake"
    text = render_user_data(key)
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    user = data["users"][1]
    assert user["name"] == "ansible"
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [key]
    assert "python3" in data["packages"]
    assert yaml.safe_load(render_user_data(key, user="deploy"))["users"][1]["name"] == "deploy"


@pytest.mark.parametrize(
    ("key", "user", "message"),
    [
        (
            "ssh-ed25519 AAAA x",
            "Root Admin",
            "invalid Ansible user name 'Root Admin'; use a lowercase Unix user name",
        ),
        ("", "ansible", "the authorized key must be one public key line (ssh-ed25519 AAAA...)"),
        (
            "ssh-ed25519 A\nssh-rsa B",
            "ansible",
            "the authorized key must be one public key line (ssh-ed25519 AAAA...)",
        ),
    ],
)
def test_user_data_rejects_bad_input(key: str, user: str, message: str) -> None:
    with pytest.raises(ScalerError) as caught:
        render_user_data(key, user=user)
    assert str(caught.value) == message


# --- SSH -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway sshd on 127.0.0.1 accepting one key for the current user."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    need(
        Path(sshd).is_file() and shutil.which("ssh-keygen") is not None,
        "openssh-server is not installed",
    )
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    shutil.copy(tmp_path / "client_key.pub", tmp_path / "authorized_keys")
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin yes\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
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


def sshd_sessions(sshd_pid: int) -> list[int]:
    """The live child processes of the sshd (one per open connection)."""
    children = Path(f"/proc/{sshd_pid}/task/{sshd_pid}/children").read_text().split()
    return [int(pid) for pid in children if alive(int(pid))]


@pytest.mark.slow
def test_ssh_connection(
    tmp_path: Path, loopback_sshd: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over SSH with a long $HOME (ssh's control socket path is limited to 108 bytes); no
    connection is left open afterwards (ControlPersist)."""
    home = tmp_path / ("a-long-home-directory-" * 4)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    port, key = loopback_sshd
    out = tmp_path / "over-ssh.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Who am I",
                "ansible.builtin.command": "id -un",
                "register": "who",
                "changed_when": False,
            },
            {
                "name": "Write over SSH",
                "ansible.builtin.copy": {
                    "content": "{{ who.stdout }} {{ ansible_port }}\n",
                    "dest": str(out),
                },
            },
        ],
    )
    user = pwd.getpwuid(os.getuid()).pw_name
    connection = SshConnection(
        host="127.0.0.1", user=user, private_key_file=key, port=port, python=sys.executable
    )
    result = run_playbook(one_host(), playbook=playbook, connection=connection)
    assert result.ok and result.changed == 1
    assert out.read_text() == f"{user} {port}\n"
    sshd_pid = int((tmp_path / "sshd.pid").read_text())
    deadline = time.monotonic() + 5
    while sshd_sessions(sshd_pid):
        assert time.monotonic() < deadline, "an SSH connection outlived the run"
        time.sleep(0.05)


@pytest.mark.slow
def test_ssh_unreachable_names_the_host(tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    playbook = write_playbook(tmp_path, [{"name": "Ping", "ansible.builtin.ping": {}}])
    connection = SshConnection(
        host="127.0.0.1", user="ansible", private_key_file=key, port=free_port()
    )
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, connection=connection)
    message = str(caught.value)
    assert message.startswith("provisioning failed at task 'Ping' on packerbox: ")
    assert "Connection refused" in message
    assert (
        caught.value.result is not None and caught.value.result.stats["packerbox"].unreachable == 1
    )
