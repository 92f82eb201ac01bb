"""Find and read Terraform state of every format into one model: resources with real JSON values.

Formats: version 4 (Terraform 0.12 to 1.x), version 3 with its `modules` list (0.8 to 0.11),
the legacy versions 1 and 2, and `terraform show -json` output. Data sources are left out.

This module is on Ansible's hot path (inventory/scaler-inventory runs at the start of every
Ansible command), so it imports only os, sys and json at load time: no typing, dataclasses,
enum or pathlib (each costs more than the whole inventory of a small stack).
"""

from __future__ import annotations

import json
import os

from scaler.errors import ScalerError, StateError, StateNotFound

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path
    from typing import Any, Literal

    SourceKind = Literal["option", "env", "cwd", "terraform"]
    Status = Literal["live", "tainted", "deposed"]
    Index = int | str | None

DEFAULT_TERRAFORM_DIR = "terraform"
STATE_FILE = "terraform.tfstate"

# Flatmap (v1-v3) stores every value as a string. These attribute names hold numbers in the
# providers' schemas (and are numbers in v4 states of the same resources), so digits under
# these names become numbers. Any other digit string (ids, ports of unknown meaning) stays a string.
NUMERIC_ATTRIBUTES = frozenset(
    {
        "disk",
        "memory",
        "vcpus",
        "price_hourly",
        "price_monthly",
        "droplet_id",
        "size_gigabytes",
        "volume_size",
        "iops",
        "ttl",
        "priority",
        "weight",
        "num_cpus",
        "num_cores_per_socket",
        "vcpu",
        "ipv4_prefix_length",
        "ipv6_prefix_length",
        "memory_reservation",
    }
)


