"""scaler.provision: real ansible-runner runs of small playbooks, over SSH on a real droplet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RealDroplet, need

import scaler.provision
from scaler.errors import HostNotFound, ScalerError
from scaler.provision import (
    ProvisionFailed,
    SshConnection,
    render_user_data,
    run_playbook,
    to_static_inventory,
)

TOKEN = "dop_v1_" + "7" * 64
# For runs that fail before any host is dialled (port 9: discard, nothing listens).
NOWHERE = SshConnection("127.0.0.1", "root", Path("/nonexistent/id_ed25519"), port=9)


def write_playbook(folder: Path, tasks: list[dict[str, Any]], hosts: str = "packerbox") -> Path:
    path = folder / "play.yml"
    path.write_text(yaml.safe_dump([{"hosts": hosts, "gather_facts": False, "tasks": tasks}]))
    return path


def one_host(name: str = "packerbox") -> dict[str, Any]:
    return {"all": {"hosts": {name: {}}}}


def over_ssh(droplet: RealDroplet, **options: Any) -> SshConnection:
    """The droplet as the bake reaches it: root, with the key it was created with."""
    return SshConnection(droplet.public_ip, "root", droplet.key, **options)


@pytest.fixture
def remote_dir(real_droplet: RealDroplet) -> Iterator[str]:
    """An empty directory of this test's own on the shared droplet, removed afterwards."""
    path = f"/tmp/scaler-test-{uuid.uuid4().hex[:12]}"
    assert real_droplet.ssh(f"mkdir {path}").returncode == 0
    yield path
    real_droplet.ssh(f"rm -rf {path}")


def read_remote(droplet: RealDroplet, path: str) -> str:
    done = droplet.ssh(f"cat {path}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def ssh_sessions(droplet: RealDroplet) -> list[str]:
    """This host's established TCP connections to the droplet's sshd."""
    listed = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", f"{droplet.public_ip}:22"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.splitlines()


def test_progress_lines_and_result(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    target = f"{remote_dir}/out.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {"name": "Write a file", "ansible.builtin.copy": {"content": "hi\n", "dest": target}},
            {"name": "Look at it", "ansible.builtin.stat": {"path": target}},
            {"name": "Never", "ansible.builtin.debug": {"msg": "x"}, "when": False},
        ],
    )
    lines: list[str] = []
    result = run_playbook(
        one_host(), playbook=playbook, connection=over_ssh(real_droplet), on_progress=lines.append
    )
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
    assert read_remote(real_droplet, target) == "hi\n"


def test_only_the_limited_host_runs(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Mark",
                "ansible.builtin.file": {
                    "path": f"{remote_dir}/{{{{ inventory_hostname }}}}",
                    "state": "touch",
                },
            }
        ],
        hosts="all",
    )
    # wp-1's address is never dialled: --limit leaves it out
    inventory = {
        "wp_node": ["packerbox", "wp-1"],
        "_meta": {"hostvars": {"wp-1": {"ansible_host": "127.60.2.1"}}},
    }
    result = run_playbook(inventory, playbook=playbook, connection=over_ssh(real_droplet))
    assert list(result.stats) == ["packerbox"]
    assert real_droplet.ssh(f"ls {remote_dir}").stdout == "packerbox\n"


