"""Run the provisioning playbook with ansible-runner: the one module that imports it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import ansible_runner

from scaler.errors import HostNotFound, ScalerError
from scaler.events import Say

REPO_ROOT = Path(__file__).resolve().parent.parent
ROLES_DIR = REPO_ROOT / "roles"
PLAYBOOK = REPO_ROOT / "packer-build.yml"
CLOUD_CONFIG = REPO_ROOT / "config" / "cloud-config.yaml"
BUILD_HOST = "packerbox"

# Environment variables that never reach Ansible (nor the runner's artifact files): the
# DigitalOcean token and anything else that looks like a credential. The play needs none.
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)
_MESSAGE_LIMIT = 300
# How often ansible-runner looks at the cancel callback (its default is 5 s).
_CANCEL_POLL = 0.2
# ssh's control socket path must fit in 108 bytes: <dir>/<40-char hash>.<16-char suffix>.
_CONTROL_DIR_MAX = 48

Status = Literal["successful", "failed", "timeout", "canceled"]


@dataclass(frozen=True)
class SshConnection:
    """Reach the build host over SSH with a private key file; with `known_hosts` (the host
    key scaler gave the droplet) strictly checked, else with host key checking off."""

    host: str
    user: str
    private_key_file: Path
    port: int = 22
    python: str = "/usr/bin/python3"
    known_hosts: Path | None = None

    def ssh_options(self) -> list[str]:
        """The options every ssh to this host takes."""
        if self.known_hosts is None:
            checking = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]
        else:
            checking = [
                "StrictHostKeyChecking=yes",
                f"UserKnownHostsFile={self.known_hosts}",
                "GlobalKnownHostsFile=/dev/null",
            ]
        options = [*checking, "IdentitiesOnly=yes"]
        return [a for o in options for a in ("-o", o)]

    def hostvars(self) -> dict[str, Any]:
        """The Ansible connection variables for this connection."""
        return {
            "ansible_connection": "ssh",
            "ansible_host": self.host,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key_file),
            "ansible_ssh_common_args": shlex.join(self.ssh_options()),
            "ansible_python_interpreter": self.python,
        }

    def ssh_argv(self, command: str) -> list[str]:
        """The ssh command line that runs `command` on the host as Ansible would connect."""
        return [
            "ssh", *self.ssh_options(), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-i", str(self.private_key_file), "-p", str(self.port),
            f"{self.user}@{self.host}", command,
        ]  # fmt: skip


def wait_for_first_boot(connection: SshConnection, timeout: float) -> str:
    """Wait for cloud-init's first boot on the host to finish; returns its status line.

    A new droplet's sshd answers before cloud-init's last stage ends, and that stage runs apt
    (package_update, packages): a play started then fails on apt's lock. Packer users put
    `cloud-init status --wait` first for the same reason. A host without cloud-init: "".
    """
    # `status --wait` alone returns early once an earlier stage has logged an error; the final
    # stage writes boot-finished when it is done (unless cloud-init is disabled on the host).
    script = (
        "command -v cloud-init >/dev/null || exit 0; "
        "cloud-init status --wait >/dev/null; "
        'case "$(cloud-init status)" in *disabled*) exit 0;; esac; '
        "while [ ! -e /var/lib/cloud/instance/boot-finished ]; do sleep 0.5; done; "
        "cloud-init status"
    )
    try:
        done = subprocess.run(
            connection.ssh_argv(script),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ProvisionFailed(
            f"cloud-init on {connection.host} did not finish within {timeout:.0f} s"
        ) from None
    if done.returncode == 255:
        raise ProvisionFailed(
            f"ssh to {connection.user}@{connection.host}:{connection.port} failed: "
            f"{done.stderr.strip().splitlines()[-1:] or ['no answer']}"
        )
    return done.stdout.strip()


def run_over_ssh(
    connection: SshConnection, command: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run one command on the host over SSH (exit 255: ssh itself failed); raise ProvisionFailed
    when it does not end within `timeout` seconds."""
    try:
        return subprocess.run(
            connection.ssh_argv(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ProvisionFailed(
            f"ssh to {connection.user}@{connection.host} did not end within {timeout:.0f} s"
        ) from None


# The only connection there is: scaler provisions a droplet it created, over SSH, never this
# machine (no local connection, by construction).
Connection = SshConnection


@dataclass(frozen=True)
class HostStats:
    """One host's recap line."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskFailure:
    """The first task that failed: its name, the host, and Ansible's message on one line."""

    task: str
    host: str
    message: str


@dataclass(frozen=True)
class ProvisionResult:
    """What a playbook run did."""

    status: Status
    rc: int
    duration: float
    stats: Mapping[str, HostStats]
    failure: TaskFailure | None = None
    error: str = ""

    @property
    def changed(self) -> int:
        """Tasks that changed something, over all hosts."""
        return sum(s.changed for s in self.stats.values())

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == "successful" and self.rc == 0


class ProvisionFailed(ScalerError):
    """The playbook run failed; `result` holds the details when it ran at all."""

    def __init__(self, message: str, result: ProvisionResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def run_playbook(
    inventory: Mapping[str, Any],
    *,
    playbook: Path = PLAYBOOK,
    host: str = BUILD_HOST,
    connection: Connection,
    extravars: Mapping[str, Any] | None = None,
    roles_path: Path = ROLES_DIR,
    on_progress: Say | None = None,
    timeout: int | None = None,
    cancel: Callable[[], bool] | None = None,
    extra_var_files: Sequence[Path] = (),
    vault_password_files: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    extra_roles: Sequence[Path] = (),
    inventory_vars_dir: Path | None = None,
) -> ProvisionResult:
    """Run `playbook` on `host` only (--limit) and return the result; raise ProvisionFailed.

    Ctrl-C and SIGTERM (main thread) or `cancel()` returning True stop ansible-playbook and
    every process it started; the signal is then re-raised here, `cancel` gives "canceled".
    `env` (Packer's ansible_env_vars) is added to Ansible's environment, `extra_args` (its
    extra_arguments) to the command line; `inventory_vars_dir`'s group_vars/ and host_vars/ sit
    beside the inventory, as with Packer's inventory_directory.
    """
    if not playbook.is_file():
        raise ProvisionFailed(f"no playbook at {playbook}; pass the path of packer-build.yml")
    ansible_cfg = find_ansible_cfg(playbook)
    searched = roles_search_path(ansible_cfg, [*extra_roles, roles_path])
    static = to_static_inventory(inventory)
    _set_hostvars(static, host, connection.hostvars())
    bin_dir = _ansible_bin_dir()

    private = Path(tempfile.mkdtemp(prefix="scaler-ansible-"))
    control = private / "cp"
    if len(str(control)) > _CONTROL_DIR_MAX:  # a long $TMPDIR
        control = Path(tempfile.mkdtemp(prefix="scaler-cp-", dir="/tmp"))
    stop = _Stop(cancel)
    try:
        control.mkdir(mode=0o700, exist_ok=True)
        (private / "inventory").mkdir()
        (private / "env").mkdir()
        (private / "project").mkdir()
        from scaler.cleanup import mark_owner

        # whose folder this is: after a kill -9 of scaler, `scaler cleanup` knows it is dead
        mark_owner(private, "ansible")
        # ansible-runner starts ansible-playbook ignoring SIGHUP in a session of its own: after
        # a kill -9 of scaler it would play on; under setpriv it dies with us
        wrapped = _dying_ansible_playbook(private, bin_dir)
        inventory_file = _write_runner_files(private, static, extravars, inventory_vars_dir)
        # once ansible-playbook has parsed its extra vars, the file (the password) can go: a
        # kill -9 of scaler then leaves no secret in the temp folder
        events = _Events(on_progress, forget=[private / "env" / "extravars"])
        config = ansible_runner.RunnerConfig(
            private_data_dir=str(private),
            playbook=str(playbook.resolve()),
            inventory=str(inventory_file),
            limit=host,
            envvars={
                # ansible-playbook and its helpers come from the same environment as scaler.
                "PATH": os.pathsep.join([*wrapped, bin_dir, os.environ.get("PATH", os.defpath)]),
                **_ansible_settings(searched, ansible_cfg, connection, private, control),
                **dict(env or {}),
            },
            quiet=True,
            timeout=timeout,
            suppress_env_files=True,
            cmdline=_command_line(extra_var_files, vault_password_files, extra_args),
        )
        config.prepare()
        config.env = {k: v for k, v in config.env.items() if not _is_secret_env(k)}
        runner = ansible_runner.Runner(
            config=config, event_handler=events.handle, cancel_callback=stop.requested
        )
        started = time.monotonic()
        with stop.catching_signals():
            try:
                status, rc = runner.run()
            finally:
                # whatever ended the run (an exception too), nothing it started may outlive it:
                # ansible-playbook, its workers, modules and ssh control masters
                _kill_processes_under(private, control, events.pids)
        duration = time.monotonic() - started
        stdout = _read(Path(config.artifact_dir) / "stdout")
        result = ProvisionResult(
            status=status
            if status in ("successful", "failed", "timeout", "canceled")
            else "failed",
            rc=rc if isinstance(rc, int) else -1,
            duration=duration,
            stats=_stats(runner.stats),
            failure=events.failure,
            error="" if events.failure else _error_line(stdout),
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(control, ignore_errors=True)
    stop.reraise()
    if not result.ok:
        raise ProvisionFailed(_failure_message(result, timeout), result)
    return result


def _write_runner_files(
    private: Path,
    static: Mapping[str, Any],
    extravars: Mapping[str, Any] | None,
    inventory_vars_dir: Path | None,
) -> Path:
    """ansible-runner's private data folder: the inventory (with the group_vars/host_vars of
    `inventory_vars_dir` beside it), the extra vars and the runner settings; the inventory file."""
    inventory_file = private / "inventory" / "hosts.json"
    _write_private(inventory_file, json.dumps(static))
    if inventory_vars_dir is not None:
        for sub in ("group_vars", "host_vars"):
            if (inventory_vars_dir / sub).is_dir():
                (private / "inventory" / sub).symlink_to((inventory_vars_dir / sub).resolve())
    # Extra vars (the database password among them) go in a file, not on the command line.
    _write_private(private / "env" / "extravars", json.dumps(dict(extravars or {})))
    # a file, not RunnerConfig(settings=...): ansible-runner drops those without the file
    _write_private(private / "env" / "settings", json.dumps({"pexpect_timeout": _CANCEL_POLL}))
    return inventory_file


def _command_line(
    extra_var_files: Sequence[Path], vault_password_files: Sequence[Path], extra_args: Sequence[str]
) -> str | None:
    """ansible-playbook's added arguments: -e @FILE, --vault-password-file, then extra_args."""
    args: list[str] = []
    for path in extra_var_files:
        args += ["-e", f"@{Path(path).resolve()}"]
    for path in vault_password_files:
        args += ["--vault-password-file", str(Path(path).resolve())]
    args += extra_args
    return shlex.join(args) if args else None


def _ansible_settings(
    searched: Sequence[str],
    ansible_cfg: Path | None,
    connection: Connection,
    private: Path,
    control: Path,
) -> dict[str, str]:
    """The ANSIBLE_* environment of a run."""
    return {
        # the user's roles first, scaler's after: never hide a role they installed
        "ANSIBLE_ROLES_PATH": os.pathsep.join(searched),
        **({"ANSIBLE_CONFIG": str(ansible_cfg)} if ansible_cfg else {}),
        "ANSIBLE_PIPELINING": "True",
        # off, Ansible puts StrictHostKeyChecking=no first, and ssh takes the first
        "ANSIBLE_HOST_KEY_CHECKING": str(_checks_host_key(connection)),
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # ~/.ansible/cp breaks with a long $HOME (ssh's 108-byte socket path limit)
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
    }


def _dying_ansible_playbook(private: Path, bin_dir: str) -> list[str]:
    """A folder with an `ansible-playbook` that runs the real one under a parent-death signal
    (SIGKILL when scaler dies), or nothing where setpriv is missing."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return []
    folder = private / "bin"
    folder.mkdir()
    real = Path(bin_dir) / "ansible-playbook"
    script = folder / "ansible-playbook"
    script.write_text(
        f"#!/bin/sh\nexec {shlex.quote(setpriv)} --pdeathsig KILL -- {shlex.quote(str(real))} "
        '"$@"\n'
    )
    script.chmod(0o700)
    return [str(folder)]


def _checks_host_key(connection: Connection | None) -> bool:
    return isinstance(connection, SshConnection) and connection.known_hosts is not None


class HostKeyMismatch(ProvisionFailed):
    """The host at the droplet's address is not the droplet scaler created."""


def scan_host_keys(host: str, port: int, timeout: float = 10.0) -> list[str]:
    """The ed25519 host keys `host:port` presents (`ssh-ed25519 AAAA...`), via ssh-keyscan."""
    keyscan = shutil.which("ssh-keyscan")
    if keyscan is None:
        raise ProvisionFailed("ssh-keyscan not found; install openssh-client")
    try:
        done = subprocess.run(
            [keyscan, "-T", str(max(1, int(timeout))), "-t", "ed25519", "-p", str(port), host],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
        )
    except subprocess.TimeoutExpired:
        return []
    keys = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            keys.append(f"{parts[1]} {parts[2]}")
    return keys


def check_host_key(
    connection: SshConnection, expected: str, what: str, *, wait: float = 30.0
) -> None:
    """Make sure `connection`'s host presents the host key `expected` (`ssh-ed25519 AAAA`):
    HostKeyMismatch, naming what answered, before anything runs there."""
    deadline = time.monotonic() + wait
    while True:
        seen = scan_host_keys(connection.host, connection.port)
        if expected in seen:
            return
        # sshd may answer with keys of its own before cloud-init wrote ours: look again
        if time.monotonic() >= deadline:
            got = f"host key {seen[0].split()[1][:16]}..." if seen else "no ed25519 host key"
            raise HostKeyMismatch(
                f"{connection.host}:{connection.port} is not {what}: it presents {got}, not the "
                "host key scaler gave the droplet in its user data; nothing was run there "
                "(is the user data's ssh_keys applied by cloud-init, and is that address the "
                "droplet's?)"
            )
        time.sleep(1.0)


def remove_host_keys(connection: SshConnection, expected: str) -> str:
    """Remove the host key scaler gave the droplet (and cloud-init's copies of the user data
    that held it), so the snapshot does not keep it; "" on success, else why not.

    Only where the droplet's own key file is that key: never anything on a host whose key
    scaler did not make."""
    script = (
        'set -e; S=""; [ "$(id -u)" = 0 ] || S="sudo -n"; '
        "f=/etc/ssh/ssh_host_ed25519_key.pub; "
        f'[ -f "$f" ] && [ "$(cut -d" " -f1,2 "$f")" = {shlex.quote(expected)} ] || exit 3; '
        "$S rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub "
        "/var/lib/cloud/instances/*/user-data.txt /var/lib/cloud/instances/*/user-data.txt.i"
    )
    try:
        done = subprocess.run(
            connection.ssh_argv(script),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return _one_line(str(err))
    if done.returncode == 3:
        return "its /etc/ssh/ssh_host_ed25519_key.pub is not the key scaler gave it"
    if done.returncode != 0:
        return _one_line(done.stderr.strip() or f"ssh exited {done.returncode}")
    return ""


# Ansible's own default roles_path, which ANSIBLE_ROLES_PATH would otherwise replace.
_ANSIBLE_DEFAULT_ROLES = ("~/.ansible/roles", "/usr/share/ansible/roles", "/etc/ansible/roles")


def find_ansible_cfg(playbook: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The ansible.cfg a run uses: $ANSIBLE_CONFIG, else the playbook's folder's, else ./'s."""
    env = os.environ if environ is None else environ
    if env.get("ANSIBLE_CONFIG"):
        return Path(env["ANSIBLE_CONFIG"]).expanduser()
    for folder in (Path(playbook).resolve().parent, Path.cwd()):
        if (folder / "ansible.cfg").is_file():
            return folder / "ansible.cfg"
    return None


def roles_search_path(
    ansible_cfg: Path | None, ours: Sequence[Path], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Where roles are looked up: the user's ANSIBLE_ROLES_PATH (else ansible.cfg's roles_path,
    else Ansible's defaults), then `ours` appended."""
    import configparser

    env = os.environ if environ is None else environ
    theirs: list[str] = []
    if env.get("ANSIBLE_ROLES_PATH"):
        theirs = [p for p in env["ANSIBLE_ROLES_PATH"].split(os.pathsep) if p]
    elif ansible_cfg is not None and ansible_cfg.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ansible_cfg)
        except configparser.Error as err:
            raise ProvisionFailed(f"cannot read {ansible_cfg}: {_one_line(str(err))}") from None
        raw = parser.get("defaults", "roles_path", fallback="")
        # Ansible reads a relative path in ansible.cfg from the file's folder
        theirs = [
            str((ansible_cfg.parent / Path(p).expanduser()).resolve())
            for p in raw.split(os.pathsep)
            if p.strip()
        ]
    if not theirs:
        theirs = [os.path.expanduser(p) for p in _ANSIBLE_DEFAULT_ROLES]
    out = list(dict.fromkeys([*theirs, *(str(Path(p).resolve()) for p in ours)]))
    return out


def install_galaxy_roles(requirements: Path, into: Path, timeout: float = 600) -> None:
    """`ansible-galaxy install -r requirements -p into` (Packer's galaxy_file)."""
    into.mkdir(parents=True, exist_ok=True)
    galaxy = Path(_ansible_bin_dir()) / "ansible-galaxy"
    env = {k: v for k, v in os.environ.items() if not _is_secret_env(k)}
    try:
        proc = subprocess.run(
            [str(galaxy), "install", "-r", str(requirements), "-p", str(into)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProvisionFailed(f"ansible-galaxy install -r {requirements} timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise ProvisionFailed(
            f"ansible-galaxy install -r {requirements} failed (rc {proc.returncode}): "
            + _one_line(lines[-1] if lines else "no output")
        )


def steps_playbook(steps: Sequence[Any], folder: Path, host: str, first: int = 1) -> Path:
    """One play on `host` doing Packer's shell and file provisioners in order (as Ansible's
    script and copy tasks, numbered from `first`); scripts are copied into `folder` first,
    inline lines become one script."""
    tasks: list[dict[str, Any]] = []
    for n, step in enumerate(steps, first):
        kind = type(step).__name__
        if kind == "ShellStep":
            scripts: list[Path] = []
            if step.inline:
                path = folder / f"step{n}-inline.sh"
                path.write_text(f"#!{step.shebang}\n" + "\n".join(step.inline) + "\n")
                scripts.append(path)
            for i, source in enumerate(step.scripts):
                path = folder / f"step{n}-{i}-{re.sub(r'[^A-Za-z0-9._-]', '_', source.name)}"
                shutil.copyfile(source, path)
                scripts.append(path)
            for path in scripts:
                path.chmod(0o700)
                task: dict[str, Any] = {
                    "name": f"shell {n}: {path.name}",
                    "ansible.builtin.script": {"cmd": str(path)},
                    "register": f"scaler_step{n}",
                    "failed_when": f"scaler_step{n}.rc not in {list(step.valid_exit_codes)}",
                }
                if step.environment:
                    task["environment"] = dict(step.environment)
                tasks.append(task)
        elif kind == "FileStep":
            if step.content is not None:
                tasks.append(
                    {
                        "name": f"file {n}: {step.destination}",
                        "ansible.builtin.copy": {"content": step.content, "dest": step.destination},
                    }
                )
            for source in step.sources:
                # Packer's rule, and Ansible's: a folder without a trailing slash is uploaded
                # as itself, with one its contents
                tasks.append(
                    {
                        "name": f"file {n}: {Path(source).name} -> {step.destination}",
                        "ansible.builtin.copy": {
                            "src": source,
                            "dest": step.destination,
                            "mode": "preserve",
                        },
                    }
                )
        else:
            raise ProvisionFailed(f"not a shell or file step: {kind}")
    path = folder / "steps.yml"
    _write_private(path, json.dumps([{"hosts": host, "gather_facts": False, "tasks": tasks}]))
    return path


def to_static_inventory(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a script-style inventory (`--list` JSON with `_meta`) into Ansible's YAML/JSON form."""
    if _is_static(inventory):
        copied: dict[str, Any] = json.loads(json.dumps(inventory))  # a deep copy we may edit
        return copied
    hostvars: Mapping[str, Any] = inventory.get("_meta", {}).get("hostvars", {})
    hosts: dict[str, dict[str, Any]] = {}
    children: dict[str, dict[str, Any]] = {}
    all_vars: dict[str, Any] = {}
    for name, group in inventory.items():
        if name == "_meta":
            continue
        spec = {"hosts": group} if isinstance(group, list) else dict(group)
        members = list(spec.get("hosts") or [])
        for member in members:
            hosts.setdefault(member, {})
        if name == "all":
            all_vars.update(spec.get("vars") or {})
            continue
        entry: dict[str, Any] = {}
        if members:
            entry["hosts"] = {member: {} for member in members}
        if spec.get("vars"):
            entry["vars"] = dict(spec["vars"])
        if spec.get("children"):
            entry["children"] = {child: {} for child in spec["children"]}
        if name == "ungrouped":
            entry.pop("children", None)
        children[name] = entry
    for name, values in hostvars.items():
        hosts.setdefault(name, {}).update(values)
    static: dict[str, Any] = {"all": {"hosts": hosts}}
    if all_vars:
        static["all"]["vars"] = all_vars
    if children:
        static["all"]["children"] = children
    return static


def render_user_data(
    authorized_key: str,
    user: str = "ansible",
    template: Path = CLOUD_CONFIG,
    text: str | None = None,
) -> str:
    """The build droplet's user data: config/cloud-config.yaml (or `text`, the template's
    inline user_data) with its placeholders filled."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise ScalerError(f"invalid Ansible user name {user!r}; use a lowercase Unix user name")
    key = authorized_key.strip()
    if not key or "\n" in key:
        raise ScalerError("the authorized key must be one public key line (ssh-ed25519 AAAA...)")
    if text is None:
        text = template.read_text()
    return text.replace("__SCALER_ANSIBLE_USER__", user).replace("__SCALER_AUTHORIZED_KEY__", key)


class _Events:
    """Collects the first task failure and reports one line per finished task."""

    _DONE: ClassVar[dict[str, str]] = {
        "runner_on_ok": "ok",
        "runner_on_failed": "failed",
        "runner_on_skipped": "skipped",
        "runner_on_unreachable": "unreachable",
    }

    def __init__(self, on_progress: Say | None, forget: Sequence[Path] = ()) -> None:
        self.on_progress = on_progress
        self.failure: TaskFailure | None = None
        self.pids: set[int] = set()
        self.forget = list(forget)

    def handle(self, event: Mapping[str, Any]) -> bool:
        if self.forget and event.get("event") == "playbook_on_start":
            # ansible-playbook read its -e files before the playbook started
            for path in self.forget:
                with contextlib.suppress(OSError):
                    path.unlink()
            self.forget = []
        pid = event.get("pid")
        if isinstance(pid, int) and pid > 0:
            self.pids.add(pid)
        kind = self._DONE.get(str(event.get("event", "")))
        if kind is None:
            return True
        data: Mapping[str, Any] = event.get("event_data") or {}
        task = str(data.get("task") or "?")
        host = str(data.get("host") or "?")
        res: Mapping[str, Any] = data.get("res") or {}
        ignored = bool(data.get("ignore_errors"))
        if kind == "ok" and res.get("changed"):
            kind = "changed"
        if kind in ("failed", "unreachable") and ignored:
            kind = "ignored"
        if kind in ("failed", "unreachable") and self.failure is None:
            self.failure = TaskFailure(task=task, host=host, message=_res_message(res))
        if self.on_progress is not None:
            took = data.get("duration")
            suffix = f" ({float(took):.1f}s)" if isinstance(took, int | float) else ""
            self.on_progress(f"{kind}: [{host}] {task}{suffix}")
        return True


class _Stop:
    """Why a run should stop: a caught SIGINT/SIGTERM or the caller's cancel callback."""

    def __init__(self, cancel: Callable[[], bool] | None) -> None:
        self.cancel = cancel
        self.signum: int | None = None

    def requested(self) -> bool:
        """ansible-runner's cancel callback (polled every _CANCEL_POLL seconds)."""
        return self.signum is not None or bool(self.cancel and self.cancel())

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """Within the block, SIGINT/SIGTERM only ask the runner to stop (main thread only).

        A KeyboardInterrupt raised inside ansible-runner's loop would leave ansible-playbook
        running in its own session; the runner kills it itself when the callback says so."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum: int, frame: Any) -> None:
            if self.signum is None:
                self.signum = signum

        # a signal the caller ignores stays ignored
        wanted = [
            s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN
        ]
        previous = {s: signal.signal(s, note) for s in wanted}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def reraise(self) -> None:
        """Deliver a caught signal again, now to the handler the caller had."""
        if self.signum is not None:
            signal.raise_signal(self.signum)


def _kill_processes_under(private: Path, control: Path, pids: set[int]) -> None:
    """SIGKILL every process group whose leader's command line names our private dirs."""
    own = os.getpgrp()
    groups: set[int] = set()
    # pids from events only without /proc: a finished run's pids may be reused by now
    found = _processes_naming((str(private), str(control)))
    for pid in pids if found is None else found:
        with contextlib.suppress(OSError):
            group = os.getpgid(pid)
            if group == own:
                os.kill(pid, signal.SIGKILL)
            else:
                groups.add(group)
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)


def _processes_naming(needles: tuple[str, ...]) -> set[int] | None:
    """Pids whose command line holds one of needles; None without /proc (not Linux)."""
    found: set[int] = set()
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").is_file():
        return None
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.add(int(entry.name))
    return found


def _is_static(inventory: Mapping[str, Any]) -> bool:
    all_group = inventory.get("all")
    if set(inventory) != {"all"} or not isinstance(all_group, Mapping):
        return False
    return isinstance(all_group.get("hosts", {}), Mapping) and isinstance(
        all_group.get("children", {}), Mapping
    )


def _set_hostvars(static: dict[str, Any], host: str, values: Mapping[str, Any]) -> None:
    found = _find_host(static["all"], host)
    if found is None:
        raise HostNotFound(host, sorted(_all_hosts(static["all"])))
    found.update(values)


def _find_host(group: dict[str, Any], host: str) -> dict[str, Any] | None:
    hosts = group.get("hosts") or {}
    if host in hosts:
        if hosts[host] is None:
            hosts[host] = {}
        entry: dict[str, Any] = hosts[host]
        return entry
    for child in (group.get("children") or {}).values():
        found = _find_host(child or {}, host)
        if found is not None:
            return found
    return None


def _all_hosts(group: Mapping[str, Any]) -> set[str]:
    names = set(group.get("hosts") or {})
    for child in (group.get("children") or {}).values():
        names |= _all_hosts(child or {})
    return names


def _is_secret_env(name: str) -> bool:
    # Ansible's own settings stay (ANSIBLE_VAULT_PASSWORD_FILE names a file, not a secret).
    return not name.startswith("ANSIBLE_") and _SECRET_ENV.search(name) is not None


def _ansible_bin_dir() -> str:
    # The venv's bin directory is often not on PATH (".venv/bin/scaler ..."): look beside
    # the running interpreter first.
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.parent)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise ProvisionFailed(
            "ansible-playbook not found beside this Python or on PATH; install ansible-core"
        )
    return str(Path(found).parent)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _stats(raw: Mapping[str, Mapping[str, int]] | None) -> dict[str, HostStats]:
    if not raw:
        return {}
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "skipped": "skipped",
        "dark": "unreachable",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    hosts = {h for counts in raw.values() if isinstance(counts, Mapping) for h in counts}
    return {
        host: HostStats(
            **{ours: int((raw.get(theirs) or {}).get(host, 0)) for theirs, ours in keys.items()}
        )
        for host in sorted(hosts)
    }


def _res_message(res: Mapping[str, Any]) -> str:
    msg = str(res.get("msg") or "")
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed"):
            msg = str(item.get("msg") or msg)
            res = item
            break
    stderr = str(res.get("stderr") or "").strip()
    if stderr and (not msg or msg.startswith("non-zero return code")):
        msg = f"{msg}: {stderr.splitlines()[-1]}" if msg else stderr.splitlines()[-1]
    return _one_line(msg or "no message from Ansible")


def _error_line(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("ERROR!", "[ERROR]")):
            return _one_line(line)
    return _one_line(lines[-1]) if lines else ""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 3] + "..."


def _failure_message(result: ProvisionResult, timeout: int | None) -> str:
    if result.status == "timeout":
        return (
            f"provisioning timed out after {timeout} s; raise the timeout or check the build host"
        )
    if result.status == "canceled":
        return "provisioning was canceled"
    if result.failure is not None:
        f = result.failure
        return f"provisioning failed at task {f.task!r} on {f.host}: {f.message}"
    detail = result.error or "no output"
    return f"ansible-playbook failed (rc {result.rc}): {detail}"
