"""The bake's settings: scaler.toml's [bake] table, the tutorial's Packer files, CLI overrides.

Precedence, lowest first: built-in defaults, the config file, the Packer template (with its var
file and --var values), then command-line options. The Packer template is read as it is: the
digitalocean builder's fields, the ansible provisioner's playbook_file, the manifest
post-processor's output, and the interpolations `{{user `x`}}`, `{{env `X`}}` (in the variables
section), `{{timestamp}}`, `{{isotime}}`, `{{isotime "<Go layout>"}}`, `{{uuid}}` and
`{{template_dir}}`.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.fsutil import read_text, strict_json
from scaler.packer_hcl import TemplateError, is_hcl_template, read_hcl_build

CONFIG_FILE = "scaler.toml"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ScalerError):
    """The config file or Packer template cannot be used."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds each wait may take."""

    active: float = 600.0
    ssh: float = 300.0
    shutdown: float = 120.0
    snapshot: float = 3600.0
    transfer: float = 3600.0
    provision: float = 3600.0


@dataclass(frozen=True)
class ShellStep:
    """A `shell` provisioner: inline commands (one script with a shebang) or script files."""

    inline: tuple[str, ...] = ()
    scripts: tuple[Path, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    shebang: str = "/bin/sh -e"
    valid_exit_codes: tuple[int, ...] = (0,)
    pause_before: float = 0.0


@dataclass(frozen=True)
class FileStep:
    """A `file` provisioner: upload files or folders (or literal content) to the build host."""

    sources: tuple[str, ...] = ()  # paths; a trailing "/" means the folder's contents
    destination: str = ""
    content: str | None = None
    generated: bool = False
    pause_before: float = 0.0


@dataclass(frozen=True)
class AnsibleStep:
    """An `ansible` provisioner; playbook None is the bake's playbook (BakeConfig.playbook)."""

    playbook: Path | None = None
    extra_arguments: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    galaxy_file: Path | None = None
    galaxy_roles_path: Path | None = None
    inventory_directory: Path | None = None
    pause_before: float = 0.0


Step = ShellStep | FileStep | AnsibleStep


@dataclass(frozen=True)
class BakeConfig:
    """Everything a bake needs except the token (which never sits in a value that is printed)."""

    project: str = "wordpress"
    image: str = "debian-12-x64"
    region: str = "nyc3"
    size: str = "s-1vcpu-1gb"
    snapshot_name: str | None = None
    snapshot_regions: tuple[str, ...] = ()
    droplet_name: str | None = None
    ssh_username: str = "root"
    ssh_port: int = 22
    private_networking: bool = True
    monitoring: bool = False
    vpc_uuid: str | None = None
    tags: tuple[str, ...] = ("scaler-bake",)
    ipv6: bool = False
    user_data_file: Path = REPO_ROOT / "config" / "cloud-config.yaml"
    # inline user data (the builder's user_data); wins over user_data_file
    user_data: str | None = None
    connect_with_private_ip: bool = False
    # an SSH key already on the account (and its private half) instead of a temporary one
    ssh_key_id: str | None = None
    ssh_private_key_file: Path | None = None
    snapshot_tags: tuple[str, ...] = ()
    droplet_agent: bool | None = None
    # the template's provisioners in order; () runs the playbook alone
    steps: tuple[Step, ...] = ()
    manifest_custom_data: Mapping[str, str] = field(default_factory=dict)
    manifest_strip_time: bool = False
    build_name: str = "digitalocean"
    playbook: Path = REPO_ROOT / "packer-build.yml"
    roles_path: Path = REPO_ROOT / "roles"
    host_alias: str = "packerbox"
    groups: tuple[str, ...] = ("all", "wp_node")
    manifest: Path = Path("manifest.json")
    api_url: str | None = None
    state: str | None = None
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    # `-e @FILE` and --vault-password-file: handed to ansible-playbook as they are, never read
    extra_var_files: tuple[Path, ...] = ()
    vault_password_files: tuple[Path, ...] = ()
    timeouts: Timeouts = Timeouts()
    poll_min: float = 1.0
    poll_max: float = 3.0


@dataclass(frozen=True)
class Loaded:
    """A config and the token found on the way (the var file's do_api_token), kept apart."""

    config: BakeConfig
    token: str | None = None
    warnings: tuple[str, ...] = ()
    # the values to hide when the build is printed (sensitive variables)
    secrets: tuple[str, ...] = ()


_BOOL_FIELDS = {
    "private_networking",
    "monitoring",
    "ipv6",
    "connect_with_private_ip",
    "manifest_strip_time",
}
_PATH_FIELDS = {"user_data_file", "playbook", "roles_path", "manifest", "ssh_private_key_file"}
_TUPLE_FIELDS = {"snapshot_regions", "tags", "groups", "snapshot_tags"}
_FIELD_NAMES = {f.name for f in fields(BakeConfig)}


def load_config_file(path: Path, base: BakeConfig | None = None) -> BakeConfig:
    """Apply the [bake] table of a TOML config file; relative paths are from its folder."""
    try:
        raw = tomllib.loads(read_text(path, "config file"))
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}; create it or leave out --config") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML ({err}); fix it") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply for a config file; fix it") from None
    table = raw.get("bake", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [bake] must be a table")
    return apply(base or BakeConfig(), table, where=str(path), relative_to=Path(path).parent)


def apply(
    config: BakeConfig,
    values: Mapping[str, Any],
    *,
    where: str = "options",
    relative_to: Path | None = None,
) -> BakeConfig:
    """A copy of config with values set (None values are skipped); checks names and types."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "connection":
            # Ansible always reaches the build droplet over SSH; `local` ran the role on this
            # machine, which scaler never configures. "ssh" is accepted as the only choice.
            if value != "ssh":
                raise ConfigError(
                    f"{where}: connection {value!r} is not supported; the bake always reaches "
                    "the build droplet over SSH (remove the setting)"
                )
            continue
        if key not in _FIELD_NAMES:
            raise ConfigError(
                f"{where}: unknown setting {key!r} (have: {', '.join(sorted(_FIELD_NAMES))})"
            )
        if key == "timeouts":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: timeouts must be a table of seconds")
            changes[key] = _timeouts(config.timeouts, value, where)
        elif key in ("extra_vars", "manifest_custom_data"):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {key} must be a table")
            changes[key] = {**getattr(config, key), **value}
        elif key == "steps":
            changes[key] = tuple(value)
        elif key == "droplet_agent":
            changes[key] = _bool(value, key, where)
        elif key == "user_data":
            changes[key] = str(value)
        elif key in _PATH_FIELDS:
            p = Path(str(value)).expanduser()
            changes[key] = (relative_to / p) if relative_to and not p.is_absolute() else p
        elif key in _TUPLE_FIELDS:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            changes[key] = tuple(str(v) for v in value)
        elif key in _BOOL_FIELDS:
            changes[key] = _bool(value, key, where)
        elif key in ("ssh_port",):
            changes[key] = _int(value, key, where)
        elif key in ("poll_min", "poll_max"):
            changes[key] = _float(value, key, where)
        else:
            changes[key] = str(value)
    return replace(config, **changes)


def _timeouts(current: Timeouts, values: Mapping[str, Any], where: str) -> Timeouts:
    names = {f.name for f in fields(Timeouts)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"{where}: unknown timeouts {sorted(unknown)} (have: {', '.join(sorted(names))})"
        )
    return replace(current, **{k: _seconds(v, f"timeouts.{k}", where) for k, v in values.items()})


def _bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")


def _int(value: Any, key: str, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a whole number, got {value!r}") from None


def _float(value: Any, key: str, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _seconds(value: Any, key: str, where: str) -> float:
    """Seconds from a number or a Go duration ("5m", "1m30s", "500ms")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {key} must be seconds or a duration like 5m, got {value!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


# --- the Packer template -----------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\{\{\s*(\w+)\s*(?:(`[^`]*`|\"(?:[^\"\\]|\\.)*\"))?\s*\}\}")
_GO_LAYOUT = [
    ("2006", "%Y"),
    ("06", "%y"),
    ("January", "%B"),
    ("Jan", "%b"),
    ("01", "%m"),
    ("Monday", "%A"),
    ("Mon", "%a"),
    ("02", "%d"),
    ("15", "%H"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("PM", "%p"),
    ("MST", "UTC"),
    ("Z07:00", "Z"),
]
_RFC3339 = "2006-01-02T15:04:05Z07:00"


def go_time(layout: str, at: float) -> str:
    """Format a UTC time with a Go reference layout (what Packer's isotime does)."""
    tm = time.gmtime(at)
    out, i = [], 0
    while i < len(layout):
        for token, fmt in _GO_LAYOUT:
            if layout.startswith(token, i):
                out.append(time.strftime(fmt, tm) if fmt.startswith("%") else fmt)
                i += len(token)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Context:
    user: Mapping[str, str]
    template_dir: Path
    started: float
    run_uuid: str
    env_allowed: bool = False
    missing_user_ok: bool = False


def interpolate(text: str, ctx: _Context, where: str) -> str:
    """Fill Packer's {{...}} functions in one string."""

    def fill(match: re.Match[str]) -> str:
        func, arg = match.group(1), match.group(2)
        value = arg[1:-1] if arg else None
        if arg and arg.startswith('"'):
            value = json.loads(arg)
        if func == "user":
            if (value is None or value not in ctx.user) and ctx.missing_user_ok:
                return ""
            if value is None or value not in ctx.user:
                have = ", ".join(sorted(ctx.user)) or "none"
                raise ConfigError(
                    f"{where} uses user variable {value!r}, which is not defined (have: {have});"
                    " add it to the var file or pass --var NAME=VALUE"
                )
            return ctx.user[value]
        if func == "env":
            if not ctx.env_allowed:
                raise ConfigError(f"{where}: env is allowed only in the variables section")
            return os.environ.get(value or "", "")
        if func == "timestamp":
            return str(int(ctx.started))
        if func == "isotime":
            return go_time(value or _RFC3339, ctx.started)
        if func == "uuid":
            return ctx.run_uuid
        if func == "template_dir":
            return str(ctx.template_dir)
        if func == "pwd":
            return os.getcwd()
        raise ConfigError(f"{where}: unsupported template function {func!r}")

    return _INTERPOLATION.sub(fill, text)


def _fill(value: Any, ctx: _Context, where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, ctx, where)
    if isinstance(value, list):
        return [_fill(v, ctx, where) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ctx, f"{where}.{k}") for k, v in value.items()}
    return value


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = strict_json(read_text(path, what))
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}; check the path") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} {path} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object")
    return data