def test_interpreter_is_explicit(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    out = f"{remote_dir}/python.txt"
    playbook = write_playbook(
        tmp_path,
        [
            {"name": "Facts", "ansible.builtin.setup": {"gather_subset": ["!all"]}},
            {
                "name": "Record",
                "ansible.builtin.copy": {
                    "content": "{{ ansible_python_interpreter }} "
                    "{{ ansible_facts.python.executable }}",
                    "dest": out,
                },
            },
        ],
    )
    python = "/usr/bin/python3.11"  # Debian 12's, named: no interpreter discovery
    run_playbook(one_host(), playbook=playbook, connection=over_ssh(real_droplet, python=python))
    assert read_remote(real_droplet, out) == f"{python} {python}"


def test_api_token_never_reaches_ansible(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("SCALER_PROBE", "visible")
    controller_env = tmp_path / "controller-env.txt"  # lookups run on the controller: here
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Controller environment",
                "ansible.builtin.copy": {
                    "content": "{{ lookup('env', 'DIGITALOCEAN_TOKEN') }}|"
                    "{{ lookup('env', 'SCALER_PROBE') }}",
                    "dest": f"{remote_dir}/controller.txt",
                },
            },
            {
                "name": "Controller's child processes",
                "ansible.builtin.set_fact": {
                    "recorded": f"{{{{ lookup('pipe', 'env > {controller_env}') }}}}"
                },
            },
            {
                "name": "Module environment",
                "ansible.builtin.shell": f"env > {remote_dir}/module-env.txt",
            },
            {"name": "Fail loudly", "ansible.builtin.shell": "env >&2; exit 1"},
        ],
    )
    lines: list[str] = []
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(
            one_host(),
            playbook=playbook,
            connection=over_ssh(real_droplet),
            on_progress=lines.append,
        )
    assert read_remote(real_droplet, f"{remote_dir}/controller.txt") == "|visible"
    assert "SCALER_PROBE=visible" in controller_env.read_text()
    assert TOKEN not in controller_env.read_text()
    assert TOKEN not in read_remote(real_droplet, f"{remote_dir}/module-env.txt")
    assert TOKEN not in str(caught.value)
    assert TOKEN not in "\n".join(lines)
    assert str(caught.value).startswith("provisioning failed at task 'Fail loudly' on packerbox: ")


def test_failed_task_is_one_line_with_stderr(real_droplet: RealDroplet, tmp_path: Path) -> None:
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
        run_playbook(
            one_host(),
            playbook=playbook,
            connection=over_ssh(real_droplet),
            on_progress=lines.append,
        )
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


def test_failed_loop_item_message(real_droplet: RealDroplet, tmp_path: Path) -> None:
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
        run_playbook(one_host(), playbook=playbook, connection=over_ssh(real_droplet))


def test_broken_playbook_reports_ansibles_error(tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, [{"name": "Typo", "ansible.builtin.copyy": {}}])
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, connection=NOWHERE)
    assert str(caught.value).startswith(
        "ansible-playbook failed (rc 4): [ERROR]: couldn't resolve module/action "
        "'ansible.builtin.copyy'."
    )
    assert "\n" not in str(caught.value)


def test_missing_playbook(tmp_path: Path) -> None:
    with pytest.raises(
        ProvisionFailed, match=r"^no playbook at .*/nope\.yml; pass the path of packer-build\.yml$"
    ):
        run_playbook(one_host(), playbook=tmp_path / "nope.yml", connection=NOWHERE)


def test_build_host_must_be_in_the_inventory(tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, [])
    with pytest.raises(
        HostNotFound, match=r"^no host 'packerbox' in the inventory \(have: wp-1\)$"
    ):
        run_playbook({"wp_node": ["wp-1"]}, playbook=playbook, connection=NOWHERE)


def test_extra_vars_stay_off_the_command_line(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    controller = tmp_path / "cmdlines.txt"
    # Every process's command line while the play runs: ansible-playbook's on this host (a
    # lookup runs on the controller), the module's on the droplet.
    script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
    playbook = write_playbook(
        tmp_path,
        [
            {
                "name": "Record the controller's command lines",
                "ansible.builtin.set_fact": {
                    "recorded": f'{{{{ lookup("pipe", "{script} > {controller} 2>/dev/null") }}}}'
                },
            },
            {
                "name": "Use the password on the droplet",
                "ansible.builtin.copy": {
                    "content": "{{ welp_db_password }}",
                    "dest": f"{remote_dir}/password",
                    "mode": "0600",
                },
            },
            {
                "name": "Record the droplet's command lines",
                "ansible.builtin.shell": f"{script} > {remote_dir}/cmdlines.txt 2>/dev/null",
            },
        ],
    )
    run_playbook(
        one_host(),
        playbook=playbook,
        connection=over_ssh(real_droplet),
        extravars={"welp_db_password": "hunter2-secret"},
    )
    text = controller.read_text()
    assert "ansible-playbook" in text and "--limit packerbox" in text
    assert "hunter2-secret" not in text
    inside = read_remote(real_droplet, f"{remote_dir}/cmdlines.txt")
    assert "cmdlines.txt" in inside  # the module's own shell
    assert "hunter2-secret" not in inside
    assert read_remote(real_droplet, f"{remote_dir}/password") == "hunter2-secret"


def test_timeout_stops_the_run(real_droplet: RealDroplet, tmp_path: Path) -> None:
    playbook = write_playbook(tmp_path, [{"name": "Slow", "ansible.builtin.command": "sleep 60"}])
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, connection=over_ssh(real_droplet), timeout=3)
    assert str(caught.value) == (
        "provisioning timed out after 3 s; raise the timeout or check the build host"
    )
    assert caught.value.result is not None and caught.value.result.status == "timeout"