class _Frozen:
    """A tiny frozen value class: dataclasses would import inspect on Ansible's hot path."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(tuple(repr(getattr(self, s)) for s in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Resource(_Frozen):
    """One instance of a managed resource: its address parts, status and attributes."""

    __slots__ = ("attributes", "index", "module", "name", "status", "type")
    module: str
    type: str
    name: str
    index: Index
    status: Status
    attributes: dict[str, Any]

    def __init__(
        self,
        module: str,
        type: str,
        name: str,
        index: Index,
        status: Status,
        attributes: dict[str, Any],
    ) -> None:
        self._set(
            module=module, type=type, name=name, index=index, status=status, attributes=attributes
        )

    @property
    def address(self) -> str:
        """The Terraform address, e.g. `module.galera.digitalocean_droplet.db[0]`."""
        base = (
            f"{self.module}.{self.type}.{self.name}" if self.module else f"{self.type}.{self.name}"
        )
        if self.index is None:
            return base
        if isinstance(self.index, int):
            return f"{base}[{self.index}]"
        return f"{base}[{json.dumps(self.index)}]"


class Output(_Frozen):
    """A root module output."""

    __slots__ = ("name", "sensitive", "value")
    name: str
    value: Any
    sensitive: bool

    def __init__(self, name: str, value: Any, sensitive: bool) -> None:
        self._set(name=name, value=value, sensitive=sensitive)


class State(_Frozen):
    """A Terraform state: its format, managed resource instances and root outputs."""

    __slots__ = ("format", "outputs", "resources", "terraform_version")
    format: str
    terraform_version: str | None
    resources: tuple[Resource, ...]
    outputs: tuple[Output, ...]

    def __init__(
        self,
        format: str,
        terraform_version: str | None,
        resources: tuple[Resource, ...],
        outputs: tuple[Output, ...],
    ) -> None:
        self._set(
            format=format,
            terraform_version=terraform_version,
            resources=resources,
            outputs=outputs,
        )


class StateSource(_Frozen):
    """Where the state comes from: a file, or `terraform state pull` in a directory."""

    __slots__ = ("kind", "path", "pull")
    kind: SourceKind
    path: str
    pull: bool

    def __init__(self, kind: SourceKind, path: str, pull: bool) -> None:
        self._set(kind=kind, path=path, pull=pull)

    @property
    def origin(self) -> str:
        """How the source was chosen, as the user would name it."""
        return {
            "option": "--state",
            "env": "TF_STATE",
            "cwd": "./" + STATE_FILE,
            "terraform": "--terraform-dir",
        }[self.kind]

    def describe(self) -> str:
        """One line for `-v`: what is read, and why this source."""
        if self.pull:
            return f"running `terraform state pull` in {self.path} (from {self.origin})"
        return f"reading Terraform state {self.path} (from {self.origin})"


def locate_state(
    state: str | None = None,
    terraform_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> StateSource:
    """Choose the state: --state, TF_STATE, ./terraform.tfstate, else the Terraform directory."""
    env = os.environ if environ is None else environ
    here = os.getcwd() if cwd is None else cwd
    if state:
        return _named_source("option", os.path.join(here, state))
    from_env = env.get("TF_STATE", "")
    if from_env:
        return _named_source("env", os.path.join(here, from_env))
    local = os.path.join(here, STATE_FILE)
    if os.path.isfile(local):
        return StateSource("cwd", local, pull=False)
    tf_dir = os.path.join(here, terraform_dir or DEFAULT_TERRAFORM_DIR)
    if os.path.isdir(tf_dir):
        return StateSource("terraform", tf_dir, pull=True)
    shown_dir = terraform_dir or DEFAULT_TERRAFORM_DIR
    raise StateNotFound(
        [
            "TF_STATE (unset)",
            "./" + STATE_FILE,
            f"`terraform state pull` in {shown_dir}/ (no such directory)",
        ]
    )


def _named_source(kind: SourceKind, path: str) -> StateSource:
    # A directory is a Terraform working directory, as terraform-inventory treats TF_STATE.
    if os.path.isdir(path):
        return StateSource(kind, path, pull=True)
    return StateSource(kind, path, pull=False)


def read_source(
    source: StateSource, pull: Callable[[Path], str] | None = None, engine: str | None = None
) -> str:
    """The state text of a source; `pull` runs `terraform state pull` (default scaler.terraform,
    with `engine`: --terraform-bin)."""
    if source.pull:
        from pathlib import Path

        if pull is None:
            # Only this branch starts Terraform, so only it pays for the runner's imports.
            try:
                from scaler.terraform import state_pull
            except ImportError as err:
                raise StateError(
                    f"{source.path} is a directory (from {source.origin}): reading its state "
                    f"runs `terraform state pull`, which needs scaler's dependencies ({err.name} "
                    "is missing from this Python); pass the terraform.tfstate file itself, or "
                    "run scaler's own Python"
                ) from None

            return state_pull(Path(source.path), engine=engine)
        return pull(Path(source.path))
    try:
        data = _read_regular(source.path)
    except _NotRegular as err:
        raise StateError(
            f"Terraform state {source.path} is {err}, not a regular file (from {source.origin}); "
            "pass the terraform.tfstate file"
        ) from None
    except FileNotFoundError:
        raise StateError(
            f"Terraform state {source.path} does not exist (from {source.origin}); check the path"
        ) from None
    except OSError as err:
        raise StateError(
            f"cannot read Terraform state {source.path} (from {source.origin}): "
            f"{err.strerror or err}"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(
            f"{source.path} is not a Terraform state (not UTF-8 text; from {source.origin})"
        ) from None


class _NotRegular(Exception):
    pass


def _read_regular(path: str) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o170000 != 0o100000:  # not stat.S_ISREG (no stat import on this path)
            kinds = {
                0o010000: "a FIFO",
                0o020000: "a character device",
                0o060000: "a block device",
                0o140000: "a socket",
                0o040000: "a directory",
            }
            raise _NotRegular(kinds.get(mode & 0o170000, "a special file"))
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def load_state(
    state: str | None = None,
    terraform_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    pull: Callable[[Path], str] | None = None,
    engine: str | None = None,
) -> tuple[State, StateSource]:
    """Locate, read and parse the state; returns it with the source used."""
    source = locate_state(state, terraform_dir, environ, cwd)
    return load_source(source, pull, engine), source


def load_source(
    source: StateSource, pull: Callable[[Path], str] | None = None, engine: str | None = None
) -> State:
    """Read and parse the state of a located source (say `source.describe()` first for -v)."""
    text = read_source(source, pull, engine)
    where = (
        f"the state from `terraform state pull` in {source.path}" if source.pull else source.path
    )
    return parse_state(text, where)


def read_state(path: str | os.PathLike[str]) -> State:
    """Read and parse one state file."""
    source = StateSource("option", os.fspath(path), pull=False)
    return parse_state(read_source(source), os.fspath(path))


def parse_state(text: str, where: str = "the state") -> State:
    """Parse state JSON of any supported format; `where` names it in error messages."""
    if not text.strip():
        # Terraform itself treats an empty state file (and an empty `state pull`) as no state.
        return State("empty", None, (), ())
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        detail = f"{err.msg}, line {err.lineno} column {err.colno}"
        raise StateError(f"{where} is not JSON ({detail}); is it a Terraform state file?") from None
    except RecursionError:
        raise StateError(
            f"{where} is nested too deeply to be a Terraform state; check the file"
        ) from None
    except _BadNumber as err:
        raise StateError(f"{where} holds {err}; check the file") from None
    except ValueError as err:
        # Python's 4,300-digit limit on integers (a state's numbers are ids and sizes)
        raise StateError(
            f"{where} holds a number too large to read ({str(err).split(':')[0]}); check the file"
        ) from None
    if "\\ud" in text or "\\uD" in text:
        _no_lone_surrogates(data, where)
    if not isinstance(data, dict):
        raise StateError(
            f"{where} is not a Terraform state (JSON {_json_kind(data)}, "
            'expected an object with "version"); pass the terraform.tfstate file'
        )
    version = data.get("version")
    try:
        if version is None and "format_version" in data:
            if "values" not in data and set(data) - {"format_version", "terraform_version"}:
                # A plan (`terraform show -json plan.out`), provider schemas, ...: no state.
                raise StateError(
                    f'{where} is Terraform JSON output but not of a state (no "values"); '
                    "use `terraform show -json` without a plan file, or the terraform.tfstate file"
                )
            return _parse_show_json(data, where)
        if version is None:
            raise StateError(
                f'{where} is not a Terraform state (no "version" field); '
                "pass the terraform.tfstate file"
            )
        if version == 4 and not isinstance(version, bool):
            return _parse_v4(data, where)
        if version in (1, 2, 3) and not isinstance(version, bool):
            return _parse_legacy(data, int(version))
    except ScalerError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
        shown = "`terraform show -json` output" if version is None else f"version-{version} state"
        raise StateError(
            f"{where} is a malformed {shown} ({type(err).__name__}: {err}); "
            "check the file or re-create it with `terraform state pull`"
        ) from None
    raise StateError(
        f"{where} has state version {json.dumps(version)}, which scaler cannot read "
        "(it reads versions 1 to 4 and `terraform show -json` output)"
    )


class _BadNumber(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"the number {text[:40]}, too large for a JSON value")
    return value


def _no_lone_surrogates(data: Any, where: str) -> None:
    """A \\udXXX escape without its pair decodes to text no output can encode."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                shown = value.encode("utf-8", "backslashreplace").decode()[:60]
                raise StateError(
                    f"{where} holds a string with a lone surrogate ({shown!r}), which is not "
                    "valid Unicode; check the file"
                ) from None