def user_variables(
    template: Mapping[str, Any],
    var_file: Path | Sequence[Path] | None,
    overrides: Mapping[str, str],
    ctx: _Context,
) -> dict[str, str]:
    """The template's variables, then the var files', then --var's, as Packer resolves them."""
    declared = template.get("variables") or {}
    env_ctx = replace(ctx, env_allowed=True)
    values: dict[str, str] = {}
    for name, default in declared.items():
        values[name] = interpolate(str(default or ""), env_ctx, f"variables.{name}")
    files = [var_file] if isinstance(var_file, str | Path) else list(var_file or [])
    for path in files:
        values.update({k: str(v) for k, v in _load_json(Path(path), "var file").items()})
    values.update(overrides)
    return values


# What scaler does with each key of a Packer template; a key in none of these is refused.
_BUILDER_FIELDS = {
    "image": "image",
    "region": "region",
    "size": "size",
    "snapshot_name": "snapshot_name",
    "droplet_name": "droplet_name",
    "ssh_username": "ssh_username",
    "ssh_port": "ssh_port",
    "private_networking": "private_networking",
    "monitoring": "monitoring",
    "ipv6": "ipv6",
    "vpc_uuid": "vpc_uuid",
    "tags": "tags",
    "user_data": "user_data",
    "user_data_file": "user_data_file",
    "snapshot_regions": "snapshot_regions",
    "api_url": "api_url",
    "connect_with_private_ip": "connect_with_private_ip",
    "ssh_key_id": "ssh_key_id",
    "ssh_private_key_file": "ssh_private_key_file",
    "snapshot_tags": "snapshot_tags",
    "droplet_agent": "droplet_agent",
}
_BUILDER_TIMEOUTS = {
    "state_timeout": "active",
    "ssh_timeout": "ssh",
    "snapshot_timeout": "snapshot",
    "transfer_timeout": "transfer",
}
# read elsewhere (type, name, api_token) or checked below (communicator)
_BUILDER_OTHER = {"type", "name", "api_token", "communicator"}
_SHELL_KEYS = {
    "type",
    "inline",
    "script",
    "scripts",
    "environment_vars",
    "env",
    "inline_shebang",
    "valid_exit_codes",
    "pause_before",
}
_FILE_KEYS = {
    "type",
    "source",
    "sources",
    "destination",
    "content",
    "direction",
    "generated",
    "pause_before",
}
_ANSIBLE_KEYS = {
    "type",
    "playbook_file",
    "host_alias",
    "groups",
    "user",
    "inventory_directory",
    "ansible_env_vars",
    "extra_arguments",
    "galaxy_file",
    "roles_path",
    "use_proxy",
    "skip_version_check",
    "pause_before",
}
_MANIFEST_KEYS = {
    "type",
    "output",
    "strip_path",
    "strip_time",
    "custom_data",
    "keep_input_artifact",
}
# scaler's own custom_data keys (a rebake reads them); a template may not set them
RESERVED_CUSTOM_DATA = (
    "snapshot_name",
    "base_image",
    "base_image_id",
    "region",
    "size",
    "provisioning_sha256",
)


