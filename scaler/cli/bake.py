"""`scaler bake`: build a WordPress snapshot and record it in manifest.json."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from scaler.bake import BakeInterrupted, OnError, describe_bake
from scaler.cli.rolevars import role_var_options, with_role_vars
from scaler.config import apply, parse_assignments
from scaler.state import DEFAULT_TERRAFORM_DIR
from scaler.workflow import bake_from_config, load_bake, open_cloud, stack_inventory


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file with a [bake] table (default: $SCALER_CONFIG, else scaler.toml here "
    "or in a parent folder).",
)
@click.option(
    "--packer-template",
    type=click.Path(path_type=Path),
    help="A Packer template, read as it is: JSON (the tutorial's wp-node.json), HCL2 "
    "(*.pkr.hcl), or a folder of *.pkr.hcl files.",
)
@click.option(
    "--packer-var-file",
    "-var-file",
    "var_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Packer's var file (variables.json, *.pkrvars.hcl); repeatable, later files win.",
)
@click.option(
    "--var-file",
    "old_var_files",
    multiple=True,
    hidden=True,
    type=click.Path(path_type=Path, dir_okay=False),
)
@click.option(
    "--var",
    "-var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A Packer variable (beats var files and PKR_VAR_NAME).",
)
@click.option(
    "--on-error",
    "-on-error",
    "on_error",
    type=click.Choice(["cleanup", "abort", "ask"]),
    default="cleanup",
    show_default=True,
    help="On a failure: remove everything, keep the droplet and key to debug (prints how to "
    "SSH in and remove them), or ask.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the build (what it would create and run) and stop; creates nothing.",
)
@click.option(
    "--context",
    help="doctl auth context for the token (default: doctl's current one), used after the "
    "template's api_token and $DIGITALOCEAN_TOKEN.",
)
@click.option("--project", help="Snapshot name prefix: <project>_<YY-MM-DD-HH-MM-SS>.")
@click.option("--image", help="Base image slug or id.")
@click.option("--region", help="Region of the build droplet.")
@click.option("--size", help="Size of the build droplet.")
@click.option("--snapshot-name", help="Exact snapshot name (a -2, -3 suffix avoids clashes).")
@click.option(
    "--snapshot-region", "snapshot_regions", multiple=True, help="Extra region to copy it to."
)
@click.option("--tag", "tags", multiple=True, help="Tag for the build droplet (repeatable).")
@click.option("--ssh-username", help="User Ansible logs in as (default root).")
@click.option("--ssh-port", type=int, help="SSH port of the build droplet (default 22).")
@click.option("--playbook", type=click.Path(path_type=Path), help="Default: packer-build.yml.")
@click.option("--user-data-file", type=click.Path(path_type=Path), help="cloud-config to send.")
@role_var_options
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Packer manifest to append to (default ./manifest.json).",
)
@click.option(
    "--state", metavar="PATH", help="Terraform state for the inventory (as `scaler inventory`)."
)
@click.option(
    "--terraform-dir",
    metavar="DIR",
    envvar="SCALER_TERRAFORM_DIR",
    default=DEFAULT_TERRAFORM_DIR,
    show_default=True,
    help="Where to run `terraform state pull` when no state file is found.",
)
@click.option("--api-url", help="DigitalOcean API URL (default $DIGITALOCEAN_API_URL or DO's).")
@click.option("--timeout", "active_timeout", type=float, help="Seconds to wait for active.")
@click.option(
    "--poll-interval",
    type=float,
    help="Seconds between API polls (default 1; after 10 polls it grows to 3x).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the id.")
def bake(
    config_file: Path | None,
    packer_template: Path | None,
    var_files: tuple[Path, ...],
    old_var_files: tuple[Path, ...],
    variables: tuple[str, ...],
    on_error: OnError,
    dry_run: bool,
    context: str | None,
    project: str | None,
    image: str | None,
    region: str | None,
    size: str | None,
    snapshot_name: str | None,
    snapshot_regions: tuple[str, ...],
    tags: tuple[str, ...],
    ssh_username: str | None,
    ssh_port: int | None,
    playbook: Path | None,
    user_data_file: Path | None,
    extra_vars: tuple[str, ...],
    vault_password_files: tuple[Path, ...],
    manifest: Path | None,
    state: str | None,
    terraform_dir: str,
    api_url: str | None,
    active_timeout: float | None,
    poll_interval: float | None,
    as_json: bool,
) -> None:
    """Bake a WordPress snapshot and print its id.

    Creates a build droplet with a temporary SSH key, runs packer-build.yml
    (role ansible-welp) on it as host `packerbox` with the Terraform-state
    inventory, shuts it down, snapshots it, copies the snapshot to extra
    regions, and removes the droplet and key whatever happens (Ctrl-C too;
    --on-error abort keeps them on a failure). A Packer template's shell, file
    and ansible provisioners run in its order; a key scaler cannot honour is
    refused by name. Settings: scaler.toml (here or in a parent folder, or
    $SCALER_CONFIG), then the template, then options. Packer's own spellings
    work: -var-file=FILE, -var NAME=VALUE, -on-error=abort.

    The token: the template's api_token, else $DIGITALOCEAN_TOKEN,
    $DIGITALOCEAN_ACCESS_TOKEN, $DIGITALOCEAN_API_TOKEN, else doctl's config
    (~/.config/doctl/config.yaml, its current context or --context). Never printed.

    \b
    Examples:
      WELP_DB_PASSWORD=... scaler bake                 # uses scaler.toml if found
      scaler bake -e @vars.yml --vault-password-file ~/.vault_pass
      scaler bake --packer-template wp-node.json --packer-var-file variables.json
      scaler bake --packer-template wp.pkr.hcl -var-file=wp.pkrvars.hcl --dry-run
      scaler bake --packer-template wp.pkr.hcl -on-error=abort --context work
      scaler bake --json --snapshot-region ams3
    """
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {message}", err=True)

    if old_var_files:
        click.echo(
            "Note: --var-file on `scaler bake` is now --packer-var-file (or Packer's -var-file); "
            "--var-file will go away",
            err=True,
        )
    with _signal_exit_codes():
        loaded = load_bake(
            config_file,
            packer_template,
            var_files=[*old_var_files, *var_files],
            variables=parse_assignments(variables, "--var"),
        )
        for warning in loaded.warnings:
            click.echo(f"Warning: {warning}", err=True)
        overrides: dict[str, Any] = {
            "project": project,
            "image": image,
            "region": region,
            "size": size,
            "snapshot_name": snapshot_name,
            "snapshot_regions": list(snapshot_regions) or None,
            "tags": list(tags) or None,
            "ssh_username": ssh_username,
            "ssh_port": ssh_port,
            "playbook": playbook,
            "user_data_file": user_data_file,
            "manifest": manifest,
            "state": state,
            "api_url": api_url,
            "timeouts": {"active": active_timeout} if active_timeout is not None else None,
        }
        if poll_interval is not None:
            overrides.update(poll_min=poll_interval, poll_max=poll_interval * 3)
        config = with_role_vars(apply(loaded.config, overrides), extra_vars, vault_password_files)
        if dry_run:
            where = packer_template or loaded.path or "built-in defaults"
            click.echo(f"build from {where} (dry run: nothing is created)")
            token = loaded.token
            for line in describe_bake(config, (*loaded.secrets, *([token] if token else []))):
                click.echo(line)
            return
        cloud = open_cloud(config, loaded.token, context=context, say=progress)
        inventory = stack_inventory(
            state_path=config.state,
            terraform_dir=terraform_dir,
            say=progress,
            warn=lambda text: click.echo(f"Warning: {text}", err=True),
        )
        result = bake_from_config(
            config, cloud, inventory, say=progress, on_error=on_error, ask=_ask_terminal
        )
        progress(f"done: snapshot {result.id} ({result.name}) in {', '.join(result.regions)}")
        if as_json:
            click.echo(json.dumps(result.to_json()))
        else:
            click.echo(str(result.id))


def _ask_terminal(question: str, choices: tuple[str, ...]) -> str:
    """--on-error ask: the question on stderr, the answer from the terminal."""
    click.echo(question, err=True)
    answer: str = click.prompt(
        f"[{'/'.join(c[0] for c in choices)}] {' / '.join(choices)}?",
        type=click.Choice([*choices, *(c[0] for c in choices)]),
        show_choices=False,
        err=True,
    )
    return next(c for c in choices if c == answer or c[0] == answer)


class _Interrupted(click.ClickException):
    """`Error: <reason>`, exit 130: Ctrl-C (the shell's 128 + SIGINT)."""

    exit_code = 128 + signal.SIGINT


class _Terminated(click.ClickException):
    """`Error: <reason>`, exit 143: SIGTERM (128 + SIGTERM)."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def _signal_exit_codes() -> Iterator[None]:
    try:
        yield
    except BakeInterrupted as err:
        kind = _Terminated if err.signum == signal.SIGTERM else _Interrupted
        raise kind(str(err)) from err
    except KeyboardInterrupt:
        # before the bake started (reading the state, the template): nothing was created
        raise _Interrupted("bake interrupted (SIGINT) before it created anything") from None
