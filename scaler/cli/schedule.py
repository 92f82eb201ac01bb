"""`scaler schedule`: systemd timer units (or a crontab line) that run `scaler rebake`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from scaler.errors import ScalerError
from scaler.schedule import (
    DEFAULT_NAME,
    DEFAULT_RANDOM_DELAY,
    SYSTEM_ENV_FILE,
    USER_ENV_FILE,
    default_unit_dir,
    install_units,
    parse_every,
    render_cron_line,
    render_units,
)

DEFAULT_REBAKE_ARGS = ("--log-format", "json")


def _scaler_executable(explicit: Path | None) -> str:
    if explicit is not None:
        return str(explicit.absolute())
    # The interpreter's own bin directory first: a venv's scaler, not some other on PATH.
    beside = Path(sys.executable).parent / "scaler"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("scaler")
    if found:
        return str(Path(found).absolute())
    raise ScalerError("cannot find the scaler executable; pass --scaler PATH")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--every",
    required=True,
    metavar="daily|weekly|CRON",
    help="When: daily (00:00), weekly (Monday 00:00) or a 5-field cron expression.",
)
@click.option("--cron", "as_cron", is_flag=True, help="Print a crontab line instead of units.")
@click.option("--install", is_flag=True, help="Write the units to --unit-dir (else print them).")
@click.option("--user", "user_units", is_flag=True, help="User units (~/.config/systemd/user).")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --install writes (default /etc/systemd/system; with --user the user unit dir).",
)
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Unit (and lock) name.")
@click.option(
    "--random-delay",
    default=DEFAULT_RANDOM_DELAY,
    show_default=True,
    help="RandomizedDelaySec= of the timer (spreads many sites' bakes).",
)
@click.option(
    "--env-file",
    help=f"File with DIGITALOCEAN_TOKEN=... (mode 0600) the run reads; default "
    f"{SYSTEM_ENV_FILE} ({USER_ENV_FILE} with --user); '' for none.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Directory the run starts in (scaler.toml, manifest.json). Default: here.",
)
@click.option(
    "--scaler",
    "scaler_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The scaler executable to run (default: this one).",
)
@click.argument("rebake_args", nargs=-1, type=click.UNPROCESSED)
def schedule(
    every: str,
    as_cron: bool,
    install: bool,
    user_units: bool,
    unit_dir: Path | None,
    name: str,
    random_delay: str,
    env_file: str | None,
    workdir: Path,
    scaler_path: Path | None,
    rebake_args: tuple[str, ...],
) -> None:
    """Run `scaler rebake` on a schedule: print or install a systemd timer, or a cron line.

    The timer is Persistent (a run missed while the machine was off happens at
    boot) and randomly delayed. The service treats exit code 3 (rolled out) as
    success; 4 and 5 mark the unit failed, so `systemctl --failed` and
    OnFailure= hooks see them. The token comes from --env-file, never from the
    unit. Arguments after `--` are passed to `scaler rebake` (default:
    --log-format json). A cron line runs under `flock -n`, so runs never overlap.

    \b
    Examples:
      scaler schedule --every daily -- --max-age 7d --notify-url https://hooks.example/x
      scaler schedule --every '30 3 * * 1-5' --install
      scaler schedule --every weekly --user --install
      scaler schedule --every daily --cron >> /etc/cron.d/scaler   # then add a user field
    """
    plan = parse_every(every)
    command = [_scaler_executable(scaler_path), "rebake", *(rebake_args or DEFAULT_REBAKE_ARGS)]
    where = workdir.absolute()
    if as_cron:
        if install:
            raise click.UsageError(
                "--install writes systemd units; add the --cron line with crontab -e"
            )
        if env_file is None:
            # the same token file the systemd unit reads (cron knows no %h)
            env_file = (
                os.path.expanduser(USER_ENV_FILE.replace("%h", "~"))
                if user_units
                else SYSTEM_ENV_FILE
            )
        click.echo(render_cron_line(plan, command, workdir=where, env_file=env_file or None))
        return
    if env_file is None:
        env_file = USER_ENV_FILE if user_units else SYSTEM_ENV_FILE
    units = render_units(
        plan,
        command,
        workdir=where,
        name=name,
        random_delay=random_delay,
        env_file=env_file or None,
        user=user_units,
    )
    directory = unit_dir or default_unit_dir(user_units)
    if not install:
        click.echo(f"# {directory / units.service_name}\n{units.service}")
        click.echo(f"# {directory / units.timer_name}\n{units.timer}", nl=False)
        return
    service, timer = install_units(units, directory)
    click.echo(str(service))
    click.echo(str(timer))
    manager = "systemctl --user" if user_units else "systemctl"
    click.echo(
        f"installed; enable with: {manager} daemon-reload && "
        f"{manager} enable --now {units.timer_name}",
        err=True,
    )
