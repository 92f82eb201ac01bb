"""The command line: parses, calls the library, renders. The one place errors become messages."""

from __future__ import annotations

from typing import Any

import click

from scaler import __version__
from scaler.errors import ScalerError


class Group(click.Group):
    """A click group that turns expected failures into one-line `Error: ...` messages, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScalerError as err:
            raise click.ClickException(str(err)) from err


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scaler")
def main() -> None:
    """Bake WordPress snapshots and roll them out on DigitalOcean, safely.

    scaler reads terraform.tfstate as an Ansible inventory, bakes a snapshot
    with the ansible-welp role, points image_slug in terraform.tfvars at it and
    rolls the wp_node droplets onto it. `scaler local` runs all of it on a
    built-in local cloud, no account needed.

    \b
    Examples:
      scaler inventory --list            # Ansible inventory from ./terraform.tfstate
      scaler inventory --graph           # the same, for people
    """


def _register() -> None:
    # Each command group lives in its own module under scaler/cli/.
    from scaler.cli import inventory

    main.add_command(inventory.inventory)
    from scaler.cli import tfvars

    main.add_command(tfvars.tfvars)
    from scaler.cli import local

    main.add_command(local.local)


_register()
