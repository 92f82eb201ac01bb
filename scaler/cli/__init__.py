"""The command line: parses, calls the library, renders. The one place errors become messages."""

from __future__ import annotations

import importlib
from typing import Any

import click

from scaler import __version__
from scaler.errors import ScalerError


class Group(click.Group):
    """A click group that turns expected failures into one-line `Error: ...` messages, exit 1.

    Its commands are loaded lazily from COMMANDS.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)

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


# Each command lives in its own module under scaler/cli/, imported only when it runs (or when
# --help lists it), so `scaler inventory` never pays for the cloud, Terraform or Ansible imports.
COMMANDS = {
    "inventory": "scaler.cli.inventory:inventory",
    "tfvars": "scaler.cli.tfvars:tfvars",
    "local": "scaler.cli.local:local",
    "bake": "scaler.cli.bake:bake",
    "rollout": "scaler.cli.rollout:rollout",
    "rebake": "scaler.cli.rebake:rebake",
    "schedule": "scaler.cli.schedule:schedule",
    "snapshots": "scaler.cli.snapshots:snapshots",
    "cleanup": "scaler.cli.cleanup:cleanup",
}