@dataclass(frozen=True)
class PackerBuild:
    """A Packer template read into the build Packer would run (values filled in)."""

    path: Path
    builder: Mapping[str, Any]
    provisioners: tuple[Mapping[str, Any], ...]
    post_processors: tuple[Mapping[str, Any], ...]
    user: Mapping[str, Any]
    template_dir: Path
    build_name: str
    sensitive: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    started: float = 0.0


def read_packer_template(
    template_path: Path,
    *,
    var_file: Path | Sequence[Path] | None = None,
    variables: Mapping[str, str] | None = None,
    started: float | None = None,
    run_uuid: str | None = None,
) -> PackerBuild:
    """Read a Packer JSON or HCL2 template (with var files and -var values) into its build."""
    var_files = [var_file] if isinstance(var_file, str | Path) else list(var_file or [])
    at = started or time.time()
    ctx = _Context({}, Path(template_path).resolve().parent, at, run_uuid or str(uuid.uuid4()))
    if is_hcl_template(Path(template_path)):
        return _hcl_build(Path(template_path), var_files, variables, ctx)
    return _json_build(template_path, var_files, variables, ctx)


def _hcl_build(
    template_path: Path,
    var_files: list[Path],
    variables: Mapping[str, str] | None,
    ctx: _Context,
) -> PackerBuild:
    try:
        hcl = read_hcl_build(
            template_path, var_files=var_files, variables=variables, started=ctx.started
        )
    except TemplateError as err:
        raise ConfigError(str(err)) from None
    ctx = replace(ctx, template_dir=hcl.template_dir)
    # Packer's plugins still fill the legacy {{timestamp}}-style functions in their fields.
    builder = {k: _fill(v, ctx, f"source.{hcl.source}.{k}") for k, v in hcl.builder.items()}
    secrets = tuple(str(hcl.variables[n]) for n in hcl.sensitive if str(hcl.variables.get(n, "")))
    name = hcl.source.partition(".")[2]
    return PackerBuild(
        template_path,
        {"name": name, **builder},
        hcl.provisioners,
        hcl.post_processors,
        dict(hcl.variables),
        hcl.template_dir,
        hcl.build_name,
        secrets,
        hcl.warnings,
        ctx.started,
    )


