"""Packer HCL2 templates (`*.pkr.hcl`) read into the one build Packer would run.

Blocks: `packer` (accepted; scaler is not Packer, so required_version and required_plugins
are not checked), `variable` / `variables`, `locals` / `local`, `source`, `build` (with
`sources`, `provisioner`, `post-processor` and `post-processors` chains). Variable values, lowest
first: the declared default, `PKR_VAR_<name>`, the var files (`*.pkrvars.hcl` or JSON) in order,
then `-var` values, as Packer resolves them. A template folder is read as Packer reads one: every
`*.pkr.hcl` in it plus its `*.auto.pkrvars.hcl`. Anything else is refused by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.hclexpr import HclError, Scope, evaluate
from scaler.tfvars import TfvarsError, parse_hcl

_UNPARSEABLE_TAIL = "; fix that first, the file was not changed"


class TemplateError(ScalerError):
    """The HCL2 template holds something scaler cannot read or does not support."""


@dataclass(frozen=True)
class HclBuild:
    """The build of an HCL2 template: its digitalocean source, steps and post-processors."""

    builder: Mapping[str, Any]
    source: str
    build_name: str
    provisioners: tuple[Mapping[str, Any], ...]
    post_processors: tuple[Mapping[str, Any], ...]
    variables: Mapping[str, Any]
    sensitive: frozenset[str]
    template_dir: Path
    warnings: tuple[str, ...] = ()


def is_hcl_template(path: Path) -> bool:
    """True for `*.pkr.hcl` / `*.hcl` files and folders holding `*.pkr.hcl` files."""
    p = Path(path)
    if p.is_dir():
        return any(p.glob("*.pkr.hcl"))
    return p.name.endswith(".hcl")


def _unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def _blocks(raw: Any) -> list[dict[str, Any]]:
    return [b for b in (raw or []) if isinstance(b, dict)]


def _labelled(block: dict[str, Any], depth: int) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(labels, body) pairs of a block with `depth` labels as hcl2 nests them."""
    out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for key, value in block.items():
        if key.startswith("__"):
            continue
        if depth == 1:
            out.append(((_unquote(key),), value))
        else:
            for labels, body in _labelled(value, depth - 1):
                out.append(((_unquote(key), *labels), body))
    return out


def _attrs(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not (k.startswith("__") and k.endswith("__"))}


def _parse_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TemplateError(f"no Packer template or var file at {path}; check the path")
    try:
        return dict(parse_hcl(path))
    except TfvarsError as err:
        raise TemplateError(str(err).removesuffix(_UNPARSEABLE_TAIL) + "; fix it") from None


def _merged_blocks(files: Sequence[Path], where: str) -> dict[str, list[Any]]:
    """The top-level blocks of every template file, by kind; TemplateError for what scaler
    does not read (top-level attributes, data sources, other blocks)."""
    merged: dict[str, list[Any]] = {}
    for path in files:
        for key, value in _parse_file(path).items():
            if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
                raise TemplateError(
                    f"{path}: top-level attribute {key!r} is not allowed in a Packer template"
                )
            merged.setdefault(key, []).extend(value)
    known = {"packer", "variable", "variables", "locals", "local", "source", "build"}
    for key in merged:
        if key not in known:
            kind = "data source" if key == "data" else "block"
            raise TemplateError(
                f"{where}: {kind} {key!r} is not supported by scaler "
                f"(have: {', '.join(sorted(known))})"
            )
    return merged


def _variable_values(
    declared: Mapping[str, Any],
    types: Mapping[str, Any],
    env: Mapping[str, str],
    var_files: Sequence[Path],
    variables: Mapping[str, str],
    scope: Scope,
    where: str,
    warnings: list[str],
) -> dict[str, Any]:
    """Each declared variable's value as Packer picks it: the default, then PKR_VAR_<name>,
    then the var files in order, then -var; TemplateError when one is left without a value."""
    values: dict[str, Any] = dict(declared)
    for name in list(declared):
        raw = env.get(f"PKR_VAR_{name}")
        if raw is not None:
            values[name] = _typed(raw, types.get(name), scope, f"PKR_VAR_{name}")
    for path in var_files:
        for name, value in _read_var_file(Path(path), scope).items():
            if name not in declared:
                warnings.append(
                    f"{path}: variable {name!r} is set but not declared in the template; ignored"
                )
                continue
            values[name] = value
    for name, raw in variables.items():
        if name not in declared:
            have = ", ".join(sorted(declared)) or "none"
            raise TemplateError(f"-var {name}: no such variable in {where} (have: {have})")
        values[name] = _typed(raw, types.get(name), scope, f"-var {name}")
    missing = [n for n, v in values.items() if v is _UNSET]
    if missing:
        name = missing[0]
        raise TemplateError(
            f"{where}: variable {name!r} has no value; pass -var {name}=VALUE, set it in a "
            f"-var-file, or set PKR_VAR_{name}"
        )
    return values