def _text(value: Any, what: str, where: str, *, empty: bool = False) -> str:
    """A name field of the state, which must be a string (or missing/null when `empty`)."""
    if value is None and empty:
        return ""
    if isinstance(value, str) and (value or empty):
        return value
    raise StateError(
        f"{where}: {what} is {_json_kind(value) if value is not None else 'null'} "
        f"{json.dumps(value)[:40]}, expected a string; check the file"
    )


def _index_key(value: Any, where: str) -> Index:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise StateError(
        f"{where}: index_key {json.dumps(value)[:40]} is not a count index (number) or a "
        "for_each key (string); check the file"
    )


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "number" if not isinstance(value, bool) else "boolean"


def _outputs(raw: Mapping[str, Any] | None) -> tuple[Output, ...]:
    out = []
    for name, item in (raw or {}).items():
        if isinstance(item, dict) and "value" in item:
            out.append(Output(name, item["value"], bool(item.get("sensitive", False))))
        else:
            # Versions 1 and 2 (and 0.6 upgrades) store a bare string.
            out.append(Output(name, item, False))
    return tuple(out)


def _drop_sensitive_v4(attributes: dict[str, Any], paths: Iterable[Any]) -> None:
    # A sensitive path's first step names the top-level attribute; drop that attribute whole.
    for path in paths or ():
        if isinstance(path, list) and path and isinstance(path[0], dict):
            step = path[0]
            if step.get("type") == "get_attr" and isinstance(step.get("value"), str):
                attributes.pop(step["value"], None)