_JSON_KEYS = (
    "variables",
    "builders",
    "provisioners",
    "post-processors",
    "description",
    "min_packer_version",
    "sensitive-variables",
)


def _json_build(
    template_path: Path,
    var_files: list[Path],
    variables: Mapping[str, str] | None,
    ctx: _Context,
) -> PackerBuild:
    template = _load_json(template_path, "Packer template")
    for key in template:
        if key not in _JSON_KEYS:
            raise ConfigError(
                f"{template_path}: the template key {key!r} is not supported by scaler"
            )
    user = user_variables(template, var_files, variables or {}, ctx)
    ctx = replace(ctx, user=user)
    raw = _digitalocean_builder(template, template_path)
    # Packer's builder falls back to the environment when the template's token is empty,
    # an undefined user variable included
    token_text = raw.pop("api_token", None)
    builder = _fill(raw, ctx, "builders[0]")
    if token_text is not None:
        builder["api_token"] = interpolate(
            str(token_text), replace(ctx, missing_user_ok=True), "builders[0].api_token"
        )
    provisioners = []
    for n, prov in enumerate(template.get("provisioners") or []):
        if not isinstance(prov, dict):
            raise ConfigError(f"{template_path}: provisioners[{n}] is not an object")
        provisioners.append({**_fill(prov, ctx, f"provisioners[{n}]"), "__index__": n + 1})
    posts = [
        {**_fill(p, ctx, "post-processors"), "__index__": n + 1}
        for n, p in enumerate(_post_processors(template))
    ]
    secrets = tuple(user[n] for n in template.get("sensitive-variables") or [] if user.get(str(n)))
    return PackerBuild(
        Path(template_path),
        builder,
        tuple(provisioners),
        tuple(posts),
        user,
        ctx.template_dir,
        "",
        secrets,
        (),
        ctx.started,
    )


