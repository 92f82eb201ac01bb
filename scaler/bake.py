"""Bake a WordPress snapshot: build droplet, Ansible, snapshot, cleanup on every path.

Every resource goes on a cleanup stack the moment its id is known, and the stack is unwound
(last in, first out) on success, on any failure, on Ctrl-C and on SIGTERM. A snapshot is kept
only when the whole bake succeeded. A second Ctrl-C during cleanup stops it, and what is left is
printed with the commands that remove it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import hashlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal, ParamSpec, TypeVar

from scaler import cleanup as cleanup_mod
from scaler import manifest as manifest_mod
from scaler.cloud import (
    ActionErrored,
    Cloud,
    CloudError,
    Droplet,
    DropletSpec,
    NotFound,
    WaitTimeout,
)
from scaler.config import (
    AnsibleStep,
    BakeConfig,
    FileStep,
    ShellStep,
    Step,
    default_snapshot_name,
)
from scaler.errors import ScalerError
from scaler.events import Say
from scaler.hostkey import HostKey, new_host_key, with_host_key, write_known_hosts
from scaler.localtarget import LocalTarget, detect_local_target
from scaler.provision import (
    SshConnection,
    check_host_key,
    install_galaxy_roles,
    remove_host_keys,
    render_user_data,
    run_playbook,
    steps_playbook,
    to_static_inventory,
    wait_for_first_boot,
)

P = ParamSpec("P")
T = TypeVar("T")
OnError = Literal["cleanup", "abort", "ask"]
# What `--on-error ask` offers, as Packer does; ask(question, choices) returns one of them.
Ask = Callable[[str, tuple[str, ...]], str]


class BakeFailed(ScalerError):
    """A bake step failed; everything it created was removed (or is listed)."""


class BakeInterrupted(BakeFailed):
    """Ctrl-C or SIGTERM stopped the bake; `signum` says which."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same cleanup runs."""


@dataclass(frozen=True)
class BakeResult:
    """A finished bake."""

    id: int
    name: str
    regions: tuple[str, ...]
    build_time: int
    duration: float
    custom_data: Mapping[str, Any] = field(default_factory=dict)
    # seconds per named step (inputs, key, droplet, wait, provision, shutdown, snapshot, ...)
    step_times: Mapping[str, float] = field(default_factory=dict)

    @property
    def artifact_id(self) -> str:
        """Packer's artifact_id ("<regions>:<id>")."""
        return manifest_mod.artifact_id(self.regions, self.id)

    def to_json(self) -> dict[str, Any]:
        """What `scaler bake --json` prints."""
        return {
            "id": self.id,
            "name": self.name,
            "regions": list(self.regions),
            "artifact_id": self.artifact_id,
            "build_time": self.build_time,
            "duration": round(self.duration, 3),
            "custom_data": dict(self.custom_data),
        }


@dataclass(frozen=True)
class Leftover:
    """A resource the cleanup could not remove, with the command that removes it."""

    kind: str
    ident: str
    command: str
    error: str = ""


@dataclass
class _Entry:
    kind: str
    ident: str
    undo: Callable[[], object]
    command: str


class CleanupStack:
    """Resources to remove, newest first; run() removes them and returns what is left."""

    def __init__(self, on_progress: Say) -> None:
        self._entries: list[_Entry] = []
        self._say = on_progress

    def push(self, kind: str, ident: str, undo: Callable[[], object], command: str = "") -> None:
        """Record a resource the moment its id is known."""
        self._entries.append(_Entry(kind, ident, undo, command))

    def discard(self, kind: str) -> None:
        """Keep a resource after all (the finished snapshot)."""
        self._entries = [e for e in self._entries if e.kind != kind]

    def kinds(self) -> list[str]:
        """The resources still on the stack, as 'kind ident'."""
        return [f"{e.kind} {e.ident}" for e in self._entries]

    def leftovers(self) -> list[Leftover]:
        """The resources still on the stack with their removal commands, newest first."""
        return [Leftover(e.kind, e.ident, e.command) for e in reversed(self._entries)]

    def run(self) -> tuple[list[str], list[Leftover]]:
        """Remove everything; a Ctrl-C here stops and leaves the rest listed."""
        removed: list[str] = []
        leftovers: list[Leftover] = []
        while self._entries:
            entry = self._entries[-1]
            try:
                if entry.kind != "resources of run":
                    self._say(f"removing {entry.kind} {entry.ident}")
                found = entry.undo()
                # a sweep reports what it found (often nothing) instead of itself
                if isinstance(found, list):
                    removed.extend(str(f) for f in found)
                else:
                    removed.append(f"{entry.kind} {entry.ident}")
            except KeyboardInterrupt:
                leftovers += [Leftover(e.kind, e.ident, e.command) for e in reversed(self._entries)]
                self._entries.clear()
                break
            except Exception as err:  # one failed removal must not stop the others
                self._say(f"could not remove {entry.kind} {entry.ident}: {_one_line(err)}")
                leftovers.append(Leftover(entry.kind, entry.ident, entry.command, _one_line(err)))
            self._entries.pop()
        return removed, leftovers


def _role_files(folder: Path) -> list[Path]:
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".retry"
    ]