def _parse_v4(data: Mapping[str, Any], where: str = "the state") -> State:
    resources: list[Resource] = []
    for res in data.get("resources") or ():
        if res.get("mode", "managed") != "managed":
            continue
        module = _text(res.get("module"), "a resource's module", where, empty=True)
        rtype = _text(res["type"], "a resource's type", where)
        name = _text(res["name"], f"the name of a {rtype} resource", where)
        for inst in res.get("instances") or ():
            if "deposed" in inst:
                status: Status = "deposed"
            elif inst.get("status") == "tainted":
                status = "tainted"
            else:
                status = "live"
            attributes = inst.get("attributes")
            if attributes is None:
                # States upgraded from 0.11 before a provider schema was known keep flatmap.
                attributes = unflatten(inst.get("attributes_flat") or {})
            elif not isinstance(attributes, dict):
                raise TypeError(f"attributes of {rtype}.{name} are not an object")
            # No copy: parse_state's own json.loads made this dict, nothing else holds it.
            _drop_sensitive_v4(attributes, inst.get("sensitive_attributes") or ())
            index = _index_key(inst.get("index_key"), f"{where}: {rtype}.{name}")
            resources.append(Resource(module, rtype, name, index, status, attributes))
    return State(
        "v4",
        data.get("terraform_version"),
        tuple(resources),
        _outputs(data.get("outputs")),
    )


def _module_address(path: list[str]) -> str:
    # v1-v3 module paths are ["root", "a", "b"]; the v4 spelling is "module.a.module.b".
    return ".".join(f"module.{part}" for part in path[1:])


def _parse_legacy(data: Mapping[str, Any], version: int) -> State:
    resources: list[Resource] = []
    outputs: tuple[Output, ...] = ()
    for mod in data.get("modules") or ():
        path = mod.get("path") or ["root"]
        module = _module_address(path)
        if not module:
            outputs = _outputs(mod.get("outputs"))
        for key, res in (mod.get("resources") or {}).items():
            parts = key.split(".")
            if parts[0] == "data":
                continue
            if len(parts) < 2:
                raise ValueError(f"resource key {key!r} is not TYPE.NAME[.INDEX]")
            # The key is authoritative: terraform-inventory's fixtures carry a bogus "type" field.
            rtype, name = parts[0], parts[1]
            index: Index = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            primary = res.get("primary")
            if primary is not None:
                status: Status = "tainted" if primary.get("tainted") is True else "live"
                resources.append(Resource(module, rtype, name, index, status, _attrs(primary)))
            for deposed in res.get("deposed") or ():
                if isinstance(deposed, dict):
                    resources.append(
                        Resource(module, rtype, name, index, "deposed", _attrs(deposed))
                    )
            for tainted in res.get("tainted") or ():
                # Versions 1 and 2 kept tainted instances in their own list.
                if isinstance(tainted, dict):
                    resources.append(
                        Resource(module, rtype, name, index, "tainted", _attrs(tainted))
                    )
    return State(f"v{version}", data.get("terraform_version"), tuple(resources), outputs)


def _attrs(instance: Mapping[str, Any]) -> dict[str, Any]:
    attributes = unflatten(instance.get("attributes") or {})
    if "id" not in attributes and instance.get("id"):
        attributes["id"] = instance["id"]
    return attributes


def _has_mark(marks: Any) -> bool:
    if marks is True:
        return True
    if isinstance(marks, dict):
        return any(_has_mark(m) for m in marks.values())
    if isinstance(marks, list):
        return any(_has_mark(m) for m in marks)
    return False