def _digitalocean_builder(template: Mapping[str, Any], template_path: Path) -> dict[str, Any]:
    """The template's one digitalocean builder (a copy); ConfigError for none or several."""
    builders = [b for b in template.get("builders") or [] if isinstance(b, dict)]
    ocean = [b for b in builders if b.get("type") == "digitalocean"]
    if not ocean:
        kinds = ", ".join(sorted({str(b.get("type")) for b in builders})) or "none"
        raise ConfigError(
            f"{template_path} has no digitalocean builder (have: {kinds}); scaler bakes "
            "DigitalOcean snapshots"
        )
    if len(ocean) > 1:
        raise ConfigError(
            f"{template_path} has {len(ocean)} digitalocean builders; scaler bakes one per "
            "run: keep one"
        )
    return dict(ocean[0])


def load_packer_template(
    template_path: Path,
    base: BakeConfig,
    *,
    var_file: Path | Sequence[Path] | None = None,
    variables: Mapping[str, str] | None = None,
    started: float | None = None,
    run_uuid: str | None = None,
) -> Loaded:
    """Apply a Packer template's digitalocean builder, provisioners and manifest to base."""
    build = read_packer_template(
        template_path, var_file=var_file, variables=variables, started=started, run_uuid=run_uuid
    )
    return config_from_build(build, base)


