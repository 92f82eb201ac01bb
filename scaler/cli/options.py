"""Click options that several commands share, so each is defined (and explained) once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from scaler.rollout import DEFAULT_BATCH

F = TypeVar("F", bound=Callable[..., object])


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator that applies `options` in the order given (the first is listed first)."""

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


stack_options = option_group(
    click.option(
        "--terraform-dir",
        "-C",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="The Terraform configuration and state.",
    ),
    click.option(
        "--var-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The tfvars file holding image_slug (default: terraform.tfvars in --terraform-dir).",
    ),
    click.option("--workspace", help="Terraform workspace (TF_WORKSPACE)."),
    click.option(
        "--lock-timeout", default="60s", show_default=True, help="Terraform state lock wait."
    ),
)
"""Where the stack is: -C/--terraform-dir, --var-file (tfvars), --workspace, --lock-timeout."""

rollout_options = option_group(
    click.option(
        "--strategy", type=click.Choice(["rolling", "all"]), help="Default: rolling if >1."
    ),
    click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, help="N or N%."),
    click.option(
        "--max-unavailable", help="N or N% droplets out at once (default: the batch size)."
    ),
    click.option("--canary", is_flag=True, help="Roll one droplet first, alone."),
    click.option("--deadline", help="Give up (and roll back) after this long, e.g. 30m."),
    click.option(
        "--health-interval", type=float, help="Seconds between checks (default: the LB's)."
    ),
    click.option(
        "--health-timeout", default="5m", show_default=True, help="Time for a batch to pass."
    ),
    click.option(
        "--health-grace",
        default="30s",
        show_default=True,
        help="Boot time before failures count.",
    ),
    click.option(
        "--port-map",
        help="Dial PORT=LOCALPORT,... instead of the check's port (env SCALER_PORT_MAP or "
        "SCALER_LOCAL_WEB_PORT for the local cloud).",
    ),
)
"""How to roll: strategy, batches, canary, deadline and the health gate."""