def _chosen_source(
    merged: Mapping[str, list[Any]], full: Scope, where: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The one digitalocean source the builds use: its name, its block and its build block."""
    sources: dict[str, dict[str, Any]] = {}
    for block in merged.get("source", []):
        for (kind, name), body in _labelled(block, 2):
            sources[f"{kind}.{name}"] = body
    builds = merged.get("build", [])
    chosen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for build in builds:
        for ref in _eval(build.get("sources", []), full, f"{where}: build.sources"):
            name = str(ref).removeprefix("source.")
            if name not in sources:
                have = ", ".join(f"source.{s}" for s in sorted(sources)) or "none"
                raise TemplateError(
                    f"{where}: build uses {ref!r}, which is not defined (have: {have})"
                )
            if name.startswith("digitalocean."):
                chosen.append((name, sources[name], build))
        for block in _blocks(build.get("source")):
            (label,) = [k for k in block if not k.startswith("__")] or ["?"]
            raise TemplateError(
                f"{where}: a source block inside build ({_unquote(label)}) is not supported by "
                "scaler; list the source in `sources` and set its fields in the source block"
            )
    if not chosen:
        kinds = ", ".join(sorted({s.split(".")[0] for s in sources})) or "none"
        raise TemplateError(
            f"{where} builds no digitalocean source (have: {kinds}); scaler bakes DigitalOcean "
            "snapshots"
        )
    if len(chosen) > 1:
        names = ", ".join(f"source.{c[0]}" for c in chosen)
        raise TemplateError(
            f"{where} builds {len(chosen)} digitalocean sources ({names}); scaler bakes one "
            "per run: keep one in the build's sources"
        )
    return chosen[0]


def read_hcl_build(
    template: Path,
    *,
    var_files: Sequence[Path] = (),
    variables: Mapping[str, str] | None = None,
    started: float,
    environ: Mapping[str, str] | None = None,
) -> HclBuild:
    """Read an HCL2 template (file or folder) into the build Packer would run."""
    template = Path(template)
    env = os.environ if environ is None else environ
    if template.is_dir():
        files = sorted(template.glob("*.pkr.hcl"))
        auto = sorted(template.glob("*.auto.pkrvars.hcl"))
        root = template.resolve()
    else:
        files, auto, root = [template], [], template.resolve().parent
    where = str(template)
    merged = _merged_blocks(files, where)
    scope = Scope({}, root, started, allow_vars=False)
    declared, sensitive, types = _declare(merged, scope, where)
    warnings: list[str] = []
    values = _variable_values(
        declared, types, env, [*auto, *var_files], variables or {}, scope, where, warnings
    )
    locals_raw: dict[str, Any] = {}
    for block in merged.get("locals", []):
        locals_raw.update(_attrs(block))
    for block in merged.get("local", []):
        for (name,), body in _labelled(block, 1):
            if "expression" not in body:
                raise TemplateError(f"{where}: local {name!r} has no expression")
            locals_raw[name] = body["expression"]
            if _eval(body.get("sensitive", False), scope, where):
                sensitive.add(f"local.{name}")
    full = Scope(values, root, started, locals_raw=locals_raw)

    source_name, source_body, build = _chosen_source(merged, full, where)
    builder: dict[str, Any] = {"type": "digitalocean"}
    for key, raw in _attrs(source_body).items():
        if isinstance(raw, list) and raw and all(isinstance(b, dict) for b in raw):
            raise TemplateError(
                f"{where}: block {key!r} in source.{source_name} is not supported by scaler"
            )
        builder[key] = _eval(raw, full, f"{where}: source.{source_name}.{key}")
    build_keys = {
        "name",
        "description",
        "sources",
        "source",
        "provisioner",
        "post-processor",
        "post-processors",
    }
    for key in _attrs(build):
        if key not in build_keys:
            raise TemplateError(f"{where}: {key!r} in the build block is not supported by scaler")
    provisioners = _steps(build.get("provisioner"), full, where, "provisioner", source_name)
    posts = _steps(build.get("post-processor"), full, where, "post-processor", source_name)
    for chain in _blocks(build.get("post-processors")):
        extra = [k for k in _attrs(chain) if k != "post-processor"]
        if extra:
            raise TemplateError(f"{where}: {extra[0]!r} in post-processors is not supported")
        posts += _steps(chain.get("post-processor"), full, where, "post-processor", source_name)
    return HclBuild(
        builder=builder,
        source=source_name,
        build_name=str(_eval(build["name"], full, where)) if "name" in build else "",
        provisioners=tuple(provisioners),
        post_processors=tuple(posts),
        variables={k: v for k, v in values.items()},
        sensitive=frozenset(sensitive),
        template_dir=root,
        warnings=tuple(warnings),
    )


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _declare(
    merged: Mapping[str, list[Any]], scope: Scope, where: str
) -> tuple[dict[str, Any], set[str], dict[str, str]]:
    declared: dict[str, Any] = {}
    sensitive: set[str] = set()
    types: dict[str, str] = {}
    allowed = {"type", "default", "description", "sensitive", "nullable"}
    for block in merged.get("variable", []):
        for (name,), body in _labelled(block, 1):
            for key in _attrs(body):
                if key not in allowed:
                    raise TemplateError(
                        f"{where}: {key!r} in variable {name!r} is not supported by scaler"
                    )
            if "type" in body:
                types[name] = str(body["type"]).strip()
            declared[name] = (
                _eval(body["default"], scope, f"{where}: variable {name}")
                if "default" in body
                else _UNSET
            )
            if _eval(body.get("sensitive", False), scope, where) is True:
                sensitive.add(name)
    for block in merged.get("variables", []):
        for name, raw in _attrs(block).items():
            declared[name] = _eval(raw, scope, f"{where}: variables.{name}")
    return declared, sensitive, types


def _typed(raw: str, kind: str | None, scope: Scope, what: str) -> Any:
    # Packer reads a -var or PKR_VAR_ value as text for a string variable, else as HCL.
    if kind in (None, "string", "${string}"):
        return raw
    return _eval(raw, scope, what)


def _read_var_file(path: Path, scope: Scope) -> dict[str, Any]:
    if path.name.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TemplateError(f"no var file at {path}; check the path") from None
        except json.JSONDecodeError as err:
            raise TemplateError(
                f"var file {path} is not JSON ({err.msg} at line {err.lineno})"
            ) from None
        if not isinstance(data, dict):
            raise TemplateError(f"var file {path} must hold a JSON object")
        return data
    if not path.is_file():
        raise TemplateError(f"no var file at {path}; check the path")
    out: dict[str, Any] = {}
    for name, raw in _parse_file(path).items():
        if (
            isinstance(raw, list)
            and raw
            and all(isinstance(b, dict) and "__is_block__" in b for b in raw)
        ):
            raise TemplateError(f"{path}: block {name!r} is not allowed in a var file")
        out[name] = _eval(raw, scope, f"{path}: {name}")
    return out


def _eval(raw: Any, scope: Scope, where: str) -> Any:
    try:
        return evaluate(raw, scope)
    except HclError as err:
        raise TemplateError(f"{where}: {err}") from None


def _steps(raw: Any, scope: Scope, where: str, what: str, source: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in _blocks(raw):
        for (kind,), body in _labelled(block, 1):
            n = len(out) + 1
            step: dict[str, Any] = {"type": kind}
            for key, value in _attrs(body).items():
                if (
                    isinstance(value, list)
                    and value
                    and all(isinstance(b, dict) and "__is_block__" in b for b in value)
                ):
                    raise TemplateError(
                        f"{where}: block {key!r} in {what} {kind!r} is not supported by scaler"
                    )
                step[key] = _eval(value, scope, f"{where}: {what} {kind!r}.{key}")
            only = step.pop("only", None)
            excluded = step.pop("except", None)
            names = {source, f"source.{source}"}
            if only is not None and not names & set(map(str, only)):
                continue
            if excluded is not None and names & set(map(str, excluded)):
                continue
            step["__index__"] = n
            out.append(step)
    return out