def config_from_build(build: PackerBuild, base: BakeConfig) -> Loaded:
    """The bake's settings from a read template; every key is used or refused by name."""
    where = str(build.path)
    builder = dict(build.builder)
    values: dict[str, Any] = {}
    for key in builder:
        if (
            key not in _BUILDER_FIELDS
            and key not in _BUILDER_TIMEOUTS
            and key not in _BUILDER_OTHER
        ):
            raise _unsupported(where, "the digitalocean builder", key)
    communicator = builder.get("communicator", "ssh")
    if communicator != "ssh":
        raise ConfigError(
            f"{where}: communicator {communicator!r} is not supported by scaler (only 'ssh')"
        )
    if builder.get("name") and builder["name"] != "digitalocean":
        values["build_name"] = builder["name"]
    for theirs, ours in _BUILDER_FIELDS.items():
        if theirs in builder and builder[theirs] not in ("", None):
            values[ours] = builder[theirs]
    # What the template leaves out is Packer's default, unless scaler.toml set it.
    defaults = BakeConfig()
    for key in ("private_networking", "monitoring"):
        if key not in values and getattr(base, key) == getattr(defaults, key):
            values[key] = False
    if "snapshot_name" not in values and base.snapshot_name is None:
        values["snapshot_name"] = f"packer-{int(build.started)}"
    if (
        "user_data" not in values
        and "user_data_file" not in values
        and base.user_data is None
        and base.user_data_file == defaults.user_data_file
    ):
        values["user_data"] = ""  # no user data, as Packer sends none
    if "ssh_key_id" in values:
        values["ssh_key_id"] = str(values["ssh_key_id"])
        if not values.get("ssh_private_key_file"):
            raise ConfigError(
                f"{where}: ssh_key_id needs ssh_private_key_file (the key's private half), "
                "as in Packer"
            )
    elif "ssh_private_key_file" in values:
        raise ConfigError(
            f"{where}: ssh_private_key_file without ssh_key_id is not supported by scaler "
            "(it registers a temporary key); add ssh_key_id or remove it"
        )
    if "user_data" in values and "user_data_file" in values:
        raise ConfigError(f"{where}: set user_data or user_data_file, not both (as in Packer)")
    timeouts = {
        ours: builder[theirs] for theirs, ours in _BUILDER_TIMEOUTS.items() if theirs in builder
    }
    if timeouts:
        values["timeouts"] = timeouts
    for key in ("user_data_file", "ssh_private_key_file"):
        if key in values:
            values[key] = _packer_path(values[key], build.template_dir)
    project = build.user.get("project_name")
    if project:
        values["project"] = str(project)
    steps: list[Step] = []
    seen_ansible = False
    for prov in build.provisioners:
        step, settings = _step(prov, build, where, first_ansible=not seen_ansible)
        if isinstance(step, AnsibleStep):
            if not seen_ansible:
                values.update(settings)
            seen_ansible = True
        steps.append(step)
    if build.provisioners:
        values["steps"] = steps
    user = values.pop("ansible_user", None)
    if user and "ssh_username" not in values:
        values["ssh_username"] = user
    for post in build.post_processors:
        values.update(_post_processor(post, where))
    token = str(builder.get("api_token") or "").strip() or None
    config = apply(base, values, where=where)
    return Loaded(config, token, build.warnings, build.sensitive)


def _unsupported(where: str, what: str, key: str) -> ConfigError:
    return ConfigError(
        f"{where}: {what} key {key!r} is not supported by scaler; remove it or bake with Packer"
    )


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return tuple(str(v) for v in value)


def _env_pairs(items: tuple[str, ...], where: str, key: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"{where}: {key} entry {item!r} is not NAME=VALUE")
        pairs.append((name, value))
    return tuple(pairs)


@dataclass(frozen=True)
class _Provisioner:
    """One provisioner of a template, as the step readers see it."""

    raw: Mapping[str, Any]
    what: str  # "provisioner 2 (shell)"
    where: str
    pause: float
    tdir: Path

    def only(self, allowed: Collection[str]) -> None:
        """Refuse a key scaler does not support for this kind."""
        for key in self.raw:
            if key != "__index__" and key not in allowed:
                raise _unsupported(self.where, self.what, key)


def _step(
    prov: Mapping[str, Any], build: PackerBuild, where: str, *, first_ansible: bool
) -> tuple[Step, dict[str, Any]]:
    """One Packer provisioner as a bake step, and the bake settings the first ansible one gives."""
    kind = str(prov.get("type"))
    what = f"provisioner {prov.get('__index__', '?')} ({kind})"
    pause = _seconds(prov.get("pause_before", 0), "pause_before", where)
    p = _Provisioner(prov, what, where, pause, build.template_dir)
    if kind == "shell":
        return _shell_step(p), {}
    if kind == "file":
        return _file_step(p), {}
    if kind == "ansible":
        return _ansible_step(p, first_ansible=first_ansible)
    hint = " (use 'ansible', which runs from this machine)" if kind == "ansible-local" else ""
    raise ConfigError(f"{where}: {what}: provisioner {kind!r} is not supported by scaler{hint}")


