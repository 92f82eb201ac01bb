"""`scaler snapshots`: list this project's baked snapshots, prune old ones safely."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from scaler.cli.options import deprecated_name, option_group, tfvars_files
from scaler.config import BakeConfig
from scaler.errors import ScalerError
from scaler.snapshots import (
    PrunePlan,
    Snapshot,
    delete_snapshots,
    format_age,
    in_use_from,
    list_snapshots,
    parse_age,
    plan_prune,
    project_snapshots,
)
from scaler.state import State, load_state
from scaler.tfvars import IMAGE_VAR, TfvarsError, get_tfvar, tfvars_holding
from scaler.workflow import load_bake, open_cloud

_options = option_group(
    click.option("--project", help="Snapshot name prefix <project>_ (default: the config's)."),
    click.option(
        "--terraform-dir",
        "-C",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="The Terraform directory (its state and terraform.tfvars say what is in use).",
    ),
    click.option(
        "--state",
        help="The Terraform state file (default: TF_STATE, ./terraform.tfstate, or "
        "`terraform state pull` in --terraform-dir).",
    ),
    click.option(
        "--tfvars",
        multiple=True,
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The stack's tfvars files (repeatable); image_slug is read from the one that sets "
        "it (default: terraform.tfvars in --terraform-dir).",
    ),
    click.option(
        "--var-file",
        "old_tfvars",
        multiple=True,
        hidden=True,
        type=click.Path(dir_okay=False, path_type=Path),
        callback=deprecated_name("--var-file", "--tfvars FILE (repeatable)"),
    ),
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="scaler.toml (default: ./scaler.toml when present).",
    ),
    click.option(
        "--packer-template",
        type=click.Path(path_type=Path),
        help="The Packer template the snapshots are baked from (its project_name).",
    ),
    click.option(
        "--packer-var-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The template's var file (variables.json): the project is its project_name.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
)


def _tfvars(
    terraform_dir: Path, tfvars: tuple[Path, ...], old: tuple[Path, ...]
) -> tuple[tuple[Path, ...], Path]:
    """The tfvars files (default terraform.tfvars in the directory) and the one with image_slug."""
    files = tfvars_files(tfvars, old) or (terraform_dir / "terraform.tfvars",)
    return files, files[0] if len(files) == 1 else tfvars_holding(files, IMAGE_VAR)


def _project(
    explicit: str | None,
    config_path: Path | None,
    files: tuple[Path, ...],
    template: Path | None = None,
    packer_var_file: Path | None = None,
) -> tuple[str, bool]:
    """The project name, and whether it is scaler's default (nothing named one)."""
    if explicit:
        return explicit, False
    if packer_var_file is not None and template is None:
        # the tutorial's variables.json alone names the project
        with contextlib.suppress(OSError, ValueError):
            value = json.loads(packer_var_file.read_text()).get("project_name")
            if isinstance(value, str) and value:
                return value, False
    loaded = load_bake(
        config_path, template, var_files=[packer_var_file] if packer_var_file else []
    )
    if loaded.explicit_project:
        return loaded.config.project, False
    # The stack names its droplets and snapshots after project_name in terraform.tfvars; as in
    # Terraform, a later file wins.
    for var_file in reversed(files):
        try:
            value = get_tfvar(var_file, "project_name")
        except TfvarsError:
            continue
        if isinstance(value, str) and value:
            return value, False
    return loaded.config.project, True


_NAME_IT = (
    "pass --project NAME, --packer-var-file variables.json (its project_name), or set "
    "project in scaler.toml's [bake]"
)


def _in_use(
    terraform_dir: Path, state: str | None, var_file: Path, required: bool
) -> tuple[dict[int, tuple[str, ...]], str | None]:
    problem = None
    loaded: State | None = None
    try:
        # The Terraform directory's own state first, not a terraform.tfstate that happens to
        # be in the shell's working directory.
        chosen = str(Path(state).absolute()) if state else None
        loaded, _ = load_state(chosen, ".", cwd=str(terraform_dir.absolute()))
    except ScalerError as err:
        if required:
            raise ScalerError(
                f"cannot tell which snapshots are in use: {err}; refusing to prune"
            ) from None
        problem = f"warning: in-use status unknown for droplets: {err}"
    if required and not var_file.is_file():
        raise ScalerError(
            f"cannot tell which snapshot image_slug names: no {var_file}; pass --tfvars FILE"
        )
    try:
        return in_use_from(loaded, var_file), problem
    except ScalerError as err:
        if required:
            raise ScalerError(f"{err}; refusing to prune") from None
        return in_use_from(loaded, None), f"warning: in-use status unknown for image_slug: {err}"


def _row(snapshot: Snapshot, now: datetime, uses: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "name": snapshot.name,
        "created_at": snapshot.created_at.isoformat().replace("+00:00", "Z"),
        "age": format_age(snapshot.age(now)),
        "age_seconds": int(snapshot.age(now).total_seconds()),
        "size_gigabytes": snapshot.size_gigabytes,
        "regions": list(snapshot.regions),
        "in_use": list(uses),
    }