def _parse_show_json(data: Mapping[str, Any], where: str = "the state") -> State:
    values = data.get("values") or {}
    resources: list[Resource] = []
    stack = [values.get("root_module") or {}]
    while stack:
        mod = stack.pop()
        module = _text(mod.get("address"), "a module's address", where, empty=True)
        for res in mod.get("resources") or ():
            if res.get("mode", "managed") != "managed":
                continue
            rtype = _text(res["type"], "a resource's type", where)
            name = _text(res["name"], f"the name of a {rtype} resource", where)
            index = _index_key(res.get("index"), f"{where}: {rtype}.{name}")
            attributes = dict(res.get("values") or {})
            for key, marks in (res.get("sensitive_values") or {}).items():
                # A nested mark ({"metadata": {"secret": true}}) hides the whole attribute,
                # as a sensitive path does in a version-4 state.
                if _has_mark(marks):
                    attributes.pop(key, None)
            if res.get("deposed_key"):
                status: Status = "deposed"
            elif res.get("tainted") is True:
                status = "tainted"
            else:
                status = "live"
            resources.append(Resource(module, rtype, name, index, status, attributes))
        stack.extend(reversed(mod.get("child_modules") or ()))
    return State(
        "show-json",
        data.get("terraform_version"),
        tuple(resources),
        _outputs(values.get("outputs")),
    )


# -- flatmap (v1-v3 attributes) ------------------------------------------------------------
#
# "tags.#": "2", "tags.0": "a", "tags.1": "b"  -> "tags": ["a", "b"]        (list; "#" count)
# "tags.%": "1", "tags.Role": "web"           -> "tags": {"Role": "web"}    (map; "%" count)
# "tags.#": "1", "tags.Role": "web"           -> map too (before 0.7 maps also used "#")
# "tags.#": "1", "tags.4052381060": "x"       -> ["x"]  (a set: hash keys, kept in key order)
# "nic.#": "1", "nic.1.ip": "10.0.0.1"        -> [{"ip": "10.0.0.1"}] (list of blocks)
# Values inside lists of scalars and inside maps stay strings (they are user data: tags, DNS
# servers). Top-level values and fields of blocks become booleans for "true"/"false", and
# numbers for NUMERIC_ATTRIBUTES. A dotted key with no count ("metadata.a") stays as it is.


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a v1-v3 flatmap of attributes into nested lists/maps with real JSON types."""
    return _object(list(flat.items()))


def _leaf(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    if name in NUMERIC_ATTRIBUTES and value:
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _counted(pairs: list[tuple[str, Any]]) -> dict[str, str]:
    """First segments that carry a count key at this level: {segment: "#" or "%"}."""
    out: dict[str, str] = {}
    for key, _ in pairs:
        if key.endswith((".#", ".%")):
            head = key[:-2]
            if "." not in head:
                out[head] = key[-1]
    return out


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counted = _counted(pairs)
    if not counted:
        return {k: _leaf(k, v) for k, v in pairs}
    result: dict[str, Any] = {}
    children: dict[str, list[tuple[str, Any]]] = {seg: [] for seg in counted}
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if dot and head in counted:
            if rest not in ("#", "%"):
                children[head].append((rest, value))
        else:
            result[key] = _leaf(key, value)
    for seg, marker in counted.items():
        result[seg] = _collection(children[seg], marker)
    return result


def _collection(pairs: list[tuple[str, Any]], marker: str) -> Any:
    # One pass splits the pairs by element, so a long list costs linear time, not quadratic.
    inner: dict[str, list[tuple[str, Any]]] = {}
    bare: dict[str, Any] = {}
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if dot:
            inner.setdefault(head, []).append((rest, value))
        else:
            bare[head] = value
    heads = inner.keys() | bare.keys()
    if marker == "#" and all(h.isdigit() for h in heads):
        return [_element(inner.get(h), bare.get(h)) for h in sorted(heads, key=int)]
    return _map(pairs)


def _element(inner: list[tuple[str, Any]] | None, bare: Any) -> Any:
    if not inner:
        return bare
    keys = {k for k, _ in inner}
    if "%" in keys:
        return _map([(k, v) for k, v in inner if k != "%"])
    if "#" in keys:
        return _collection([(k, v) for k, v in inner if k != "#"], "#")
    return _object(inner)


def _map(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counted = _counted(pairs)
    result: dict[str, Any] = {}
    nested: dict[str, list[tuple[str, Any]]] = {seg: [] for seg in counted}
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if dot and head in counted:
            if rest not in ("#", "%"):
                nested[head].append((rest, value))
        else:
            # Map keys may contain dots ("kubernetes.io/role"): the whole rest is the key.
            result[key] = value
    for seg, marker in counted.items():
        result[seg] = _collection(nested[seg], marker)
    return result