def _shell_step(p: _Provisioner) -> ShellStep:
    """A shell provisioner (inline, script or scripts) as a ShellStep."""
    p.only(_SHELL_KEYS)
    prov, what, where, pause, tdir = p.raw, p.what, p.where, p.pause, p.tdir
    inline = _strings(prov.get("inline") or [], where, "inline")
    scripts = list(_strings(prov["script"], where, "script")) if prov.get("script") else []
    scripts += _strings(prov.get("scripts") or [], where, "scripts")
    if bool(inline) == bool(scripts):
        raise ConfigError(
            f"{where}: {what} needs exactly one of inline, script or scripts (as in Packer)"
        )
    env = _env_pairs(
        _strings(prov.get("environment_vars") or [], where, "environment_vars"),
        where,
        "environment_vars",
    )
    extra = prov.get("env") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"{where}: {what} env must be a map of names to values")
    env += tuple((str(k), str(v)) for k, v in extra.items())
    codes = prov.get("valid_exit_codes") or [0]
    return ShellStep(
        inline=inline,
        scripts=tuple(Path(_packer_path(s, tdir)) for s in scripts),
        environment=env,
        shebang=str(prov.get("inline_shebang") or "/bin/sh -e"),
        valid_exit_codes=tuple(_int(c, "valid_exit_codes", where) for c in codes),
        pause_before=pause,
    )


def _file_step(p: _Provisioner) -> FileStep:
    """A file provisioner (uploads only) as a FileStep."""
    p.only(_FILE_KEYS)
    prov, what, where, pause, tdir = p.raw, p.what, p.where, p.pause, p.tdir
    if prov.get("direction", "upload") != "upload":
        raise ConfigError(
            f"{where}: {what} direction {prov['direction']!r} is not supported by scaler "
            "(only upload)"
        )
    sources = list(_strings(prov["source"], where, "source")) if prov.get("source") else []
    sources += _strings(prov.get("sources") or [], where, "sources")
    content = prov.get("content")
    if not prov.get("destination") or bool(sources) == (content is not None):
        raise ConfigError(
            f"{where}: {what} needs a destination and one of source, sources or content"
        )
    return FileStep(
        sources=tuple(
            _packer_path(s, tdir) + ("/" if s.endswith("/") and len(s) > 1 else "") for s in sources
        ),
        destination=str(prov["destination"]),
        content=None if content is None else str(content),
        generated=_bool(prov.get("generated", False), "generated", where),
        pause_before=pause,
    )


def _ansible_step(p: _Provisioner, *, first_ansible: bool) -> tuple[AnsibleStep, dict[str, Any]]:
    """An ansible provisioner as an AnsibleStep; the first one's settings apply to the bake."""
    p.only(_ANSIBLE_KEYS)
    prov, what, where, pause, tdir = p.raw, p.what, p.where, p.pause, p.tdir
    settings: dict[str, Any] = {}
    playbook = (
        Path(_packer_path(prov["playbook_file"], tdir)) if prov.get("playbook_file") else None
    )
    if first_ansible:
        if playbook is not None:
            settings["playbook"] = str(playbook)
        if prov.get("host_alias"):
            settings["host_alias"] = prov["host_alias"]
        if prov.get("groups"):
            settings["groups"] = list(_strings(prov["groups"], where, "groups"))
        if prov.get("user"):
            settings["ansible_user"] = prov["user"]
    elif playbook is None:
        raise ConfigError(f"{where}: {what} has no playbook_file")
    env = tuple(
        (name, _unquoted(value))
        for name, value in _env_pairs(
            _strings(prov.get("ansible_env_vars") or [], where, "ansible_env_vars"),
            where,
            "ansible_env_vars",
        )
    )
    inv = prov.get("inventory_directory")
    return AnsibleStep(
        playbook=None if first_ansible else playbook,
        extra_arguments=_strings(prov.get("extra_arguments") or [], where, "extra_arguments"),
        env=env,
        galaxy_file=Path(_packer_path(prov["galaxy_file"], tdir))
        if prov.get("galaxy_file")
        else None,
        galaxy_roles_path=Path(_packer_path(prov["roles_path"], tdir))
        if prov.get("roles_path")
        else None,
        inventory_directory=Path(_packer_path(inv, tdir)) if inv else None,
        pause_before=pause,
    ), settings