def _table(rows: list[dict[str, Any]], extra: str | None = None) -> str:
    header = ["ID", "NAME", "AGE", "SIZE", "REGIONS", "IN USE"] + ([extra.upper()] if extra else [])
    lines = [header]
    for row in rows:
        line = [
            str(row["id"]),
            row["name"],
            row["age"],
            f"{row['size_gigabytes']:g} GB",
            ",".join(row["regions"]),
            "; ".join(row["in_use"]) or "-",
        ]
        if extra:
            line.append(str(row[extra]))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@click.group()
def snapshots() -> None:
    """List and prune this project's baked snapshots.

    A project's snapshots are those named `<project>_...`. A snapshot is in
    use when image_slug in terraform.tfvars names it or a droplet in the
    Terraform state runs it; prune never deletes those.

    \b
    Examples:
      scaler snapshots list -C terraform
      scaler snapshots prune -C terraform --keep 3 --older-than 30d --yes
    """


@snapshots.command(name="list")
@_options
def list_command(
    project: str | None,
    terraform_dir: Path,
    state: str | None,
    tfvars: tuple[Path, ...],
    old_tfvars: tuple[Path, ...],
    config_path: Path | None,
    packer_template: Path | None,
    packer_var_file: Path | None,
    as_json: bool,
) -> None:
    """List the project's snapshots, newest first: age, size, regions, in use.

    \b
    Examples:
      scaler snapshots list -C terraform
      scaler snapshots list --project wordpress --json
    """
    files, image_file = _tfvars(terraform_dir, tfvars, old_tfvars)
    name, defaulted = _project(project, config_path, files, packer_template, packer_var_file)
    in_use, problem = _in_use(terraform_dir, state, image_file, required=False)
    if problem:
        click.echo(problem, err=True)
    if defaulted:
        click.echo(
            f"note: listing project {name!r}, scaler's default (nothing here names one); "
            + _NAME_IT,
            err=True,
        )
    cloud = open_cloud(BakeConfig())
    now = datetime.now(UTC)
    rows = [
        _row(s, now, in_use.get(s.id, ())) for s in project_snapshots(list_snapshots(cloud), name)
    ]
    if as_json:
        click.echo(json.dumps({"project": name, "snapshots": rows}, indent=2))
    elif rows:
        click.echo(_table(rows))
    else:
        click.echo(f"no snapshots named {name}_* in the account", err=True)


@snapshots.command()
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Always keep the newest N.",
)
@click.option("--older-than", help="Delete only snapshots older than this (e.g. 30d, 12h).")
@click.option("--yes", "-y", is_flag=True, help="Delete (without it: a dry run).")
@_options
def prune(
    keep: int,
    older_than: str | None,
    yes: bool,
    project: str | None,
    terraform_dir: Path,
    state: str | None,
    tfvars: tuple[Path, ...],
    old_tfvars: tuple[Path, ...],
    config_path: Path | None,
    packer_template: Path | None,
    packer_var_file: Path | None,
    as_json: bool,
) -> None:
    """Delete old snapshots; a dry run unless --yes.

    Never deletes the snapshot image_slug names, one any droplet in the
    Terraform state runs, nor the newest --keep. Refuses when the state
    or the tfvars file cannot be read.

    \b
    Examples:
      scaler snapshots prune --keep 3                 # what would go
      scaler snapshots prune --keep 3 --older-than 30d --yes
    """
    age = parse_age(older_than) if older_than else None
    files, image_file = _tfvars(terraform_dir, tfvars, old_tfvars)
    name, defaulted = _project(project, config_path, files, packer_template, packer_var_file)
    in_use, _ = _in_use(terraform_dir, state, image_file, required=True)
    if defaulted:
        click.echo(
            f"note: pruning project {name!r}, scaler's default (nothing here names one); "
            + _NAME_IT,
            err=True,
        )
    cloud = open_cloud(BakeConfig())
    now = datetime.now(UTC)
    mine = project_snapshots(list_snapshots(cloud), name)
    plan = plan_prune(mine, in_use, keep, age, now)
    deleted: list[int] = []

    def report(snapshot: Snapshot) -> None:
        deleted.append(snapshot.id)
        if not as_json:
            click.echo(f"deleted {snapshot.id} {snapshot.name}")

    if not as_json:
        for kept in plan.keep:
            click.echo(f"keep {kept.snapshot.id} {kept.snapshot.name}: {', '.join(kept.reasons)}")
        if not yes:
            for snapshot in plan.delete:
                click.echo(
                    f"would delete {snapshot.id} {snapshot.name} "
                    f"({format_age(snapshot.age(now))} old, {snapshot.size_gigabytes:g} GB)"
                )
    try:
        if yes:
            delete_snapshots(cloud, plan.delete, on_deleted=report)
    finally:
        if as_json:
            click.echo(json.dumps(_prune_json(name, plan, now, in_use, deleted, yes), indent=2))
    if not plan.delete:
        click.echo("nothing to prune", err=True)
    elif not yes:
        click.echo("dry run: nothing was deleted; pass --yes to delete", err=True)


def _prune_json(
    project: str,
    plan: PrunePlan,
    now: datetime,
    in_use: dict[int, tuple[str, ...]],
    deleted: list[int],
    yes: bool,
) -> dict[str, Any]:
    return {
        "project": project,
        "dry_run": not yes,
        "delete": [_row(s, now, ()) for s in plan.delete],
        "deleted": deleted,
        "keep": [
            {**_row(k.snapshot, now, in_use.get(k.snapshot.id, ())), "reasons": list(k.reasons)}
            for k in plan.keep
        ],
    }
