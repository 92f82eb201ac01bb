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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.fsutil import read_text, strict_json

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
    user_data_file: Path = REPO_ROOT / "config" / "cloud-config.yaml"
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


_BOOL_FIELDS = {"private_networking", "monitoring"}
_PATH_FIELDS = {"user_data_file", "playbook", "roles_path", "manifest"}
_TUPLE_FIELDS = {"snapshot_regions", "tags", "groups"}
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
        elif key == "extra_vars":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: extra_vars must be a table")
            changes[key] = {**config.extra_vars, **value}
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


def interpolate(text: str, ctx: _Context, where: str) -> str:
    """Fill Packer's {{...}} functions in one string."""

    def fill(match: re.Match[str]) -> str:
        func, arg = match.group(1), match.group(2)
        value = arg[1:-1] if arg else None
        if arg and arg.startswith('"'):
            value = json.loads(arg)
        if func == "user":
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
    var_file: Path | None,
    overrides: Mapping[str, str],
    ctx: _Context,
) -> dict[str, str]:
    """The template's variables, then the var file's, then --var's, as Packer resolves them."""
    declared = template.get("variables") or {}
    env_ctx = replace(ctx, env_allowed=True)
    values: dict[str, str] = {}
    for name, default in declared.items():
        values[name] = interpolate(str(default or ""), env_ctx, f"variables.{name}")
    if var_file is not None:
        values.update({k: str(v) for k, v in _load_json(var_file, "var file").items()})
    values.update(overrides)
    return values


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
    "vpc_uuid": "vpc_uuid",
    "tags": "tags",
    "user_data_file": "user_data_file",
    "snapshot_regions": "snapshot_regions",
    "api_url": "api_url",
}
_BUILDER_TIMEOUTS = {
    "state_timeout": "active",
    "ssh_timeout": "ssh",
    "snapshot_timeout": "snapshot",
}


def load_packer_template(
    template_path: Path,
    base: BakeConfig,
    *,
    var_file: Path | None = None,
    variables: Mapping[str, str] | None = None,
    started: float | None = None,
    run_uuid: str | None = None,
) -> Loaded:
    """Apply a Packer JSON template's digitalocean builder, ansible provisioner and manifest."""
    template = _load_json(template_path, "Packer template")
    template_dir = Path(template_path).resolve().parent
    ctx = _Context({}, template_dir, started or time.time(), run_uuid or str(uuid.uuid4()))
    user = user_variables(template, var_file, variables or {}, ctx)
    ctx = replace(ctx, user=user)
    builders = [b for b in template.get("builders") or [] if isinstance(b, dict)]
    ocean = [b for b in builders if b.get("type") == "digitalocean"]
    if not ocean:
        kinds = ", ".join(sorted({str(b.get("type")) for b in builders})) or "none"
        raise ConfigError(
            f"{template_path} has no digitalocean builder (have: {kinds}); scaler bakes "
            "DigitalOcean snapshots"
        )
    builder = _fill(ocean[0], ctx, "builders[0]")
    values: dict[str, Any] = {}
    for theirs, ours in _BUILDER_FIELDS.items():
        if theirs in builder and builder[theirs] not in ("", None):
            values[ours] = builder[theirs]
    timeouts = {
        ours: builder[theirs] for theirs, ours in _BUILDER_TIMEOUTS.items() if theirs in builder
    }
    if timeouts:
        values["timeouts"] = timeouts
    if "user_data_file" in values:
        values["user_data_file"] = _packer_path(values["user_data_file"], template_dir)
    project = user.get("project_name")
    if project:
        values["project"] = project
    for prov in template.get("provisioners") or []:
        if isinstance(prov, dict) and prov.get("type") == "ansible":
            prov = _fill(prov, ctx, "provisioners.ansible")
            if prov.get("playbook_file"):
                values["playbook"] = _packer_path(prov["playbook_file"], template_dir)
            if prov.get("host_alias"):
                values["host_alias"] = prov["host_alias"]
            if prov.get("groups"):
                values["groups"] = prov["groups"]
            if prov.get("user") and "ssh_username" not in values:
                values["ssh_username"] = prov["user"]
            break
    for post in _post_processors(template):
        if post.get("type") == "manifest" and post.get("output"):
            values["manifest"] = _packer_path(_fill(post["output"], ctx, "manifest"), None)
    token = str(builder.get("api_token") or "").strip() or None
    config = apply(base, values, where=str(template_path))
    return Loaded(config, token)


def _post_processors(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in template.get("post-processors") or []:
        for one in item if isinstance(item, list) else [item]:
            if isinstance(one, dict):
                out.append(one)
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


def find_config_file(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    """--config, else ./scaler.toml when present."""
    if explicit is not None:
        return explicit
    here = (cwd or Path.cwd()) / CONFIG_FILE
    return here if here.is_file() else None