def provisioning_hash(playbook: Path, roles_path: Path, cloud_config: Path) -> str:
    """sha256 over the playbook, the user data, every file of roles_path and of every role the
    playbook resolves elsewhere (beside it, ANSIBLE_ROLES_PATH, ansible.cfg's roles_path)."""
    digest = hashlib.sha256()
    files: list[tuple[str, Path]] = [("playbook", playbook), ("cloud-config", cloud_config)]
    roles = Path(roles_path)
    if roles.is_dir():
        for path in _role_files(roles):
            files.append((f"roles/{path.relative_to(roles).as_posix()}", path))
    inside = roles.resolve()
    # Roles found outside roles_path add their files under their own name: a bake whose roles
    # all live in roles_path hashes as it always did.
    for name, folder in resolve_roles(playbook, roles):
        if folder.resolve().is_relative_to(inside):
            continue
        for path in _role_files(folder):
            files.append((f"role:{name}/{path.relative_to(folder).as_posix()}", path))
    for name, path in files:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def config_provisioning_hash(config: BakeConfig) -> str:
    """The provisioning hash of what a bake with `config` runs (a rebake compares it).

    A bake of the playbook alone hashes as it always did; provisioner steps and inline user
    data add their settings and the bytes of their scripts and files."""
    base = provisioning_hash(config.playbook, config.roles_path, config.user_data_file)
    plain = all(
        isinstance(s, AnsibleStep)
        and s.playbook is None
        and s.galaxy_file is None
        and all(re.fullmatch(r"-v+", a) for a in s.extra_arguments)
        for s in config.steps
    )
    # the playbook alone (the tutorial's template too: its -vvv changes nothing baked)
    if len(config.steps) <= 1 and plain and config.user_data is None and not config.extra_var_files:
        return base
    digest = hashlib.sha256(base.encode())
    # the role's var files (-e @FILE): the role's inputs
    for path in config.extra_var_files:
        data = path.read_bytes() if path.is_file() else b""
        digest.update(f"var-file\0{len(data)}\0".encode() + data)
    digest.update(f"user_data\0{config.user_data or ''}\0".encode())
    for step in config.steps:
        digest.update(repr(step).encode())
        paths: list[Path] = []
        if isinstance(step, ShellStep):
            paths = list(step.scripts)
        elif isinstance(step, FileStep):
            paths = [Path(s) for s in step.sources]
        elif step.playbook is not None:
            paths = [step.playbook]
        for path in paths:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                data = file.read_bytes() if file.is_file() else b""
                digest.update(f"{file}\0{len(data)}\0".encode())
                digest.update(data)
    return digest.hexdigest()


def public_key_line(private_key: Path) -> str:
    """The OpenSSH public key line of a private key file (an unencrypted one)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(Path(private_key).read_bytes(), password=None)
    except FileNotFoundError:
        raise ScalerError(f"no ssh_private_key_file at {private_key}; check the path") from None
    except (ValueError, TypeError) as err:
        raise ScalerError(
            f"ssh_private_key_file {private_key} is not an unencrypted OpenSSH private key "
            f"({_one_line(err)})"
        ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def ed25519_key_pair(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair: the private key in a 0600 file in folder, the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path = folder / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    return path, public.decode() + " scaler-bake"


def wait_for_ssh(host: str, port: int, timeout: float, poll: float = 0.5) -> None:
    """Until a TCP connect to host:port reads an SSH banner; WaitTimeout after timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)) as sock:
                sock.settimeout(min(5.0, timeout))
                banner = sock.recv(256)
                if banner.startswith(b"SSH-"):
                    return
                last = f"no SSH banner ({banner[:20]!r})"
        except OSError as err:
            last = err.strerror or type(err).__name__
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for SSH on {host}:{port} ({last})"
            )
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.01)))


def unique_name(base: str, taken: set[str]) -> str:
    """base, else base-2, base-3, ... (snapshot names are not unique on DigitalOcean)."""
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def bake_inventory(
    inventory: Mapping[str, Any] | None, host_alias: str, groups: tuple[str, ...]
) -> dict[str, Any]:
    """The Terraform-state inventory plus the build host in `groups` (static form)."""
    static = to_static_inventory(inventory or {"all": {"hosts": {}}})
    root = static.setdefault("all", {})
    root.setdefault("hosts", {})
    root["hosts"] = dict(root.get("hosts") or {})
    root["hosts"][host_alias] = {}
    children = root.setdefault("children", {})
    for group in groups:
        if group == "all":
            continue
        entry = children.get(group) or {}
        children[group] = entry
        entry["hosts"] = dict(entry.get("hosts") or {})
        entry["hosts"][host_alias] = {}
    return static


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


DB_PASSWORD_VAR = "welp_db_password"
DB_PASSWORD_ENV = "WELP_DB_PASSWORD"


def _role_names(plays: Any) -> set[str]:
    """The roles a play (or a role's meta dependencies) names: `roles:`, import/include_role."""
    roles: set[str] = set()
    stack: list[Any] = [plays]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "roles" and isinstance(value, list):
                    for role in value:
                        found = (
                            role.get("role") or role.get("name") if isinstance(role, dict) else role
                        )
                        if isinstance(found, str):
                            roles.add(found)
                elif str(key).rpartition(".")[2] in ("import_role", "include_role"):
                    if isinstance(value, dict) and isinstance(value.get("name"), str):
                        roles.add(value["name"])
                elif key == "dependencies" and isinstance(value, list):
                    for role in value:
                        found = (
                            role.get("role") or role.get("name") if isinstance(role, dict) else role
                        )
                        if isinstance(found, str):
                            roles.add(found)
                else:
                    stack.append(value)
    return roles


def _load_yaml(path: Path) -> Any:
    import yaml  # Ansible's own dependency

    try:
        return yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None