def test_no_way_to_run_on_this_host(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    """No local connection: none in the module, none by default, none in the inventory, and
    a play aimed at localhost does not run here."""
    assert not hasattr(scaler.provision, "LocalConnection")
    playbook = write_playbook(tmp_path, [{"name": "Ping", "ansible.builtin.ping": {}}])
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'connection'"):
        run_playbook(one_host(), playbook=playbook)  # type: ignore[call-arg]

    written = tmp_path / "inventory.json"
    here = tmp_path / "ran-here"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "packerbox",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Keep the inventory run_playbook wrote",
                            "ansible.builtin.set_fact": {
                                "kept": "{{ lookup('pipe', 'cp ' + inventory_file + ' "
                                f"{written}') }}}}"
                            },
                        },
                        {
                            "name": "Where am I",
                            "ansible.builtin.copy": {
                                "content": "{{ ansible_connection }}",
                                "dest": f"{remote_dir}/connection",
                            },
                        },
                    ],
                },
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Touch",
                            "ansible.builtin.file": {"path": str(here), "state": "touch"},
                        }
                    ],
                },
            ]
        )
    )
    inventory = {"all": {"hosts": {"packerbox": {}, "wp-1": {"ansible_host": "127.60.2.1"}}}}
    result = run_playbook(inventory, playbook=playbook, connection=over_ssh(real_droplet))
    assert list(result.stats) == ["packerbox"]
    assert not here.exists()
    assert read_remote(real_droplet, f"{remote_dir}/connection") == "ssh"
    hosts = json.loads(written.read_text())["all"]["hosts"]
    assert set(hosts) == {"packerbox", "wp-1"}
    assert hosts["packerbox"]["ansible_connection"] == "ssh"
    assert hosts["packerbox"]["ansible_host"] == real_droplet.public_ip
    assert connections(json.loads(written.read_text())) == ["ssh"]
    assert hosts["wp-1"] == {"ansible_host": "127.60.2.1"}


def connections(tree: Any) -> list[str]:
    """Every ansible_connection value anywhere in an inventory."""
    if isinstance(tree, dict):
        found = [str(tree["ansible_connection"])] if "ansible_connection" in tree else []
        return found + [c for value in tree.values() for c in connections(value)]
    return [c for value in tree for c in connections(value)] if isinstance(tree, list) else []


# --- interrupts ---------------------------------------------------------------------------

