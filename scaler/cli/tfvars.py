"""`scaler tfvars`: read and set variables in terraform.tfvars without touching anything else."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scaler.cli.common import deprecated_name, option_group
from scaler.tfvars import (
    DEFAULT_VAR_FILE,
    IMAGE_VAR,
    ValueKind,
    get_tfvar,
    image_id_from,
    parse_value,
    set_tfvar,
)

_VAR_FILE = option_group(
    click.option(
        "--tfvars",
        "var_file",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The .tfvars file to read or edit (default: {DEFAULT_VAR_FILE}).",
    ),
    click.option(
        "--var-file",
        "old_var_file",
        hidden=True,
        type=click.Path(dir_okay=False, path_type=Path),
        callback=deprecated_name("--var-file", "--tfvars FILE"),
    ),
)


def _file(var_file: Path | None, old_var_file: Path | None) -> Path:
    return var_file or old_var_file or Path(DEFAULT_VAR_FILE)


@click.group()
def tfvars() -> None:
    """Read and set variables in terraform.tfvars.

    Only the value's text changes: comments, alignment, ordering and line
    endings stay exactly as they were.

    \b
    Examples:
      scaler tfvars get image_slug
      scaler tfvars set image_slug 'nyc3,sfo2:178239123'   # a manifest artifact_id works
    """


@tfvars.command()
@click.argument("name")
@_VAR_FILE
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON, strings too.")
def get(name: str, var_file: Path | None, old_var_file: Path | None, as_json: bool) -> None:
    """Print the value of variable NAME.

    Strings print as they are, other values as JSON.

    \b
    Examples:
      scaler tfvars get image_slug                 # 1234567
      scaler tfvars get tags --tfvars prod.tfvars
    """
    value = get_tfvar(_file(var_file, old_var_file), name)
    if isinstance(value, str) and not as_json:
        click.echo(value)
    else:
        click.echo(json.dumps(value, ensure_ascii=False))


@tfvars.command(name="set")
@click.argument("name")
@click.argument("value")
@_VAR_FILE
@click.option(
    "--string", "kind", flag_value="string", default=True, help="Write VALUE as a string (default)."
)
@click.option("--number", "kind", flag_value="number", help="Write VALUE as a number.")
@click.option("--bool", "kind", flag_value="bool", help="Write VALUE as true or false.")
@click.option("--json", "kind", flag_value="json", help="Write VALUE (JSON) as an HCL list or map.")
def set_(
    name: str, value: str, var_file: Path | None, old_var_file: Path | None, kind: ValueKind
) -> None:
    """Set variable NAME to VALUE, adding it if absent.

    Only the old value's text is replaced; the file is created if missing,
    written atomically, and re-read to check nothing else changed. For
    image_slug a Packer artifact_id such as sfo2,nyc3:12345 becomes 12345.
    Put -- before a VALUE that starts with a dash.

    \b
    Examples:
      scaler tfvars set image_slug sfo2,nyc3:118226535   # image_slug = "118226535"
      scaler tfvars set droplet_count --number 3
      scaler tfvars set tags --json '["web", "blue"]'
      scaler tfvars set --number offset -- -1
    """
    if name == IMAGE_VAR and kind == "string" and ":" in value:
        snapshot = image_id_from(value)
        click.echo(f"{IMAGE_VAR}: using snapshot id {snapshot} from {value}", err=True)
        value = snapshot
    var_file = _file(var_file, old_var_file)
    change = set_tfvar(var_file, name, parse_value(value, kind))
    if change.added:
        click.echo(f"{name} = {change.new} (added to {var_file})")
    elif change.changed:
        click.echo(f"{name} = {change.new} (was {change.old})")
    else:
        click.echo(f"{name} = {change.new} (unchanged)")
