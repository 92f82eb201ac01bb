"""Click options that several commands share, so each is defined (and explained) once."""

from __future__ import annotations

from pathlib import Path

import click

from scaler.cli.common import deprecated_name, option_group
from scaler.rollout import DEFAULT_API_BUDGET, DEFAULT_BATCH

__all__ = [
    "api_budget_option",
    "deprecated_name",
    "option_group",
    "rollout_options",
    "stack_options",
    "tfvars_files",
]


def tfvars_files(tfvars: tuple[Path, ...], old: tuple[Path, ...]) -> tuple[Path, ...]:
    """--tfvars files in order, after any given with the old name (--var-file)."""
    return (*old, *tfvars)


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
        "--tfvars",
        multiple=True,
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A tfvars file for Terraform (-var-file), repeatable, in order; scaler writes "
        "image_slug into the one that sets it (default: terraform.tfvars in --terraform-dir).",
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
        "--backend-config",
        multiple=True,
        metavar="KEY=VALUE|FILE",
        help="Backend configuration for `terraform init` (repeatable); with it, init always runs.",
    ),
    click.option("--workspace", help="Terraform workspace (TF_WORKSPACE)."),
    click.option(
        "--lock-timeout", default="60s", show_default=True, help="Terraform state lock wait."
    ),
    click.option(
        "--terraform-bin",
        metavar="PATH",
        envvar="SCALER_TERRAFORM",
        help="The terraform or tofu binary, or 'embedded' [$SCALER_TERRAFORM; default: "
        "terraform on PATH, then tofu, then the embedded engine].",
    ),
)
"""Where the stack is and how Terraform runs: -C, --tfvars, --backend-config, --workspace, ..."""

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

api_budget_option = click.option(
    "--api-budget",
    type=click.IntRange(min=0),
    default=DEFAULT_API_BUDGET,
    show_default=True,
    help="DigitalOcean API requests per minute to stay under: batches wait for room (0: off).",
)
"""The API budget a rollout paces its batches by (scaler rollout and scaler rebake alike)."""