def resolve_roles(playbook: Path, roles_path: Path) -> list[tuple[str, Path]]:
    """Each role the playbook uses (with its meta dependencies) and the folder Ansible finds it
    in: the playbook's roles/, then ANSIBLE_ROLES_PATH (else ansible.cfg's roles_path, else
    Ansible's defaults), then roles_path, then the playbook's folder. Roles not found (or from
    a collection) are left out: Ansible says what is missing."""
    from scaler.provision import find_ansible_cfg, roles_search_path

    playbook = Path(playbook)
    here = playbook.resolve().parent
    try:
        searched = roles_search_path(find_ansible_cfg(playbook), [Path(roles_path)])
    except ScalerError:
        searched = [str(Path(roles_path).resolve())]
    folders = [here / "roles", *(Path(p) for p in searched), here]
    found: dict[str, Path] = {}
    todo = sorted(_role_names(_load_yaml(playbook)))
    while todo:
        role = todo.pop(0)
        if role in found:
            continue
        candidates = [here / role] if "/" in role else [base / role for base in folders]
        folder = next(
            (c for c in candidates if (c / "tasks").is_dir() or (c / "meta").is_dir()), None
        )
        if folder is None:
            continue
        found[role] = folder
        for meta in ("main.yml", "main.yaml"):
            if (folder / "meta" / meta).is_file():
                todo += sorted(_role_names(_load_yaml(folder / "meta" / meta)) - set(found))
    return sorted(found.items())


def role_uses(playbook: Path, roles_path: Path, name: str) -> bool:
    """True when the playbook or a role it resolves (see resolve_roles) mentions variable
    `name`: only then may scaler demand it."""
    import yaml  # Ansible's own dependency

    try:
        text = Path(playbook).read_text(errors="replace")
        yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return True  # cannot tell: Ansible will say what is wrong with the playbook
    if name in text:
        return True
    for _, folder in resolve_roles(playbook, roles_path):
        for path in folder.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and name in path.read_text(errors="replace"):
                    return True
    return False


def _has_ansible_vars(playbook: Path) -> bool:
    """True when group_vars/ or host_vars/ beside the playbook may hold the role's variables."""
    folder = Path(playbook).resolve().parent
    return (folder / "group_vars").is_dir() or (folder / "host_vars").is_dir()