# On Ctrl-C it reports, while the exception (and so ansible-runner's frames) is still alive, the
# processes that name its temp dir: none may outlive run_playbook's raise.
INTERRUPTED_RUN = """
import os, sys, time
from pathlib import Path
from scaler.provision import SshConnection, run_playbook
connection = SshConnection(sys.argv[2], "root", Path(sys.argv[3]))
try:
    run_playbook(
        {"all": {"hosts": {"packerbox": {}}}}, playbook=Path(sys.argv[1]), connection=connection
    )
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


@pytest.fixture
def short_tmpdir() -> Iterator[Path]:
    """A TMPDIR short enough that run_playbook keeps its ssh control sockets inside it."""
    path = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_ansible_behind(
    real_droplet: RealDroplet,
    remote_dir: str,
    tmp_path: Path,
    short_tmpdir: Path,
    signum: signal.Signals,
) -> None:
    """A signal during a slow task stops ansible-playbook, its workers and ssh on this host."""
    need(Path("/proc/self/cmdline").is_file(), "needs /proc")
    started = f"{remote_dir}/sleep.pid"
    playbook = write_playbook(
        tmp_path,
        [{"name": "Slow", "ansible.builtin.shell": f"echo $$ > {started}; exec sleep 60"}],
    )
    temp = short_tmpdir  # the private data dir lands here, so its processes are findable
    proc = subprocess.Popen(
        [
            sys.executable, "-c", INTERRUPTED_RUN,
            str(playbook), real_droplet.public_ip, str(real_droplet.key),
        ],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while real_droplet.ssh(f"test -s {started}").returncode != 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow task never started"
            time.sleep(0.2)
        running = processes_naming(str(temp))
        assert any("ansible-playbook" in c for c in running), running
        assert any(c.startswith("ssh ") for c in running), running
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if signum == signal.SIGINT:
        assert (proc.returncode, out) == (130, "KeyboardInterrupt\n"), err
    else:  # Python's default for SIGTERM: the process ends by the signal, after the cleanup
        assert (proc.returncode, out) == (-signal.SIGTERM, ""), err
    assert processes_naming(str(temp)) == []
    # The module itself ran on the droplet: ending the SSH session does not end it there (its
    # process is the droplet init's now); a bake destroys the droplet. Not this shared one.
    real_droplet.ssh(f"kill $(cat {started})")
    # the private data dir is gone too
    assert [p.name for p in temp.iterdir() if p.name.startswith("scaler-ansible-")] == []
    # and no SSH connection to the droplet is left open
    deadline = time.monotonic() + 5
    while ssh_sessions(real_droplet):
        assert time.monotonic() < deadline, ssh_sessions(real_droplet)
        time.sleep(0.1)


def test_cancel_callback_stops_the_run(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path
) -> None:
    started = f"{remote_dir}/started"
    playbook = write_playbook(
        tmp_path, [{"name": "Slow", "ansible.builtin.shell": f"touch {started}; sleep 60"}]
    )
    seen = threading.Event()
    done = threading.Event()

    def watch() -> None:  # the cancel callback is polled often: look at the droplet meanwhile
        while not done.is_set():
            if real_droplet.ssh(f"test -e {started}").returncode == 0:
                seen.set()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    try:
        with pytest.raises(ProvisionFailed, match=r"^provisioning was canceled$") as caught:
            run_playbook(
                one_host(), playbook=playbook, connection=over_ssh(real_droplet), cancel=seen.is_set
            )
    finally:
        done.set()
        watcher.join(timeout=30)
    assert seen.is_set()
    assert time.monotonic() - began < 40  # well before the task's own 60 s
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


@pytest.mark.slow
def test_ssh_connection_with_a_long_home(
    real_droplet: RealDroplet, remote_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over SSH with a long $HOME (ssh's control socket path is limited to 108 bytes); no
    connection is left open afterwards (ControlPersist)."""
    home = tmp_path / ("a-long-home-directory-" * 4)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    out = f"{remote_dir}/over-ssh.txt"
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
                    "dest": out,
                },
            },
        ],
    )
    result = run_playbook(one_host(), playbook=playbook, connection=over_ssh(real_droplet))
    assert result.ok and result.changed == 1
    assert read_remote(real_droplet, out) == "root 22\n"
    deadline = time.monotonic() + 5
    while ssh_sessions(real_droplet):
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


def test_wrong_key_is_refused_by_the_droplet(real_droplet: RealDroplet, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    playbook = write_playbook(tmp_path, [{"name": "Ping", "ansible.builtin.ping": {}}])
    connection = SshConnection(real_droplet.public_ip, "root", key)
    with pytest.raises(ProvisionFailed) as caught:
        run_playbook(one_host(), playbook=playbook, connection=connection)
    assert str(caught.value).startswith("provisioning failed at task 'Ping' on packerbox: ")
    assert "Permission denied (publickey" in str(caught.value)
