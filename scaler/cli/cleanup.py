"""`scaler cleanup`: find (and with --yes remove) what killed scaler runs left behind."""

from __future__ import annotations

from pathlib import Path

import click

from scaler.cleanup import DEFAULT_MIN_AGE, find_leftovers, remove_leftovers
from scaler.cloud import Cloud, endpoint_from, token_from_env


@click.command()
@click.option("--yes", is_flag=True, help="Remove what was found (default: only list it).")
@click.option(
    "-C",
    "--terraform-dir",
    "terraform_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Also look at this Terraform directory's rollout bookkeeping (repeatable).",
)
@click.option(
    "--min-age",
    type=float,
    default=DEFAULT_MIN_AGE,
    show_default=True,
    help="Seconds before a build droplet of a run this machine does not know counts as left "
    "(0: every one; another machine's bake may be at work).",
)
@click.option("--api-url", help="DigitalOcean API URL (default $DIGITALOCEAN_API_URL or DO's).")
@click.option("--no-cloud", is_flag=True, help="Only this machine's temp folders and records.")
@click.option(
    "--temp-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where scaler's runs kept their temp folders (default $TMPDIR and /tmp).",
)
def cleanup(
    yes: bool,
    terraform_dirs: tuple[Path, ...],
    min_age: float,
    api_url: str | None,
    no_cloud: bool,
    temp_dir: Path | None,
) -> None:
    """List what killed scaler runs left: build droplets, keys, snapshots of unfinished
    bakes, temp folders, stale rollout files. Only what scaler made (by run id) counts;
    your own droplets and snapshots never do. A dry run unless --yes.

    \b
    Examples:
      scaler cleanup                 # what would go
      scaler cleanup --yes -C terraform
    """
    cloud = None
    if not no_cloud:
        token = token_from_env()
        if not token:
            raise click.ClickException(
                "no DigitalOcean API token; set DIGITALOCEAN_TOKEN, or pass --no-cloud to look "
                "only at this machine"
            )
        cloud = Cloud(token, endpoint_from(api_url))
    found = find_leftovers(cloud, temp_dir=temp_dir, min_age=min_age, rollout_dirs=terraform_dirs)
    if not found:
        click.echo("nothing left behind")
        return
    removable = [f for f in found if f.remove is not None]
    for item in found:
        mark = "" if item.remove is not None else "  (kept: resume or remove it yourself)"
        click.echo(f"{item.describe()}{mark}")
    if not yes:
        if removable:
            click.echo(f"{len(removable)} to remove; run again with --yes to remove them", err=True)
        return
    failed = remove_leftovers(removable, lambda line: click.echo(line, err=True))
    if failed:
        raise click.ClickException(
            f"could not remove {len(failed)} of {len(removable)}: "
            + "; ".join(f"{item.kind} {item.ident}: {why}" for item, why in failed)
        )
    click.echo(f"removed {len(removable)}", err=True)