def _curl(cloud: Cloud, path: str) -> str:
    # $DIGITALOCEAN_TOKEN stays a variable: the command never holds the token itself
    return (
        f'curl -fsS -X DELETE -H "Authorization: Bearer $DIGITALOCEAN_TOKEN" {cloud.endpoint}{path}'
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text


@dataclass(frozen=True)
class _Inputs:
    """What the bake found before it made anything."""

    steps: tuple[Step, ...]
    extravars: Mapping[str, Any]
    prov_sha: str
    run_id: str
    base_image_id: int


@dataclass(frozen=True)
class _KeyPair:
    """The run's work folder (its run record in it) and the SSH key the droplet gets."""

    folder: Path
    record: cleanup_mod.RunRecord
    private_key: Path
    public_key: str
    ids: tuple[int | str, ...]


@dataclass(frozen=True)
class _Host:
    """The build droplet, active and reachable over SSH with the host key it was given."""

    droplet: Droplet
    connection: SshConnection
    host_key: HostKey


@dataclass(frozen=True)
class _Snapshot:
    """The finished snapshot in the droplet's region, and the run record naming it."""

    id: int
    name: str
    region: str
    record: cleanup_mod.RunRecord


class _Bake:
    """One bake's run; state lives here so the cleanup stack sees every id."""

    def __init__(
        self,
        config: BakeConfig,
        cloud: Cloud,
        inventory: Mapping[str, Any] | None,
        on_progress: Say,
        on_error: OnError = "cleanup",
        ask: Ask | None = None,
    ) -> None:
        self.config = config
        self.on_error = on_error
        self.ask = ask
        # the answer to a failure, once given (abort keeps what was made)
        self.decision: str | None = None
        self.ssh_hint = ""
        self.cloud = cloud
        self.inventory = inventory
        # the built-in local cloud, detected once; None on DigitalOcean
        self.local: LocalTarget | None = detect_local_target(cloud.endpoint)
        self.say = on_progress
        self.stack = CleanupStack(on_progress)
        # ids the stack holds (removed or listed): the sweep by run id leaves them alone
        self.known: set[int] = set()
        self.doing = "starting"
        # seconds each named step took (see run)
        self.times: dict[str, float] = {}
        self.started_wall = time.time()
        self.started = time.monotonic()

    def run(self) -> BakeResult:
        """The bake, step by step (each timed, its resources on the stack as they appear)."""
        inputs = self._step("inputs", self._check_inputs)
        key = self._step("key", self._make_key, inputs)
        droplet, host_key = self._step("droplet", self._create_droplet, inputs, key)
        host = self._step("wait", self._wait_for_host, inputs, key, droplet.id, host_key)
        self._step("provision", self._provision, inputs, key, host)
        self._step("shutdown", self._shut_down, droplet.id)
        snapshot = self._step("snapshot", self._snapshot, inputs, key, host)
        regions = self._step("transfer", self._transfer_all, snapshot, host)
        return self._step("record", self._record, inputs, key, snapshot, regions)

    # -- the step helper

    def _step(self, name: str, do: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one named step, timed into self.times (also when it fails)."""
        started = time.monotonic()
        try:
            return do(*args, **kwargs)
        finally:
            self.times[name] = round(time.monotonic() - started, 3)

    def _doing(self, what: str, say: str | bool = False) -> None:
        """What the bake does now (a failure says "while <what>"); say it, or `say` instead."""
        self.doing = what
        if say:
            self.say(what if say is True else say)

    def _made(
        self,
        kind: str,
        ident: str,
        undo: Callable[[], object],
        command: str = "",
        *,
        cloud_id: int | None = None,
    ) -> None:
        """A resource now exists: on the stack, removed unless the bake keeps it; `cloud_id`
        marks it as the stack's (the sweep by run id leaves it alone)."""
        if cloud_id is not None:
            self.known.add(cloud_id)
        self.stack.push(kind, ident, undo, command)

    # -- the steps

    def _check_inputs(self) -> _Inputs:
        c = self.config
        manifest_mod.read_manifest(c.manifest)  # a broken manifest fails before anything exists
        self._doing("checking the inputs")
        steps: tuple[Step, ...] = c.steps or (AnsibleStep(),)
        has_ansible = any(isinstance(s, AnsibleStep) for s in steps)
        checks: list[tuple[str, Path, str]] = []
        if has_ansible:
            checks.append(("playbook", c.playbook, "pass --playbook PATH"))
        if c.user_data is None:
            checks.append(("user data file", c.user_data_file, "pass --user-data-file PATH"))
        checks += _step_inputs(steps)
        for what, path, fix in checks:
            if not Path(path).exists():
                raise ScalerError(f"the {what} {path} does not exist; {fix}")
        if self.local is not None:
            # provisioning needs a droplet that is a host of its own, never this machine
            self.local.require_real_droplets("a bake")
            if c.ssh_port == 22:
                c = self.config = replace(c, ssh_port=self.local.ssh_port)
            note = self.local.image_note(c.image)
            if note:
                self.say(note)
        extravars = self._role_vars() if has_ansible else {}
        prov_sha = config_provisioning_hash(c)
        run_id = uuid.uuid4().hex[:8]
        # The id behind the slug now, before the droplet is built from it: a rebake compares it
        # with the id behind the slug later to tell that the base image changed.
        self._doing(f"looking up the base image {c.image}")
        base_image_id = self.cloud.get_image(c.image).id
        return _Inputs(steps, extravars, prov_sha, run_id, base_image_id)

    def _make_key(self, inputs: _Inputs) -> _KeyPair:
        c, cloud, run_id = self.config, self.cloud, inputs.run_id
        self._doing("creating the temporary SSH key")
        folder = Path(tempfile.mkdtemp(prefix=f"scaler-bake-{run_id}-"))
        self._made(
            "temporary key file",
            str(folder),
            lambda: shutil.rmtree(folder, ignore_errors=True),
            f"rm -r {folder}",
        )
        # After a kill -9 this record tells `scaler cleanup` which run died and what it made.
        record = cleanup_mod.new_run_record(run_id, c.manifest)
        cleanup_mod.write_run_record(folder, record)
        # Last to run: whatever a lost answer or a late create left under this run's id.
        self._made(
            "resources of run",
            run_id,
            lambda: self._sweep(run_id),
            f"scaler cleanup --yes  # removes what run {run_id} left",
        )
        if c.ssh_key_id and c.ssh_private_key_file:
            # the template's own key: used, never removed (Packer's ssh_key_id)
            private_key = c.ssh_private_key_file
            public_key = public_key_line(private_key)
            key_id = int(c.ssh_key_id) if c.ssh_key_id.isdigit() else c.ssh_key_id
            self.say(f"using SSH key {c.ssh_key_id} (ssh_key_id) with {private_key}")
            return _KeyPair(folder, record, private_key, public_key, (key_id,))
        private_key, public_key = ed25519_key_pair(folder)
        key = cloud.create_key(cleanup_mod.key_name(run_id), public_key)
        self._made(
            "ssh key",
            str(key.id),
            lambda: cloud.delete_key(key.id),
            _curl(cloud, f"account/keys/{key.id}"),
            cloud_id=key.id,
        )
        self.say(f"registered temporary SSH key {key.id}")
        return _KeyPair(folder, record, private_key, public_key, (key.id,))

    def _create_droplet(self, inputs: _Inputs, key: _KeyPair) -> tuple[Droplet, HostKey]:
        c, cloud = self.config, self.cloud
        self._doing("creating the build droplet")
        user = c.ssh_username if c.ssh_username != "root" else "ansible"
        user_data = "#cloud-config\n"  # a template that sends none still gets the host key
        if c.user_data != "":  # "" is a template that sends none
            user_data = render_user_data(
                key.public_key, user=user, template=c.user_data_file, text=c.user_data
            )
        # the droplet's identity, known before it exists (a bad user data fails here, before
        # the droplet is created)
        host_key = new_host_key()
        user_data = with_host_key(user_data, host_key, str(c.user_data_file))
        tag = cleanup_mod.run_tag(inputs.run_id)
        spec = DropletSpec(
            name=c.droplet_name or f"scaler-bake-{inputs.run_id}",
            region=c.region,
            size=c.size,
            image=int(c.image) if c.image.isdigit() else c.image,
            ssh_keys=key.ids,
            private_networking=c.private_networking,
            monitoring=c.monitoring,
            ipv6=c.ipv6,
            droplet_agent=c.droplet_agent,
            vpc_uuid=c.vpc_uuid,
            tags=tuple(dict.fromkeys((*c.tags, cleanup_mod.BAKE_TAG, tag))),
            user_data=user_data,
        )
        droplet = cloud.create_droplet(spec, run_tag=tag)
        droplet_id = droplet.id
        self._made(
            "droplet",
            str(droplet_id),
            lambda: cloud.delete_droplet(droplet_id),
            _curl(cloud, f"droplets/{droplet_id}"),
            cloud_id=droplet_id,
        )
        self.say(f"created build droplet {droplet_id} ({c.image}, {c.region}, {c.size})")
        return droplet, host_key

    def _wait_for_host(
        self, inputs: _Inputs, key: _KeyPair, droplet_id: int, host_key: HostKey
    ) -> _Host:
        c = self.config
        self._doing(f"waiting for droplet {droplet_id} to become active", say=True)
        droplet = self.cloud.wait_for_droplet_active(droplet_id, c.timeouts.active)
        if c.connect_with_private_ip:
            address = droplet.private_ip
            if address is None:
                raise BakeFailed(
                    f"droplet {droplet_id} has no private address (connect_with_private_ip); "
                    "turn on private_networking or set a vpc_uuid"
                )
        else:
            address = droplet.public_ip or droplet.private_ip
        if address is None:
            raise BakeFailed(f"droplet {droplet_id} is active but has no IPv4 address")
        self.say(f"droplet {droplet_id} is active at {address}")

        self._doing(f"waiting for SSH on {address}:{c.ssh_port}", say=True)
        wait_for_ssh(address, c.ssh_port, c.timeouts.ssh)
        connection = SshConnection(
            host=address,
            user=c.ssh_username,
            private_key_file=key.private_key,
            port=c.ssh_port,
            known_hosts=write_known_hosts(key.folder, address, c.ssh_port, host_key),
        )
        # before anything runs there: the host at that address is the droplet scaler created
        self._doing(f"checking the SSH host key of droplet {droplet_id}")
        # cloud-init writes the key during first boot; a busy machine may take a while
        check_host_key(connection, host_key.key_text, f"droplet {droplet_id}", wait=c.timeouts.ssh)
        self.say(f"droplet {droplet_id} presents the host key scaler gave it")
        self._doing(f"waiting for cloud-init's first boot on droplet {droplet_id}", say=True)
        booted = wait_for_first_boot(connection, c.timeouts.ssh)
        if booted:
            self.say(f"cloud-init on droplet {droplet_id}: {booted}")
        self.ssh_hint = (
            f"ssh -i {key.private_key} -p {c.ssh_port} -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null {c.ssh_username}@{address}"
        )
        return _Host(droplet, connection, host_key)

    def _provision(self, inputs: _Inputs, key: _KeyPair, host: _Host) -> None:
        steps, droplet_id = inputs.steps, host.droplet.id
        for n, step in enumerate(steps, 1):
            while True:
                try:
                    self._run_step(
                        n,
                        len(steps),
                        step,
                        droplet_id,
                        host.connection,
                        inputs.extravars,
                        key.folder,
                    )
                    break
                except ScalerError as err:
                    if self._decide(err, retry=True) != "retry":
                        raise
                    self.say(f"retrying provisioner {n}")
        # the snapshot must not keep a host key this machine knows (cloud-init on the new
        # droplets makes their own)
        why = remove_host_keys(host.connection, host.host_key.key_text)
        if why:
            self.say(f"the build host key stays in the snapshot ({why}); cloud-init replaces it")

    def _snapshot(self, inputs: _Inputs, key: _KeyPair, host: _Host) -> _Snapshot:
        c, cloud, droplet_id = self.config, self.cloud, host.droplet.id
        self._doing("taking the snapshot")
        base = c.snapshot_name or default_snapshot_name(c.project, self.started_wall)
        name = unique_name(base, {i.name for i in cloud.snapshot_images()})
        record = replace(key.record, snapshot_name=name)
        cleanup_mod.write_run_record(key.folder, record)
        action = cloud.droplet_action(droplet_id, "snapshot", name=name)
        # the image id is unknown until the action ends: undo finds it by name then
        self._made(
            "snapshot",
            f"{name!r} (of droplet {droplet_id})",
            lambda: self._remove_pending_snapshot(droplet_id, name, action.id),
            f'curl -fsS -H "Authorization: Bearer $DIGITALOCEAN_TOKEN" '
            f"{cloud.endpoint}droplets/{droplet_id}/snapshots  # then DELETE images/<id>",
        )
        self._doing(
            f"waiting for snapshot {name}", say=f"waiting for snapshot {name} (action {action.id})"
        )
        cloud.wait_for_action(action.id, c.timeouts.snapshot, f"snapshot {name}")
        image = self._find_snapshot(droplet_id, name)
        self.stack.discard("snapshot")
        self._made(
            "snapshot",
            str(image.id),
            lambda: cloud.delete_image(image.id),
            _curl(cloud, f"images/{image.id}"),
        )
        region = host.droplet.region or c.region
        self.say(f"snapshot {image.id} ({name}) is ready in {region}")
        for tag in c.snapshot_tags:
            self._doing(f"tagging snapshot {image.id} with {tag}")
            cloud.tag_image(image.id, tag)
        if c.snapshot_tags:
            self.say(f"tagged snapshot {image.id}: {', '.join(c.snapshot_tags)}")
        # What a rebake compares, on the snapshot itself too (the manifest may be lost).
        cloud.describe_image(
            image.id,
            name,
            f"scaler bake: provisioning_sha256={inputs.prov_sha} base_image={c.image} "
            f"base_image_id={inputs.base_image_id}",
        )
        return _Snapshot(image.id, name, region, record)

    def _transfer_all(self, snapshot: _Snapshot, host: _Host) -> tuple[str, ...]:
        """Copy the snapshot to the other snapshot_regions; every region it is in."""
        regions = [r for r in dict.fromkeys(self.config.snapshot_regions) if r != snapshot.region]
        if regions:
            self._doing(f"transferring snapshot {snapshot.id} to {', '.join(regions)}", say=True)
            self._transfer(snapshot.id, regions)
        return (*regions, snapshot.region)

    def _record(
        self, inputs: _Inputs, key: _KeyPair, snapshot: _Snapshot, regions: tuple[str, ...]
    ) -> BakeResult:
        c = self.config
        custom: dict[str, Any] = {
            "snapshot_name": snapshot.name,
            "base_image": c.image,
            "base_image_id": str(inputs.base_image_id),
            "region": c.region,
            "size": c.size,
            "provisioning_sha256": inputs.prov_sha,
        }
        custom = {**c.manifest_custom_data, **custom}
        build_time = int(time.time())
        self._doing(f"writing {c.manifest}")
        manifest_mod.append_build(
            c.manifest,
            regions=regions,
            image_id=snapshot.id,
            build_time=build_time,
            custom_data=custom,
            name=c.build_name,
            strip_time=c.manifest_strip_time,
        )
        cleanup_mod.write_run_record(key.folder, replace(snapshot.record, finished=True))
        self.stack.discard("snapshot")
        return BakeResult(
            id=snapshot.id,
            name=snapshot.name,
            regions=regions,
            build_time=build_time,
            duration=time.monotonic() - self.started,
            custom_data=custom,
            step_times=dict(self.times),
        )

    def _run_step(
        self,
        n: int,
        total: int,
        step: Step,
        droplet_id: int,
        connection: SshConnection,
        extravars: Mapping[str, Any],
        folder: Path,
    ) -> None:
        c = self.config
        if step.pause_before > 0:
            self.say(f"pausing {step.pause_before:g}s before provisioner {n}")
            time.sleep(step.pause_before)
        inventory = bake_inventory(self.inventory, c.host_alias, c.groups)
        progress = lambda line: self.say(f"ansible {line}")  # noqa: E731
        if isinstance(step, AnsibleStep):
            playbook = step.playbook or c.playbook
            roles: list[Path] = []
            if step.galaxy_file is not None:
                into = step.galaxy_roles_path or folder / "galaxy-roles"
                self._doing(f"installing roles from {step.galaxy_file}", say=True)
                install_galaxy_roles(step.galaxy_file, into)
                roles.append(into)
            self._doing(f"provisioning droplet {droplet_id} with {playbook.name}", say=True)
            result = run_playbook(
                inventory,
                playbook=playbook,
                host=c.host_alias,
                connection=connection,
                extravars=extravars,
                roles_path=c.roles_path,
                on_progress=progress,
                timeout=int(c.timeouts.provision),
                extra_var_files=c.extra_var_files,
                vault_password_files=c.vault_password_files,
                env=dict(step.env),
                extra_args=step.extra_arguments,
                extra_roles=roles,
                inventory_vars_dir=step.inventory_directory,
            )
            self.say(f"provisioned in {result.duration:.1f}s ({result.changed} changed)")
            return
        kind = "shell" if isinstance(step, ShellStep) else "file"
        self._doing(f"running provisioner {n}/{total} ({kind}) on droplet {droplet_id}", say=True)
        work = Path(tempfile.mkdtemp(prefix=f"step-{n}-", dir=folder))  # one per attempt
        result = run_playbook(
            inventory,
            playbook=steps_playbook([step], work, c.host_alias, first=n),
            host=c.host_alias,
            connection=connection,
            roles_path=c.roles_path,
            on_progress=progress,
            timeout=int(c.timeouts.provision),
        )
        self.say(f"provisioner {n} ({kind}) done in {result.duration:.1f}s")

    def _decide(self, err: BaseException, *, retry: bool) -> str:
        """cleanup, abort or retry: --on-error's answer to a failure (asked once for ask)."""
        if self.decision is not None:
            return self.decision
        if self.on_error != "ask" or self.ask is None:
            self.decision = "abort" if self.on_error == "abort" else "cleanup"
            return self.decision
        choices = ("cleanup", "abort", "retry") if retry else ("cleanup", "abort")
        answer = self.ask(f"bake failed while {self.doing}: {_one_line(err)}", choices)
        if answer != "retry":
            self.decision = answer if answer in ("cleanup", "abort") else "cleanup"
        return answer

    def keep(self) -> str:
        """--on-error abort: print what is kept and how to reach and remove it."""
        # the sweep by run id is an undo step, not a resource: it is what the commands below do
        kept = [k for k in reversed(self.stack.kinds()) if not k.startswith("resources of run ")]
        self.say("kept for debugging (--on-error abort):")
        for kind in kept:
            self.say(f"  {kind}")
        if self.ssh_hint:
            self.say(f"  ssh in: {self.ssh_hint}")
        self.say("  remove them:")
        for left in self.stack.leftovers():
            if left.command and left.kind != "resources of run":
                self.say(f"    {left.command}")
        shown = [k for k in kept if not k.startswith("temporary key file")]
        return f"kept {', '.join(shown) or 'nothing'} for debugging (--on-error abort; see above)"

    def _role_vars(self) -> dict[str, Any]:
        """The extra vars, with what the local cloud lacks filled in; a missing DB password
        fails here, before anything is created (on a real cloud), when the role uses one."""
        c = self.config
        extravars: dict[str, Any] = dict(c.extra_vars)
        source = self.local.wordpress_source(extravars) if self.local is not None else {}
        for name, package in source.items():
            extravars[name] = package
            self.say(f"local cloud: WordPress from Debian's {package} package ({name})")
        from_env = os.environ.get(DB_PASSWORD_ENV, "")
        if from_env and not str(extravars.get(DB_PASSWORD_VAR) or ""):
            # the documented way: the environment, so the password is in no argv and no file
            # of ours but the 0600 extravars that ansible-playbook reads and we then delete
            extravars[DB_PASSWORD_VAR] = from_env
        if str(extravars.get(DB_PASSWORD_VAR) or ""):
            return extravars
        if c.extra_var_files or c.vault_password_files or _has_ansible_vars(c.playbook):
            return extravars  # it may come from there; the role says so if not
        if not role_uses(c.playbook, c.roles_path, DB_PASSWORD_VAR):
            return extravars  # the user's own role: scaler demands nothing of it
        if self.local is not None:
            extravars[DB_PASSWORD_VAR] = self.local.stand_in_password()
            self.say(
                f"local cloud: no {DB_PASSWORD_VAR} given; a random one goes into the "
                "snapshot's wp-config.php"
            )
            return extravars
        raise BakeFailed(
            f"no {DB_PASSWORD_VAR} for wp-config.php; set {DB_PASSWORD_ENV} in the environment "
            f"(or pass -e @vars.yml, --vault-password-file, or [bake.extra_vars] in scaler.toml)"
        )

    def _sweep(self, run_id: str) -> list[str]:
        """Remove droplets and keys of this run that the stack does not know (lost answers)."""
        cloud = self.cloud
        removed = []
        for droplet in cloud.droplets(tag=cleanup_mod.run_tag(run_id)):
            if droplet.id in self.known:
                continue  # the stack removed it, or lists it as left
            self.say(f"removing droplet {droplet.id} of run {run_id} (its create lost its answer)")
            cloud.delete_droplet(droplet.id)
            removed.append(f"droplet {droplet.id}")
        for key in cloud.ssh_keys():
            if key.name == cleanup_mod.key_name(run_id) and key.id not in self.known:
                self.say(f"removing ssh key {key.id} of run {run_id} (its create lost its answer)")
                cloud.delete_key(key.id)
                removed.append(f"ssh key {key.id}")
        return removed

    def _shut_down(self, droplet_id: int) -> None:
        c, cloud = self.config, self.cloud
        self._doing(f"shutting down droplet {droplet_id}", say=True)
        try:
            action = cloud.droplet_action(droplet_id, "shutdown")
            cloud.wait_for_action(action.id, c.timeouts.shutdown, f"shutdown of {droplet_id}")
            return
        except (WaitTimeout, ActionErrored) as err:
            self.say(f"graceful shutdown did not finish ({_one_line(err)}); powering off")
        # the hung shutdown may still be pending: the API answers 422 "pending event" until it
        # ends, which request() retries; power-off then gets the state timeout, as in Packer
        action = cloud.droplet_action(droplet_id, "power_off")
        cloud.wait_for_action(action.id, c.timeouts.active, f"power-off of {droplet_id}")

    def _find_snapshot(self, droplet_id: int, name: str) -> Any:
        found = [i for i in self.cloud.droplet_snapshots(droplet_id) if i.name == name]
        if not found:
            raise BakeFailed(
                f"snapshot {name} finished but droplet {droplet_id} lists no such snapshot"
            )
        return found[-1]

    def _remove_pending_snapshot(self, droplet_id: int, name: str, action_id: int) -> None:
        cloud = self.cloud
        # wait (bounded) for a running snapshot action, so its image does not appear after us
        with contextlib.suppress(CloudError):
            cloud.wait_for_action(action_id, min(self.config.timeouts.snapshot, 120.0), "snapshot")
        try:
            images = cloud.droplet_snapshots(droplet_id)
        except NotFound:
            return
        for image in images:
            if image.name == name:
                cloud.delete_image(image.id)

    def _transfer(self, image_id: int, regions: list[str]) -> None:
        cloud, timeout = self.cloud, self.config.timeouts.transfer

        def one(region: str) -> None:
            action = cloud.transfer_image(image_id, region)
            if action is None:
                self.say(f"snapshot {image_id} is in {region} already")
                return
            # parallel waits share one poll budget
            cloud.wait_for_action(
                action.id, timeout, f"transfer of {image_id} to {region}", share=len(regions)
            )
            self.say(f"snapshot {image_id} is in {region}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(regions), 8)) as pool:
            futures = [pool.submit(one, r) for r in regions]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                cloud.cancel()
                raise


def bake_image(
    config: BakeConfig,
    cloud: Cloud,
    *,
    inventory: Mapping[str, Any] | None = None,
    on_progress: Say | None = None,
    on_error: OnError = "cleanup",
    ask: Ask | None = None,
) -> BakeResult:
    """Bake a snapshot as `config` says; every resource made is removed unless it succeeds
    (or, on a failure, `on_error` is abort, or ask() answers abort: then they are kept).

    On the built-in local cloud the build droplet must be a real one (a Linux host of its own),
    which the play reaches over SSH as on DigitalOcean; directory droplets are refused.
    """
    say = on_progress or (lambda _message: None)
    bake = _Bake(
        config,
        cloud,
        copy.deepcopy(dict(inventory)) if inventory else None,
        say,
        on_error,
        ask,
    )
    with sigterm_as_interrupt():
        try:
            return _finish(bake, bake.run())
        except KeyboardInterrupt as err:
            signum = signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT
            removed, leftovers = _unwind(bake)
            raise BakeInterrupted(
                f"bake interrupted ({signum.name}) while {bake.doing}; "
                + _summary(removed, leftovers),
                signum,
            ) from None
        except CleanupFailed:
            raise
        except ScalerError as err:
            if bake.stack.kinds() and bake._decide(err, retry=False) == "abort":
                raise BakeFailed(
                    f"bake failed while {bake.doing}: {_one_line(err)}; {bake.keep()}"
                ) from err
            removed, leftovers = _unwind(bake)
            raise BakeFailed(
                f"bake failed while {bake.doing}: {_one_line(err)}; " + _summary(removed, leftovers)
            ) from err
        except BaseException:
            _unwind(bake)
            raise


class CleanupFailed(BakeFailed):
    """The snapshot is baked, but removing the build resources failed."""


def _finish(bake: _Bake, result: BakeResult) -> BakeResult:
    bake.doing = "removing the build droplet and key"
    removed, leftovers = _unwind(bake)
    if leftovers:
        why = "; ".join(f"{lo.kind} {lo.ident}: {lo.error}" for lo in leftovers if lo.error)
        raise CleanupFailed(
            f"snapshot {result.id} ({result.name}) is baked and in the manifest, but removing "
            f"the build resources failed ({why or 'interrupted'}); " + _summary(removed, leftovers)
        )
    return result


def _unwind(bake: _Bake) -> tuple[list[str], list[Leftover]]:
    bake.cloud.reset_cancel()
    removed, leftovers = bake.stack.run()
    if leftovers:
        bake.say("NOT removed (remove them yourself):")
        for left in leftovers:
            bake.say(f"  {left.kind} {left.ident}" + (f": {left.command}" if left.command else ""))
    return removed, leftovers


def _summary(removed: list[str], leftovers: list[Leftover]) -> str:
    shown = [r for r in removed if not r.startswith("temporary key file")]
    parts = [f"removed {', '.join(shown)}" if shown else "nothing to remove"]
    quiet = ("temporary key file", "resources of run")
    left = [f"{lo.kind} {lo.ident}" for lo in leftovers if lo.kind not in quiet]
    if left:
        parts = [f"LEFT BEHIND {', '.join(left)} (commands above)", *parts]
    return "; ".join(parts)


def _step_inputs(steps: tuple[Step, ...]) -> list[tuple[str, Path, str]]:
    """The local files the provisioner steps read, to check before anything is created."""
    out: list[tuple[str, Path, str]] = []
    for n, step in enumerate(steps, 1):
        fix = f"fix provisioner {n} in the template"
        if isinstance(step, ShellStep):
            out += [("script", path, fix) for path in step.scripts]
        elif isinstance(step, FileStep):
            if not step.generated:
                out += [("file source", Path(src), fix) for src in step.sources]
        else:
            if step.playbook is not None:
                out.append(("playbook", step.playbook, fix))
            if step.galaxy_file is not None:
                out.append(("galaxy_file", step.galaxy_file, fix))
    return out


def describe_bake(config: BakeConfig, secrets: tuple[str, ...] = ()) -> list[str]:
    """What a bake with `config` would create and run, one line each (`bake --dry-run`).

    Values of sensitive variables are shown as <sensitive>; the token is never in a config."""
    c = config

    def hide(text: str) -> str:
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "<sensitive>")
        return text

    name = c.snapshot_name or default_snapshot_name(c.project, time.time())
    regions = ", ".join(dict.fromkeys((c.region, *c.snapshot_regions)))
    features = [
        label
        for label, on in (
            ("private networking", c.private_networking),
            ("monitoring", c.monitoring),
            ("ipv6", c.ipv6),
            ("droplet agent", bool(c.droplet_agent)),
        )
        if on
    ]
    if c.droplet_agent is False:
        features.append("no droplet agent")
    user_data = {None: str(c.user_data_file), "": "none"}.get(c.user_data, "inline user_data")
    lines = ["would create:"]
    if c.ssh_key_id:
        lines.append(f"  ssh key   none: uses key {c.ssh_key_id} with {c.ssh_private_key_file}")
    else:
        lines.append("  ssh key   a temporary ed25519 key (removed afterwards)")
    droplet = (
        f"  droplet   {c.droplet_name or 'scaler-bake-<run id>'}: {c.image} in {c.region}, "
        f"{c.size}, tags {', '.join(c.tags) or 'none'}, user data {user_data}"
    )
    lines.append(hide(droplet + (f", {', '.join(features)}" if features else "")))
    via = "private" if c.connect_with_private_ip else "public"
    lines.append(f"  connect   ssh to its {via} address, port {c.ssh_port}, as {c.ssh_username}")
    tags = f", tags {', '.join(c.snapshot_tags)}" if c.snapshot_tags else ""
    lines.append(hide(f"  snapshot  {name} in {regions}{tags}"))
    lines.append("would run on the build droplet, in order:")
    steps: tuple[Step, ...] = c.steps or (AnsibleStep(),)
    lines += [hide(_describe_step(n, step, c)) for n, step in enumerate(steps, 1)]
    lines.append("then: shut down, snapshot, remove the droplet and the temporary key")
    extras = []
    if c.manifest_custom_data:
        extras.append(
            "custom_data " + ", ".join(f"{k}={v}" for k, v in c.manifest_custom_data.items())
        )
    if c.manifest_strip_time:
        extras.append("strip_time")
    lines.append(
        hide(f"manifest: append build {c.build_name!r} to {c.manifest}")
        + (f" ({'; '.join(extras)})" if extras else "")
    )
    return lines


def _describe_step(n: int, step: Step, c: BakeConfig) -> str:
    """One provisioner step as `bake --dry-run` lists it."""
    pause = f" (after a {step.pause_before:g}s pause)" if step.pause_before else ""
    if isinstance(step, ShellStep):
        env = " ".join(f"{k}={v}" for k, v in step.environment)
        what = (
            f"inline ({len(step.inline)} line{'s' if len(step.inline) != 1 else ''}, "
            f"{step.shebang}): " + "; ".join(step.inline)
            if step.inline
            else "scripts " + ", ".join(str(p) for p in step.scripts)
        )
        codes = (
            f"; exit codes {', '.join(map(str, step.valid_exit_codes))}"
            if step.valid_exit_codes != (0,)
            else ""
        )
        return f"  {n}. shell{pause}: {what}" + (f"; env {env}" if env else "") + codes
    if isinstance(step, FileStep):
        sources = ", ".join(step.sources) if step.sources else "inline content"
        return f"  {n}. file{pause}: {sources} -> {step.destination}"
    parts = [
        f"  {n}. ansible{pause}: {step.playbook or c.playbook} as {c.host_alias} in "
        f"groups {', '.join(c.groups)}"
    ]
    if step.extra_arguments:
        parts.append(f"extra arguments {' '.join(step.extra_arguments)}")
    if step.env:
        parts.append("env " + " ".join(f"{k}={v}" for k, v in step.env))
    if step.galaxy_file:
        parts.append(f"roles from {step.galaxy_file} first")
    if step.inventory_directory:
        parts.append(f"group_vars/host_vars from {step.inventory_directory}")
    return "; ".join(parts)
