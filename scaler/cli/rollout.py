"""`scaler rollout`: point image_slug at a snapshot and roll the web droplets onto it, guarded."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click

from scaler import health, workflow
from scaler.cli.options import rollout_options, stack_options, tfvars_files
from scaler.cli.rolevars import role_var_options, with_role_vars
from scaler.errors import ScalerError
from scaler.exitcodes import ExitCode, help_text
from scaler.rollout import (
    DEFAULT_API_BUDGET,
    DEFAULT_TARGET,
    PIN_VAR,
    Gate,
    HistoryEntry,
    PlanRefused,
    Prepared,
    RolloutError,
    RolloutResult,
    Settings,
    Strategy,
    parse_duration,
    parse_gate,
    read_history,
)
from scaler.tfvars import IMAGE_VAR, image_id_from
from scaler.workflow import bake_from_config, load_bake, open_cloud, stack_inventory


class _Reporter:
    """Progress lines on stderr with the time since start."""

    def __init__(self, quiet: bool) -> None:
        self.start = time.monotonic()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            click.echo(f"[{time.monotonic() - self.start:7.1f}s] {message}", err=True)


def _image_from(image: str | None, manifest: Path | None) -> str | None:
    if image is not None and manifest is not None:
        raise click.UsageError("give --image or --from-manifest, not both")
    if image is not None:
        return image_id_from(image) if image.replace(",", ":").count(":") else image
    if manifest is not None:
        from scaler.manifest import last_artifact

        return str(last_artifact(manifest).id)
    return None


def _bake(
    report: _Reporter,
    terraform_dir: Path,
    config_file: Path | None,
    extra_vars: tuple[str, ...],
    vault_password_files: tuple[Path, ...],
    terraform_bin: str | None,
) -> str:
    """`scaler bake` with the same config (scaler.toml's [bake]); the manifest gets the build."""
    loaded = load_bake(
        config_file,
        # never a bake of scaler's own bundled playbook that nobody asked for
        missing="no image to roll out and no bake settings to bake one: pass --image ID or "
        "--from-manifest manifest.json, or --bake-config scaler.toml (a [bake] table; none "
        "was found here, in a parent folder or in $SCALER_CONFIG)",
    )
    config = with_role_vars(loaded.config, extra_vars, vault_password_files)
    cloud = open_cloud(config, say=report)
    inventory = stack_inventory(
        state_path=config.state,
        terraform_dir=terraform_dir,
        engine=terraform_bin,
        say=report,
        warn=lambda text: click.echo(f"Warning: {text}", err=True),
    )
    report(f"baking a new image (config {loaded.path})")
    result = bake_from_config(config, cloud, inventory, say=report)
    report(f"baked snapshot {result.id} ({result.name}), recorded in {config.manifest}")
    return str(result.id)


EXIT_CODES = (
    ExitCode.DONE,
    ExitCode.ROLLED_BACK,
    ExitCode.NEEDS_PERSON,
    ExitCode.REFUSED,
    ExitCode.USAGE,
    ExitCode.ERROR,
    ExitCode.INTERRUPTED,
)


class _Refused(click.ClickException):
    """The guard refused the plan: `Error: refusing to roll out: ...`, exit 7."""

    exit_code = ExitCode.REFUSED


def _duration(_: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except RolloutError as err:
        raise click.BadParameter(str(err)) from None


def _gates(_: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[Gate, ...]:
    try:
        return tuple(parse_gate(v) for v in value)
    except RolloutError as err:
        raise click.BadParameter(str(err)) from None


def _check_combination(
    *,
    image: bool,
    resume: bool,
    abort: bool,
    undo: bool,
    history: bool,
    dry_run: bool,
    gates: bool,
    on_gate_failure: str | None,
    pause_after: str | None,
    strategy: str | None,
) -> None:
    """Options that cannot go together: a one-line usage error (exit 2)."""
    acts = [name for name, on in (("--resume", resume), ("--abort", abort), ("--undo", undo)) if on]
    if len(acts) > 1:
        raise click.UsageError(
            f"give one of --resume, --abort and --undo, not {' and '.join(acts)}"
        )
    if history and (acts or image or dry_run):
        given = [*acts, *(["--image"] if image else []), *(["--dry-run"] if dry_run else [])]
        raise click.UsageError(f"--history only lists the rollouts; drop {', '.join(given)}")
    if (abort or undo) and image:
        raise click.UsageError(
            f"{acts[0]} rolls back to the recorded previous image; drop --image/--from-manifest"
        )
    if on_gate_failure is not None and not gates:
        raise click.UsageError("--on-gate-failure needs at least one --gate PATH[=STATUS]")
    if pause_after is not None and strategy == "all":
        raise click.UsageError("--pause-after stops between batches; --strategy all has one")


def _render_history(entries: tuple[HistoryEntry, ...], where: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no rollouts recorded in {where}")
        return
    for entry in entries:
        when = datetime.fromtimestamp(entry.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        took = max(0.0, entry.ended - entry.started)
        click.echo(
            f"{when}  {entry.kind:<7}  {entry.from_image} -> {entry.to_image}  {entry.status}  "
            f"({entry.replaced} droplets, {took:.0f}s)"
        )


def _summary(prepared: Prepared) -> str:
    plan = prepared.plan
    lines = [
        f"Rollout of image {plan.target_image} (from {plan.previous_image}), "
        f"strategy {plan.strategy}:",
    ]
    for change in prepared.changes:
        lines.append(f"  {change.kind:8} {change.address}")
    if plan.strategy == "rolling":
        lines.append(
            f"  {len(plan.batches)} batches, at most {plan.max_unavailable} droplets "
            f"unavailable (floor {plan.floor} healthy behind the load balancer)"
            + (", canary first" if plan.canary else "")
        )
    if plan.strategy == "all" and len(plan.replacing) > 1:
        # scaler.rollout.surge: one apply would swap the balancer's droplets old for new at once
        lines.append(
            "  every droplet at once: behind a load balancer the new droplets come up beside "
            "the old ones, which serve until the new pass its check (with the API token; "
            "without it the site serves nothing for that long)"
        )
    for number, batch in enumerate(plan.batches, 1):
        lines.append(f"  batch {number}: {', '.join(batch)}")
    if plan.skipped:
        lines.append(f"  already on the image: {', '.join(plan.skipped)}")
    return "\n".join(lines)


def _render(result: RolloutResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(f"{result.status}: {result.message}")
    if result.before:
        after = {node.address: node for node in result.after}
        width = max(len(node.address) for node in result.before)
        click.echo(f"  {'target':<{width}}  before (droplet image)   after (droplet image)")
        for node in result.before:
            now = after.get(node.address)
            then = f"{node.droplet_id} {node.image}"
            shown = f"{now.droplet_id} {now.image}" if now else "(gone)"
            same = " (unchanged)" if now and now.droplet_id == node.droplet_id else ""
            click.echo(f"  {node.address:<{width}}  {then:<23}  {shown}{same}")
    for number, batch in enumerate(result.batches, 1):
        state = "healthy" if batch.healthy else "UNHEALTHY"
        click.echo(
            f"  batch {number}: {', '.join(batch.addresses)} -> droplets "
            f"{', '.join(batch.droplet_ids)} {state} ({batch.seconds:.1f}s)"
        )
    if result.min_healthy is not None:
        click.echo(
            f"  fewest healthy droplets seen behind the load balancer: {result.min_healthy} "
            f"(floor {result.floor})"
        )
    if result.api_requests is not None:
        click.echo(f"  API requests seen during the batches: {result.api_requests}")
    click.echo(f"  elapsed: {result.elapsed:.1f}s")


@click.command(epilog=f"Exit codes: {help_text(EXIT_CODES)}")
@click.option("--image", help="Snapshot id (or Packer artifact_id) to roll out; skips the bake.")
@click.option(
    "--from-manifest",
    "manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Roll out the last build in this Packer manifest.json.",
)
@stack_options
@click.option(
    "--target",
    "targets",
    multiple=True,
    help=f"Resource or instance to roll (repeatable; default {DEFAULT_TARGET}).",
)
@rollout_options
@click.option("--no-rollback", is_flag=True, help="On failure leave things as they are.")
@click.option("--resume", is_flag=True, help="Continue the interrupted or paused rollout.")
@click.option(
    "--abort",
    is_flag=True,
    help="Roll the unfinished (paused, failed, interrupted) rollout back to its previous "
    "image, in the same guarded, health-checked batches.",
)
@click.option(
    "--undo",
    is_flag=True,
    help="Roll the last finished rollout back to the image it replaced (see --history), in "
    "the same guarded batches.",
)
@click.option(
    "--history",
    is_flag=True,
    help="List the recorded rollouts (when, from which image to which, how each ended).",
)
@click.option(
    "--drain",
    metavar="DURATION",
    callback=_duration,
    help="How long a batch's old droplets are out of the load balancer before their apply "
    "destroys them, so requests in flight finish [default: the balancer's "
    "http_idle_timeout_seconds, 60s on DigitalOcean; 5s on scaler's local cloud, none "
    "where its droplets are directories].",
)
@click.option(
    "--min-healthy-time",
    metavar="DURATION",
    default="0s",
    show_default=True,
    callback=_duration,
    help="Warm-up: a new droplet must pass every check this long in a row before it counts.",
)
@click.option(
    "--pause-after",
    metavar="N|N%",
    help="Stop after batch N (or once N% of the droplets are done): status paused, exit 5; "
    "then --resume or --abort.",
)
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="PATH[=STATUS]",
    callback=_gates,
    help="An HTTP check each new droplet must pass on the health check's port, beyond the "
    "check itself (repeatable; STATUS default any 2xx), e.g. /wp-login.php or /wp-json/=200.",
)
@click.option(
    "--on-gate-failure",
    type=click.Choice(["abort", "pause"]),
    help="When a --gate fails: abort (roll back; the default) or pause (exit 5).",
)
@click.option("--dry-run", is_flag=True, help="Show every batch's plan; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a timeline of the rollout here: rollout.png (healthy droplets behind the "
    "balancer, batches, API requests a minute against the limit) and rollout.html around it.",
)
@click.option("--parallelism", type=int, help="Terraform -parallelism.")
@click.option(
    "--load-balancer",
    help="Address of the load balancer whose health check to use (default: the only one).",
)
@click.option(
    "--pin-var",
    default=PIN_VAR,
    show_default=True,
    help="Map variable (count index -> image) pinning droplets not yet rolled; rolling needs it.",
)
@click.option(
    "--api-budget",
    type=click.IntRange(min=0),
    default=DEFAULT_API_BUDGET,
    show_default=True,
    help="DigitalOcean API requests per minute to stay under: batches wait for room (0: off).",
)
@click.option(
    "--bake-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Without --image: bake first with this config's [bake] table (default: "
    "$SCALER_CONFIG, else scaler.toml here or in a parent folder).",
)
@click.option(
    "--probe-ssh-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Where this machine cannot reach a droplet's private address, check it through SSH "
    "to the droplet itself with this private key.",
)
@click.option(
    "--probe-ssh-user", default="root", show_default=True, help="The user of --probe-ssh-key."
)
@role_var_options
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def rollout(
    image: str | None,
    manifest: Path | None,
    terraform_dir: Path,
    tfvars: tuple[Path, ...],
    old_tfvars: tuple[Path, ...],
    backend_config: tuple[str, ...],
    terraform_bin: str | None,
    targets: tuple[str, ...],
    strategy: Strategy | None,
    batch_size: str,
    max_unavailable: str | None,
    canary: bool,
    deadline: str | None,
    no_rollback: bool,
    resume: bool,
    abort: bool,
    undo: bool,
    history: bool,
    drain: float | None,
    min_healthy_time: float,
    pause_after: str | None,
    gates: tuple[Gate, ...],
    on_gate_failure: Literal["abort", "pause"] | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    report_dir: Path | None,
    workspace: str | None,
    lock_timeout: str,
    parallelism: int | None,
    load_balancer: str | None,
    health_interval: float | None,
    health_timeout: str,
    health_grace: str,
    port_map: str | None,
    pin_var: str,
    api_budget: int,
    probe_ssh_key: Path | None,
    probe_ssh_user: str,
    bake_config: Path | None,
    extra_vars: tuple[str, ...],
    vault_password_files: tuple[Path, ...],
    quiet: bool,
) -> None:
    """Roll the wp_node droplets onto a new image, in health-checked batches.

    Without --image, --from-manifest or --resume it first bakes a snapshot as
    `scaler bake` would (./scaler.toml or --bake-config) and rolls that out.
    Sets image_slug in terraform.tfvars, plans with Terraform, refuses any plan
    that would replace or delete anything but the targets (the load balancer
    may only be updated in place), asks, then replaces the droplets batch by
    batch: each new droplet must pass the load balancer's own health check
    before the next batch. A failure puts the old image back and replaces the
    droplets again (unless --no-rollback). Ctrl-C stops after the current step;
    --resume continues. Against scaler's local cloud (an API end point that
    says it is one) it uses the local provider.

    Rolling batches need a map variable in the stack, wp_node_images (--pin-var),
    which scaler sets per batch to pin the droplets not yet rolled to the image
    they run; the droplets must read it (scaler's terraform/ does):

    \b
      variable "wp_node_images" {
        type    = map(string)
        default = {}
      }
      # in resource "digitalocean_droplet" "wp_node" (count = ...):
      image = lookup(var.wp_node_images, tostring(count.index), var.image_slug)
      # or, with for_each = ...:
      image = lookup(var.wp_node_images, each.key, var.image_slug)

    A stack without it may instead have `lifecycle { ignore_changes =
    [image] }` on the droplets: each batch is then replaced with -replace.
    Without either only --strategy all works. Who is behind the balancer
    (droplet_ids, droplet_tag, or one outside the stack that selects the
    droplets by tag) is read from the API before every batch. Terraform runs with every --tfvars
    file in order (-var-file; image_slug is written into the one that sets it),
    --lock-timeout, --parallelism and --workspace; init runs when the data
    directory (TF_DATA_DIR, default .terraform) is missing, or with
    --backend-config. --terraform-bin picks terraform, OpenTofu's tofu (told
    apart by its `version`) or `embedded`; by default the terraform on PATH,
    then tofu, then scaler's embedded engine.

    Controls. Before a batch's apply destroys its old droplets they leave the
    load balancer (removed from its droplet_ids, or untagged for a droplet_tag
    balancer) and drain for --drain. A new droplet counts once it passed the
    balancer's check, stayed healthy --min-healthy-time and passed every --gate.
    --pause-after N stops after batch N (status paused); --resume goes on and
    --abort rolls back through the same guarded batches; --undo does that for
    the last finished rollout. Every run is recorded: --history lists them.
    After any of these a plain `terraform plan` shows no changes.

    \b
    Examples:
      WELP_DB_PASSWORD=... scaler rollout --yes        # bake, then roll out
      scaler rollout --image 170000001 --canary --yes
      scaler rollout --image 170000001 --tfvars common.tfvars --tfvars prod.tfvars
      scaler rollout --image 170000001 --backend-config conn_str=postgres://db/tf
      scaler rollout --from-manifest manifest.json --batch-size 2 --dry-run
      scaler rollout --resume --yes
      scaler rollout --image 170000001 --pause-after 1 --gate /wp-login.php --yes
      scaler rollout --abort --yes
      scaler rollout --history
    """
    _check_combination(
        image=image is not None or manifest is not None,
        resume=resume,
        abort=abort,
        undo=undo,
        history=history,
        dry_run=dry_run,
        gates=bool(gates),
        on_gate_failure=on_gate_failure,
        pause_after=pause_after,
        strategy=strategy,
    )
    report = _Reporter(quiet)
    chosen = _image_from(image, manifest)
    if not terraform_dir.is_dir():
        raise ScalerError(f"no directory {terraform_dir}; pass --terraform-dir DIR")
    if history:
        where = Settings(terraform_dir=terraform_dir).history_file
        _render_history(read_history(where), where, as_json)
        return
    if chosen is None and not (resume or abort or undo):
        chosen = _bake(
            report, terraform_dir, bake_config, extra_vars, vault_password_files, terraform_bin
        )
    settings = Settings(
        terraform_dir=terraform_dir,
        var_files=tfvars_files(tfvars, old_tfvars),
        backend_config=backend_config,
        engine=terraform_bin,
        image_var=IMAGE_VAR,
        targets=targets or (DEFAULT_TARGET,),
        pin_var=pin_var,
        load_balancer=load_balancer,
        workspace=workspace,
        lock_timeout=lock_timeout,
        parallelism=parallelism,
        health_interval=health_interval,
        health_timeout=parse_duration(health_timeout),
        health_grace=parse_duration(health_grace),
        port_map=health.port_map_from(port_map),
        deadline=parse_duration(deadline) if deadline else None,
        # an abort that fails is left for a person: rolling "back" would roll forward again
        rollback=not (no_rollback or abort),
        probe_ssh=(probe_ssh_user, probe_ssh_key) if probe_ssh_key else None,
        drain=drain,
        min_healthy_time=min_healthy_time or 0.0,
        gates=gates,
        on_gate_failure=on_gate_failure or "abort",
        pause_after=pause_after,
    )
    request = workflow.RolloutRequest(
        image=chosen,
        resume=resume,
        abort=abort,
        undo=undo,
        strategy=strategy,
        batch_size=batch_size,
        max_unavailable=max_unavailable,
        canary=canary,
        dry_run=dry_run,
        api_budget=api_budget,
    )

    def confirm(prepared: Prepared) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise ScalerError(
                "refusing to roll out without confirmation: stdin is not a terminal; pass --yes"
            )
        question = {"abort": "Roll back?", "undo": "Undo?"}.get(prepared.kind, "Roll out?")
        return click.confirm(question, err=True)

    try:
        run = workflow.run_rollout(
            settings,
            request,
            confirm=confirm,
            show=lambda prepared: click.echo(_summary(prepared), err=not dry_run),
            say=report,
        )
    except PlanRefused as err:
        raise _Refused(str(err)) from err
    if run.nothing_to_do:
        click.echo(
            f"nothing to do: every target already runs image {run.prepared.plan.target_image}"
        )
        return
    if run.result is None:
        for batch, changes in run.batch_plans:
            shown = ", ".join(f"{c.kind} {c.address}" for c in changes)
            click.echo(f"  plan up to {batch[-1]}: {shown}")
        click.echo("dry run: nothing was changed")
        return
    result = run.result
    if report_dir is not None:
        from scaler.report import timeline_of, write_report

        # the result's times count from the start of its batches, `elapsed` ago
        started = time.time() - result.elapsed
        png, page = write_report(timeline_of(result, started), report_dir)
        report(f"report: {page} ({png.name})")
    _render(result, as_json)
    if not result.ok and result.status != "paused":
        click.echo(f"Error: rollout {result.status}: {result.message}", err=True)
    if result.exit_code != ExitCode.DONE:
        raise click.exceptions.Exit(int(result.exit_code))
