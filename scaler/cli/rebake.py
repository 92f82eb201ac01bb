"""`scaler rebake`: bake a fresh snapshot and roll it out when one is due (for schedulers)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from scaler import health
from scaler.cli.options import api_budget_option, rollout_options, stack_options, tfvars_files
from scaler.cli.rolevars import role_var_options, with_role_vars
from scaler.config import find_config_file
from scaler.errors import ScalerError
from scaler.events import LOG_FORMATS, EventLog, LogFormat, known_secrets, scrub
from scaler.notify import NotifyError, check_url, post_summary
from scaler.rebake import (
    EXIT_CODE_HELP,
    RebakeOptions,
    Site,
    SiteResult,
    load_sites,
    rebake_site,
    summary_fields,
    summary_text,
    worst_exit,
)
from scaler.rollout import parse_duration
from scaler.snapshots import parse_age
from scaler.workflow import StopFlag, load_bake, open_cloud


def _duration(text: str | None, option: str) -> float | None:
    return parse_duration(text) if text else None


@click.command(epilog=f"Exit codes: {EXIT_CODE_HELP}")
@click.option("--check", is_flag=True, help="Only say whether a rebake is due (exit 6 if so).")
@click.option("--force", is_flag=True, help="Rebake even if nothing says it is due.")
@click.option("--max-age", help="Due when the newest snapshot is older than this (7d, 24h).")
@click.option("--all", "all_sites", is_flag=True, help="Every [[sites]] entry of scaler.toml.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="scaler.toml ([bake] and [[sites]]; default $SCALER_CONFIG, else scaler.toml here "
    "or in a parent folder).",
)
@click.option(
    "--packer-template",
    "template",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Packer template (wp-node.json) to take the bake settings from.",
)
@click.option(
    "--packer-var-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Packer template's var file (variables.json); --tfvars is Terraform's.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The manifest.json the last bake wrote (default: the bake settings').",
)
@stack_options
@rollout_options
@api_budget_option
@click.option(
    "--prune-keep",
    type=click.IntRange(min=0),
    metavar="N",
    help="After the run (unless it failed): delete old snapshots as "
    "`scaler snapshots prune --keep N --yes` would.",
)
@click.option("--prune-older-than", help="With --prune-keep: delete only those older (30d).")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Events on stderr: text, or one JSON object per line.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--notify-url", help="POST a JSON summary ({'text': ...}) here when done.")
@role_var_options
@click.pass_context
def rebake(
    ctx: click.Context,
    check: bool,
    force: bool,
    max_age: str | None,
    all_sites: bool,
    config_path: Path | None,
    template: Path | None,
    packer_var_file: Path | None,
    terraform_dir: Path,
    workspace: str | None,
    tfvars: tuple[Path, ...],
    old_tfvars: tuple[Path, ...],
    backend_config: tuple[str, ...],
    terraform_bin: str | None,
    manifest: Path | None,
    strategy: str | None,
    batch_size: str,
    max_unavailable: str | None,
    canary: bool,
    deadline: str | None,
    health_interval: float | None,
    health_timeout: str,
    health_grace: str,
    lock_timeout: str,
    port_map: str | None,
    api_budget: int,
    prune_keep: int | None,
    prune_older_than: str | None,
    log_format: LogFormat,
    as_json: bool,
    notify_url: str | None,
    extra_vars: tuple[str, ...],
    vault_password_files: tuple[Path, ...],
) -> None:
    """Bake and roll out a fresh snapshot when one is due; say why.

    Due when the base image changed (the API gives another id for the slug
    than the last bake recorded), the newest snapshot is older than
    --max-age, or the provisioning (playbook, roles, cloud-config) changed.
    When due it bakes, then rolls out with the rollout's guard and API
    budget (--api-budget), without asking. One run at a time per Terraform
    directory: a second is refused, a lock left by a dead process is taken
    over. With --all each site of
    scaler.toml runs in turn under its own lock; one failing does not stop
    the others. With --prune-keep it then deletes old snapshots the site no
    longer uses (never the one in use, nor the newest N). The API token is
    never printed or logged.

    \b
    Examples:
      scaler rebake --check --max-age 7d
      scaler rebake --max-age 7d --log-format json --notify-url https://hooks.example/x
      scaler rebake --all --config /srv/scaler.toml --prune-keep 3
      scaler rebake --packer-template wp-node.json --packer-var-file variables.json
      scaler rebake --max-age 7d --tfvars common.tfvars --tfvars prod.tfvars
    """
    if notify_url:
        check_url(notify_url)
    if prune_older_than and prune_keep is None:
        raise click.UsageError("--prune-older-than needs --prune-keep N")
    loaded = load_bake(
        config_path,
        template,
        var_files=[packer_var_file] if packer_var_file else [],
        missing="no bake settings: pass --packer-template wp-node.json --packer-var-file "
        "variables.json (your Packer files), or --config scaler.toml (a [bake] table; none was "
        "found here, in a parent folder or in $SCALER_CONFIG)",
    )
    loaded = replace(loaded, config=with_role_vars(loaded.config, extra_vars, vault_password_files))
    secrets = tuple(s for s in (*known_secrets(), loaded.token) if s)
    log = EventLog(log_format, secrets=secrets)
    if all_sites:
        if workspace or tfvars or old_tfvars or manifest:
            raise click.UsageError(
                "--workspace, --tfvars and --manifest are per site; "
                "set them in [[sites]] with --all"
            )
        found = find_config_file(config_path)
        if found is None:
            raise ScalerError("--all needs a scaler.toml with [[sites]]; pass --config PATH")
        sites = load_sites(found)
    else:
        files = tfvars_files(tfvars, old_tfvars)
        sites = (Site(str(terraform_dir), terraform_dir, workspace, None, manifest, files),)
    options = RebakeOptions(
        max_age=parse_age(max_age, "--max-age") if max_age else None,
        force=force,
        check=check,
        strategy="all" if strategy == "all" else "rolling" if strategy else None,
        batch_size=batch_size,
        max_unavailable=max_unavailable,
        canary=canary,
        health_interval=health_interval,
        health_timeout=parse_duration(health_timeout),
        health_grace=parse_duration(health_grace),
        lock_timeout=lock_timeout,
        deadline=_duration(deadline, "--deadline"),
        port_map=health.port_map_from(port_map),
        api_budget=api_budget,
        backend_config=backend_config,
        engine=terraform_bin,
        prune_keep=prune_keep,
        prune_sites=sites,
        prune_older_than=(
            parse_age(prune_older_than, "--prune-older-than") if prune_older_than else None
        ),
    )
    cloud = open_cloud(loaded.config, loaded.token)
    stop = StopFlag(
        lambda name: log.event("stop", "info", f"{name}: stopping after the current step")
    )
    results: list[SiteResult] = []
    with stop.installed():
        for site in sites:
            if stop.requested or (results and results[-1].stopped):
                results.append(SiteResult(site.name, "error", "not started: the run was stopped"))
                continue
            results.append(rebake_site(site, loaded.config, cloud, options, log, should_stop=stop))
    command = "rebake --check" if check else "rebake"
    code = worst_exit(results)
    log.event(
        "finish",
        "ok" if code in (0, 3, 6) else "failed",
        summary_text(command, results),
        exit_code=code,
    )
    if as_json:
        click.echo(json.dumps(scrub(summary_fields(command, results), secrets), indent=2))
    else:
        for result in results:
            # Stdout ends up in the same journal and CI logs as stderr: scrubbed alike.
            click.echo(scrub(f"{result.site}: {result.outcome}: {result.message}", secrets))
    if notify_url:
        try:
            post_summary(
                notify_url,
                summary_text(command, results),
                summary_fields(command, results),
                secrets=secrets,
            )
            log.event("notify", "ok")
        except NotifyError as err:
            # The run's outcome stands; a dead webhook must not turn a rollout into a failure.
            log.event("notify", "failed", str(err))
    ctx.exit(code)