def _unquoted(value: str) -> str:
    # Packer's documented `ANSIBLE_SSH_ARGS='-o ...'` is written for a shell; without one the
    # quotes would reach ssh as part of one argument
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _post_processor(post: Mapping[str, Any], where: str) -> dict[str, Any]:
    kind = str(post.get("type"))
    what = f"post-processor {post.get('__index__', '?')} ({kind})"
    if kind != "manifest":
        raise ConfigError(f"{where}: {what}: post-processor {kind!r} is not supported by scaler")
    values: dict[str, Any] = {}
    for key in post:
        if key != "__index__" and key not in _MANIFEST_KEYS:
            raise _unsupported(where, what, key)
    if post.get("output"):
        values["manifest"] = _packer_path(str(post["output"]), None)
    if "strip_time" in post:
        values["manifest_strip_time"] = _bool(post["strip_time"], "strip_time", where)
    custom = post.get("custom_data") or {}
    if not isinstance(custom, Mapping):
        raise ConfigError(f"{where}: {what} custom_data must be a map of strings")
    for key in custom:
        if key in RESERVED_CUSTOM_DATA:
            raise ConfigError(
                f"{where}: {what} custom_data key {key!r} is scaler's own (a rebake reads it); "
                "rename it"
            )
    if custom:
        values["manifest_custom_data"] = {str(k): str(v) for k, v in custom.items()}
    return values


def _post_processors(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in template.get("post-processors") or []:
        for one in item if isinstance(item, list) else [item]:
            # a bare string is a post-processor's type, as Packer reads it
            out.append(one if isinstance(one, dict) else {"type": str(one)})
    return out


def _packer_path(value: str, template_dir: Path | None) -> str:
    # Packer resolves paths from the working directory; the template's folder is a useful
    # fallback when scaler runs elsewhere.
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or template_dir is None:
        return str(p)
    beside = template_dir / p
    return str(beside if beside.exists() else p)


def default_snapshot_name(project: str, at: float) -> str:
    """`<project>_<YY-MM-DD-HH-MM-SS>` (UTC)."""
    return f"{project}_{time.strftime('%y-%m-%d-%H-%M-%S', time.gmtime(at))}"


def parse_assignments(items: list[str] | tuple[str, ...], what: str) -> dict[str, str]:
    """NAME=VALUE pairs from the command line."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{what} {item!r} is not NAME=VALUE")
        out[name.strip()] = value
    return out


def parse_extra_vars(
    items: list[str] | tuple[str, ...], what: str = "--extra-var"
) -> tuple[dict[str, str], tuple[Path, ...]]:
    """`-e NAME=VALUE` pairs and `-e @FILE` files (as ansible-playbook takes them)."""
    pairs = parse_assignments([i for i in items if not i.startswith("@")], what)
    files = []
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:]).expanduser()
            if not path.is_file():
                raise ConfigError(f"{what} {item!r}: no file {path}; give -e @PATH of a vars file")
            files.append(path.resolve())
    return pairs, tuple(files)


def find_config_file(
    explicit: Path | None, cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """--config, else $SCALER_CONFIG, else scaler.toml in the current folder or a parent."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    if env.get("SCALER_CONFIG"):
        path = Path(env["SCALER_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"SCALER_CONFIG names {path}, which does not exist; fix or unset it")
        return path
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None
