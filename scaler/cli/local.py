"""`scaler local up|down|status`: run the built-in local cloud (a DigitalOcean API on loopback)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from scaler.local import api, netclaim
from scaler.local.droplets import DropletKind, prepare_base_image
from scaler.local.droplets import unavailable as real_droplets_unavailable

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=api.DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the local cloud keeps its droplets, images and server files.",
)


@click.group()
def local() -> None:
    """Run the local cloud: DigitalOcean's API on 127.0.0.1, no account needed.

    \b
    Examples:
      eval "$(scaler local up)"       # start it in the background, export its environment
      scaler local status             # is it running, and what does it hold
      scaler local down               # stop it; droplets and images stay for the next `up`
    """


@local.command()
@_STATE_DIR
@click.option(
    "--port", type=int, default=api.DEFAULT_PORT, show_default=True, help="API port (0: any free)."
)
@click.option(
    "--network",
    type=click.IntRange(1, 254),
    default=netclaim.DEFAULT_NETWORK,
    show_default=True,
    help="N in the droplet addresses 127.N.1.k (public) and 127.N.2.k (private); one cloud per N.",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds every droplet boot and action takes (default: boot 2, actions 1, snapshot 2).",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    default=250,
    show_default=True,
    help="API requests a minute per token before 429 (DigitalOcean's own budget).",
)
@click.option(
    "--droplets",
    type=click.Choice(["auto", "real", "directory"]),
    default="auto",
    show_default=True,
    help="real: each droplet a Linux host of its own (needs root; provisioning needs these); "
    "directory: fast stand-ins nothing can provision; auto: real where this machine can.",
)
@click.option(
    "--timing",
    type=click.Choice(api.TIMINGS),
    default="default",
    show_default=True,
    help="realistic: DigitalOcean's pace (droplets active after ~35 s, snapshots minutes per "
    "GB, load balancers ~1 min, slow deletes, short lags after actions); --delay overrides "
    "its boot and action times.",
)
@click.option(
    "--spec",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SCALER_LOCAL_SPEC",
    default=None,
    help="DigitalOcean's OpenAPI file (DigitalOcean-public.v2.yaml, refs inlined): every "
    "request body and query of an operation it describes is checked, and refused as "
    "DigitalOcean refuses it [env: SCALER_LOCAL_SPEC].",
)
@click.option("--foreground", is_flag=True, help="Serve in this terminal until Ctrl-C.")
def up(
    state_dir: Path,
    port: int,
    network: int,
    delay: float | None,
    rate_limit: int,
    droplets: DropletKind,
    timing: str,
    spec: Path | None,
    foreground: bool,
) -> None:
    """Start the local cloud and print `export` lines for its environment.

    \b
    Examples:
      eval "$(scaler local up)"              # background; export its environment
      scaler local up --foreground --port 0  # in this terminal, any free port
      scaler local up --timing realistic     # at DigitalOcean's pace (slow benches)

    The lines set DIGITALOCEAN_TOKEN, DIGITALOCEAN_ACCESS_TOKEN, DIGITALOCEAN_END_POINT
    (python-digitalocean), DIGITALOCEAN_API_URL (Packer, Terraform) and SCALER_LOCAL_URL.
    """
    if foreground:
        found = api.running(state_dir)
        if found is not None:
            _already(found)
            return

        def ready(info: api.ServerInfo) -> None:
            _print_env(info)
            click.echo(f"local cloud serving at {info.url} (Ctrl-C stops it)", err=True)

        api.serve(
            state_dir,
            port=port,
            network=network,
            ready=ready,
            delays=api.timing_delays(timing, delay),
            rate_limit_per_minute=rate_limit,
            droplets=droplets,
            spec=spec,
        )
        click.echo("local cloud stopped; its state stays in " + str(state_dir), err=True)
        return
    if droplets != "directory" and real_droplets_unavailable() is None:
        # a first start builds the base image (about a minute): here, with progress, not in
        # the background server while `up` waits for it
        prepare_base_image(lambda line: click.echo(line, err=True))
    info, was_running = api.launch(
        state_dir,
        port=port,
        network=network,
        delay=delay,
        rate_limit_per_minute=rate_limit,
        droplets=droplets,
        timing=timing,
        spec=spec,
    )
    if was_running:
        _already(info)
        return
    _print_env(info)
    again = "scaler local up"
    if state_dir != api.DEFAULT_STATE_DIR:
        again += f" --state-dir {shlex.quote(str(state_dir))}"
    click.echo(
        f"local cloud running at {info.url} (pid {info.pid}, network {info.network}, "
        f'state {state_dir}); use it with: eval "$({again})"',
        err=True,
    )
    _say_droplets(api.health(state_dir))


def _say_droplets(health: dict[str, object] | None) -> None:
    kind = health.get("droplet_kind") if health else None
    if kind == "real":
        click.echo(
            "droplets: real (each a Linux host of its own: namespaces, root, sshd)", err=True
        )
    elif kind == "directory":
        why = health.get("droplet_kind_note") if health else None
        click.echo(
            f"droplets: directory ({why or 'asked for'}); scaler bake needs real droplets",
            err=True,
        )


@local.command()
@_STATE_DIR
def down(state_dir: Path) -> None:
    """Stop the local cloud; its droplets, images and keys stay for the next `up`.

    \b
    Example:
      scaler local down --state-dir .scaler/local
    """
    info = api.shutdown(state_dir)
    if info is None:
        click.echo(f"no local cloud is running for {state_dir}; nothing to stop", err=True)
        return
    click.echo(
        f"local cloud stopped (pid {info.pid}, {info.url}); state kept in {state_dir}", err=True
    )


@local.command()
@_STATE_DIR
def status(state_dir: Path) -> None:
    """Say whether the local cloud runs and what it holds (exit 3 when it is not running).

    \b
    Example:
      scaler local status || eval "$(scaler local up)"
    """
    health = api.health(state_dir)
    if health is None:
        click.echo(f"not running (state dir {state_dir}); start it with: scaler local up")
        sys.exit(3)
    counts = ", ".join(
        f"{health[k]} {k.replace('_', ' ')}"
        for k in ("droplets", "images", "ssh_keys", "load_balancers", "floating_ips", "tags")
    )
    click.echo(f"running at {health['url']} (pid {health['pid']}, network {health['network']})")
    click.echo(f"holds {counts}")
    click.echo(f"droplets: {health.get('droplet_kind', 'directory')}")


@local.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "-C",
    "--chdir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("terraform"),
    show_default=True,
    help="The Terraform configuration to run in.",
)
@_STATE_DIR
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def terraform(directory: Path, state_dir: Path, args: tuple[str, ...]) -> None:
    """Run Terraform against the running local cloud, its provider hooked in.

    Any Terraform command works (`init`, `plan`, `apply`, `destroy`, `state`, ...): scaler
    serves the local DigitalOcean provider to it and uses the `terraform` on PATH or, without
    one, the embedded engine (SCALER_TERRAFORM=embedded|PATH chooses).

    \b
    Examples:
      scaler local terraform -- init
      scaler local terraform -C terraform -- apply -auto-approve
      scaler local terraform -- destroy -auto-approve
    """
    from scaler import terraform as runner  # imports python-terraform: only on this branch

    info = api.running(state_dir)
    if info is None:
        raise api.LocalCloudError(
            f"no local cloud is running for {state_dir}; start it with: scaler local up"
        )
    with runner.local_provider(info.env()) as env:
        code = runner.run_attached(directory, args, env)
    sys.exit(code)


def _print_env(info: api.ServerInfo) -> None:
    for line in api.iter_env_lines(info.env()):
        click.echo(line)


def _already(info: api.ServerInfo) -> None:
    click.echo(f"local cloud already running at {info.url} (pid {info.pid})", err=True)
    _print_env(info)
