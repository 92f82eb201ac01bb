"""Scheduled rebakes: decide whether a fresh snapshot is due, then bake and roll it out.

A rebake is due when the base image changed (the API now gives another id for the slug than the
one the last bake recorded in the manifest's custom_data, or the slug itself changed), when the
newest baked snapshot of the project is older than --max-age, or when the provisioning changed
(the sha256 of playbook, roles and cloud-config differs from the one recorded with the last
bake). `decide_rebake` is the pure decision over gathered `RebakeFacts`; `gather_facts` asks the
manifest, the files and the API; `rebake_site` holds the site's lock, bakes and rolls out.

Exit codes (for schedulers; `worst_exit` combines sites):
  0 nothing due (or, with --check, not due)    3 rolled out: every droplet on the new snapshot
  1 error, nothing changed on the site         4 failed and rolled back: the site runs as before
  2 bad command line                           5 failed and needs a person (see the message)
  6 due (only with --check)
"""

from __future__ import annotations

import contextlib
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from scaler import bake as bake_mod
from scaler import lock, workflow
from scaler import rollout as rollout_mod
from scaler import snapshots as snapshots_mod
from scaler.cloud import Cloud, NotFound
from scaler.config import BakeConfig
from scaler.errors import ScalerError
from scaler.events import EventLog
from scaler.manifest import Artifact, ManifestError, last_artifact
from scaler.snapshots import (
    Snapshot,
    format_age,
    list_snapshots,
    parse_time,
    project_snapshots,
)
from scaler.state import parse_state

ReasonCode = Literal["forced", "no-snapshot", "base-image", "max-age", "provisioning"]
Outcome = Literal[
    "not-due", "due", "rolled-out", "unchanged", "error", "rolled-back", "needs-person"
]

NOTHING_DUE = 0
ERROR = 1
USAGE = 2
ROLLED_OUT = 3
ROLLED_BACK = 4
NEEDS_PERSON = 5
DUE = 6

EXIT_CODES: dict[Outcome, int] = {
    "not-due": NOTHING_DUE,
    "unchanged": NOTHING_DUE,
    "due": DUE,
    "rolled-out": ROLLED_OUT,
    "error": ERROR,
    "rolled-back": ROLLED_BACK,
    "needs-person": NEEDS_PERSON,
}
# Worst last: `rebake --all` exits with the worst site's code.
_SEVERITY = (NOTHING_DUE, DUE, ROLLED_OUT, ERROR, ROLLED_BACK, NEEDS_PERSON)

EXIT_CODE_HELP = (
    "0 nothing due; 3 rolled out; 1 error, nothing changed; 2 bad command line; "
    "4 failed and rolled back (the site runs as before); 5 failed and needs a person; "
    "6 due (--check only). With --all: the worst site's code, worst last: 0, 6, 3, 1, 4, 5."
)


class RebakeError(ScalerError):
    """A rebake cannot be decided or run."""


# --- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """Why a rebake is due: a code for machines and a sentence for people."""

    code: ReasonCode
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RebakeDecision:
    """Whether a rebake is due, why, and what could not be told."""

    due: bool
    reasons: tuple[Reason, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: `due: why; why` or `not due`."""
        if not self.due:
            return "not due"
        return "due: " + self.why()

    def why(self) -> str:
        """The reasons, without the verdict (the outcome already says due or not due)."""
        return "; ".join(str(r) for r in self.reasons) or "nothing says a rebake is due"


@dataclass(frozen=True)
class RebakeFacts:
    """What the decision needs, gathered from the manifest, the files and the API."""

    project: str
    base_image: str
    base_image_id: int | None
    provisioning_sha256: str
    last_bake: Artifact | None = None
    newest_snapshot: Snapshot | None = None
    base_image_created_at: datetime | None = None

    @property
    def baked_base_image(self) -> str | None:
        """The base image slug the last bake started from."""
        value = self.last_bake.custom_data.get("base_image") if self.last_bake else None
        return str(value) if value not in (None, "") else None

    @property
    def baked_base_image_id(self) -> int | None:
        """The id behind the base image slug when the last bake ran, if it was recorded."""
        value = self.last_bake.custom_data.get("base_image_id") if self.last_bake else None
        try:
            return int(value) if value is not None and not isinstance(value, bool) else None
        except (TypeError, ValueError):
            return None

    @property
    def baked_provisioning_sha256(self) -> str | None:
        """The provisioning hash recorded with the last bake, if any."""
        value = self.last_bake.custom_data.get("provisioning_sha256") if self.last_bake else None
        return str(value) if value else None


def decide_rebake(
    facts: RebakeFacts,
    *,
    max_age: timedelta | None,
    now: datetime,
    force: bool = False,
) -> RebakeDecision:
    """Whether a rebake is due, with every reason that applies (pure)."""
    reasons: list[Reason] = []
    notes: list[str] = []
    if force:
        reasons.append(Reason("forced", "--force was given"))
    if facts.last_bake is None and facts.newest_snapshot is None:
        reasons.append(Reason("no-snapshot", f"no baked snapshot of {facts.project} yet"))
    if facts.last_bake is not None:
        baked_slug, baked_id = facts.baked_base_image, facts.baked_base_image_id
        if baked_slug is not None and baked_slug != facts.base_image:
            reasons.append(
                Reason(
                    "base-image",
                    f"the base image is now {facts.base_image} "
                    f"(the last bake started from {baked_slug})",
                )
            )
        elif baked_id is not None and facts.base_image_id is not None:
            if baked_id != facts.base_image_id:
                reasons.append(
                    Reason(
                        "base-image",
                        f"the base image {facts.base_image} is now image {facts.base_image_id} "
                        f"(the last bake used {baked_id})",
                    )
                )
        elif facts.base_image_created_at is not None and facts.last_bake.build_time > 0:
            # No id recorded (a plain Packer manifest): an image published after the bake is new.
            baked_at = datetime.fromtimestamp(facts.last_bake.build_time, UTC)
            if facts.base_image_created_at > baked_at:
                reasons.append(
                    Reason(
                        "base-image",
                        f"the base image {facts.base_image} (image {facts.base_image_id}) was "
                        f"published {_day(facts.base_image_created_at)}, after the last bake "
                        f"({_day(baked_at)})",
                    )
                )
        else:
            notes.append(
                f"the manifest records no base image id for snapshot {facts.last_bake.id}; "
                f"cannot tell whether {facts.base_image} changed"
            )
        baked_sha = facts.baked_provisioning_sha256
        if baked_sha is None:
            notes.append(
                f"the manifest records no provisioning hash for snapshot {facts.last_bake.id}; "
                "cannot tell whether the provisioning changed"
            )
        elif baked_sha != facts.provisioning_sha256:
            reasons.append(
                Reason(
                    "provisioning",
                    f"the provisioning changed (sha256 {facts.provisioning_sha256[:12]}, "
                    f"the last bake had {baked_sha[:12]})",
                )
            )
    if max_age is not None:
        newest = facts.newest_snapshot
        if newest is not None:
            age = newest.age(now)
            if age > max_age:
                reasons.append(
                    Reason(
                        "max-age",
                        f"the newest snapshot {newest.name} ({newest.id}) is {format_age(age)} "
                        f"old, more than --max-age {format_age(max_age)}",
                    )
                )
        elif facts.last_bake is not None:
            reasons.append(
                Reason(
                    "max-age",
                    f"no snapshot of {facts.project} is left in the account "
                    f"(the manifest names {facts.last_bake.id})",
                )
            )
    return RebakeDecision(bool(reasons), tuple(reasons), tuple(notes))


# --- gathering the facts -----------------------------------------------------------------------


def provisioning_sha256(config: BakeConfig) -> str:
    """The provisioning hash exactly as the bake records it (scaler.bake.provisioning_hash)."""
    return bake_mod.config_provisioning_hash(config)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def base_image_now(cloud: Cloud, image: str) -> tuple[int, datetime | None]:
    """The id the API gives for the base image slug now, and when that image was published."""
    if image.isdigit():
        return int(image), None  # an image id names one image forever
    try:
        data = cloud.request("GET", f"images/{image}")
    except NotFound:
        raise RebakeError(
            f"the base image {image!r} does not exist in the API; check `image` in the "
            "bake settings"
        ) from None
    raw = data["image"]
    created = raw.get("created_at")
    return int(raw["id"]), parse_time(str(created)) if created else None


def gather_facts(config: BakeConfig, cloud: Cloud, manifest: Path | None = None) -> RebakeFacts:
    """Ask the manifest, the provisioning files and the API what the decision needs."""
    path = manifest or config.manifest
    try:
        last: Artifact | None = last_artifact(path)
    except ManifestError:
        if Path(path).is_file():
            raise  # a manifest that exists but is broken is worth stopping for
        last = None
    mine = project_snapshots(list_snapshots(cloud), config.project)
    base_id, base_created = base_image_now(cloud, config.image)
    return RebakeFacts(
        project=config.project,
        base_image=config.image,
        base_image_id=base_id,
        base_image_created_at=base_created,
        provisioning_sha256=provisioning_sha256(config),
        last_bake=last,
        newest_snapshot=mine[0] if mine else None,
    )


# --- sites -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One Terraform directory (and workspace) that rebakes roll out to."""

    name: str
    terraform_dir: Path
    workspace: str | None = None
    var_file: Path | None = None
    manifest: Path | None = None
    # Every tfvars file, in order (-var-file each); image_slug goes into the one that sets it.
    tfvars: tuple[Path, ...] = ()


def load_sites(path: Path) -> tuple[Site, ...]:
    """The `[[sites]]` tables of a scaler.toml (name, terraform_dir, workspace, ...)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RebakeError(f"no config file {path}; --all reads its [[sites]]") from None
    except tomllib.TOMLDecodeError as err:
        raise RebakeError(f"{path} is not valid TOML ({err}); fix it") from None
    tables = raw.get("sites")
    if not isinstance(tables, list) or not tables:
        raise RebakeError(
            f"{path} names no sites; add [[sites]] tables with name and terraform_dir, "
            "or leave out --all"
        )
    base = Path(path).parent
    known = {"name", "terraform_dir", "workspace", "tfvars", "var_file", "manifest"}
    sites: list[Site] = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict) or "terraform_dir" not in table:
            raise RebakeError(f"{path}: site {number} has no terraform_dir")
        unknown = set(table) - known
        if unknown:
            raise RebakeError(
                f"{path}: site {number} has unknown keys {sorted(unknown)} "
                f"(have: {', '.join(sorted(known))})"
            )

        def rel(key: str, table: Mapping[str, Any] = table) -> Path | None:
            value = table.get(key)
            return base / Path(str(value)).expanduser() if value else None

        tf_dir = rel("terraform_dir")
        assert tf_dir is not None
        workspace = str(table["workspace"]) if table.get("workspace") else None
        name = str(table.get("name") or (f"{tf_dir.name}:{workspace}" if workspace else tf_dir))
        listed = table.get("tfvars") or []
        if isinstance(listed, str):
            listed = [listed]
        if not isinstance(listed, list):
            raise RebakeError(f"{path}: site {number}: tfvars must be a file or a list of files")
        files = tuple(base / Path(str(f)).expanduser() for f in listed)
        # var_file is the old key: the tfvars file holding image_slug, given before the others.
        old = rel("var_file")
        files = (old, *files) if old is not None else files
        sites.append(Site(name, tf_dir, workspace, None, rel("manifest"), files))
    names = [s.name for s in sites]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise RebakeError(f"{path}: site names must differ ({', '.join(doubled)} repeat)")
    return tuple(sites)


# --- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebakeOptions:
    """How to decide and roll out."""

    max_age: timedelta | None = None
    force: bool = False
    check: bool = False
    strategy: Literal["all", "rolling"] | None = None
    batch_size: str = "25%"
    max_unavailable: str | None = None
    canary: bool = False
    health_interval: float | None = None
    health_timeout: float = 300.0
    health_grace: float = 30.0
    lock_timeout: str = "60s"
    deadline: float | None = None
    port_map: Mapping[int, int] = field(default_factory=dict)
    api_budget: int = rollout_mod.DEFAULT_API_BUDGET  # requests a minute; 0: not watched
    backend_config: tuple[str, ...] = ()
    engine: str | None = None  # --terraform-bin
    prune_keep: int | None = None  # None: no prune after the run
    prune_older_than: timedelta | None = None
    prune_sites: tuple[Site, ...] = ()  # every site of the config: their images stay too


@dataclass(frozen=True)
class SiteResult:
    """How one site's rebake ended."""

    site: str
    outcome: Outcome
    message: str
    decision: RebakeDecision | None = None
    snapshot_id: int | None = None
    previous_image: str | None = None
    duration: float = 0.0
    stopped: bool = False  # a signal ended it: the runs after it should not start
    pruned: tuple[int, ...] = ()
    prune_error: str | None = None

    @property
    def exit_code(self) -> int:
        """The site's exit code (see the module doc)."""
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        data: dict[str, Any] = {
            "site": self.site,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "duration": round(self.duration, 3),
        }
        if self.decision is not None:
            data["due"] = self.decision.due
            data["reasons"] = [{"code": r.code, "text": r.text} for r in self.decision.reasons]
            data["notes"] = list(self.decision.notes)
        if self.snapshot_id is not None:
            data["snapshot_id"] = self.snapshot_id
        if self.previous_image is not None:
            data["previous_image"] = self.previous_image
        if self.pruned:
            data["pruned"] = list(self.pruned)
        if self.prune_error is not None:
            data["prune_error"] = self.prune_error
        return data


def worst_exit(results: Sequence[SiteResult]) -> int:
    """The exit code of the worst outcome (0 when there are none)."""
    codes = [r.exit_code for r in results] or [NOTHING_DUE]
    return max(codes, key=_SEVERITY.index)


def _rollout_outcome(result: rollout_mod.RolloutResult) -> Outcome:
    status = result.status
    if status == "done":
        return "rolled-out"
    if status == "nothing-to-do":
        return "unchanged"
    if status == "rolled-back":
        # Rolled back, but the old droplets did not come back healthy: someone must look.
        return "rolled-back" if result.rollback_healthy else "needs-person"
    return "needs-person"  # failed (the rollback too) or interrupted half way


# what time it is now, as an aware UTC datetime (tests pass a fixed one)
Today = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def rebake_site(
    site: Site,
    config: BakeConfig,
    cloud: Cloud,
    options: RebakeOptions,
    log: EventLog,
    *,
    clock: Today = _utcnow,
    should_stop: Callable[[], bool] = lambda: False,
) -> SiteResult:
    """Decide for one site and, when due (and not --check), bake and roll out under its lock."""
    started = time.monotonic()
    log = log.bind(site=site.name)
    if site.manifest is not None:
        config = replace(config, manifest=site.manifest)
    try:
        if options.check:
            decision = _decide(config, cloud, options, log, clock)
            outcome: Outcome = "due" if decision.due else "not-due"
            return SiteResult(
                site.name, outcome, decision.why(), decision, duration=_since(started)
            )
        if not site.terraform_dir.is_dir():
            raise RebakeError(
                f"no Terraform directory {site.terraform_dir}; pass --terraform-dir DIR"
            )
        with contextlib.ExitStack() as stack:
            with log.step("lock", directory=str(site.terraform_dir)) as step:
                held = stack.enter_context(lock.hold(site.terraform_dir, "rebake"))
                if held.stale is not None:
                    step.message = f"took over a stale lock of {held.stale.describe()}"
            result = _run_locked(site, config, cloud, options, log, clock, started, should_stop)
            if options.prune_keep is None or result.outcome not in _PRUNE_AFTER:
                return result
            return _prune_site(site, config, cloud, options, log, clock, result, started)
    except (ScalerError, OSError) as err:
        # OSError: e.g. no permission to create the lock file; the other sites still run.
        log.event("rebake", "failed", str(err))
        stopped = isinstance(err, bake_mod.BakeInterrupted)
        return SiteResult(site.name, "error", str(err), duration=_since(started), stopped=stopped)


def _since(started: float) -> float:
    return time.monotonic() - started


# Prune only once the site is settled on one image: never after a failure or half-way stop.
_PRUNE_AFTER: tuple[Outcome, ...] = ("not-due", "rolled-out", "unchanged")


def _prune_site(
    site: Site,
    config: BakeConfig,
    cloud: Cloud,
    options: RebakeOptions,
    log: EventLog,
    clock: Today,
    result: SiteResult,
    started: float,
) -> SiteResult:
    """Delete the project's old snapshots the site no longer uses (still under the lock)."""
    keep = options.prune_keep if options.prune_keep is not None else 0
    deleted: list[int] = []
    with log.step("prune", keep=keep) as step:
        try:
            # Sites of one config share the project's snapshots: what any of them runs stays.
            in_use: dict[int, tuple[str, ...]] = {}
            for one in dict.fromkeys((site, *options.prune_sites)):
                for image, why in _site_in_use(one, options).items():
                    in_use[image] = in_use.get(image, ()) + why
            mine = project_snapshots(list_snapshots(cloud), config.project)
            plan = snapshots_mod.plan_prune(mine, in_use, keep, options.prune_older_than, clock())
            step.ids.update(kept=[k.snapshot.id for k in plan.keep])
            snapshots_mod.delete_snapshots(
                cloud, plan.delete, on_deleted=lambda s: deleted.append(s.id)
            )
        except (ScalerError, OSError) as err:
            # The site's outcome stands: an old snapshot left over costs money, not uptime.
            step.fail(f"prune failed: {err}")
            step.ids.update(deleted=deleted)
            return replace(
                result, pruned=tuple(deleted), prune_error=str(err), duration=_since(started)
            )
        step.ids.update(deleted=deleted)
        step.message = f"deleted {len(deleted)} old snapshot(s)" if deleted else "nothing to prune"
    return replace(result, pruned=tuple(deleted), duration=_since(started))


def _site_in_use(site: Site, options: RebakeOptions) -> dict[int, tuple[str, ...]]:
    """The snapshot ids the site's tfvars and state name (an error when either is unreadable)."""
    settings = _settings(site, options)
    if not settings.tfvars.is_file():
        raise RebakeError(
            f"no {settings.tfvars} for site {site.name}; cannot tell what image_slug names"
        )
    if not settings.terraform_dir.is_dir():
        raise RebakeError(f"no Terraform directory {site.terraform_dir} for site {site.name}")
    with rollout_mod.open_terraform(settings) as tf:
        state = parse_state(tf.state_pull(), f"the Terraform state of site {site.name}")
    found = snapshots_mod.in_use_from(state, settings.tfvars)
    if site.name == str(site.terraform_dir):
        return found
    return {k: tuple(f"{why} (site {site.name})" for why in v) for k, v in found.items()}


def _settings(site: Site, options: RebakeOptions) -> rollout_mod.Settings:
    """The rollout settings for the site."""
    return rollout_mod.Settings(
        terraform_dir=site.terraform_dir,
        var_file=site.var_file,
        var_files=site.tfvars,
        backend_config=options.backend_config,
        engine=options.engine,
        workspace=site.workspace,
        lock_timeout=options.lock_timeout,
        health_interval=options.health_interval,
        health_timeout=options.health_timeout,
        health_grace=options.health_grace,
        port_map=dict(options.port_map),
        deadline=options.deadline,
    )


def _decide(
    config: BakeConfig, cloud: Cloud, options: RebakeOptions, log: EventLog, clock: Today
) -> RebakeDecision:
    with log.step("decide", project=config.project, base_image=config.image) as step:
        facts = gather_facts(config, cloud)
        decision = decide_rebake(facts, max_age=options.max_age, now=clock(), force=options.force)
        step.ids.update(
            due=decision.due,
            reasons=[r.code for r in decision.reasons],
            base_image_id=facts.base_image_id,
            last_snapshot=facts.last_bake.id if facts.last_bake else None,
            provisioning=facts.provisioning_sha256[:12],
        )
        step.message = "; ".join([decision.summary(), *decision.notes])
    return decision


def _run_locked(
    site: Site,
    config: BakeConfig,
    cloud: Cloud,
    options: RebakeOptions,
    log: EventLog,
    clock: Today,
    started: float,
    should_stop: Callable[[], bool],
) -> SiteResult:
    settings = _settings(site, options)
    progress = rollout_mod.read_record(settings.record_file)
    if progress is not None and not progress.finished:
        message = (
            f"an unfinished rollout to image {progress.target_image} ({progress.status}) is "
            f"recorded in {settings.record_file}; finish it with `scaler rollout --resume` "
            "before rebaking"
        )
        log.event("rebake", "failed", message)
        return SiteResult(site.name, "needs-person", message, duration=_since(started))
    decision = _decide(config, cloud, options, log, clock)
    if not decision.due:
        return SiteResult(site.name, "not-due", decision.why(), decision, duration=_since(started))
    with rollout_mod.open_terraform(settings) as tf:
        # The bake's inventory holds the stack's groups (ha_db_fip) the role reads.
        state = parse_state(tf.state_pull(), "the Terraform state")
        with log.step("bake", project=config.project, base_image=config.image) as step:
            baked = workflow.bake_from_config(
                config,
                cloud,
                workflow.stack_inventory(state, say=lambda text: log.event("bake", "info", text)),
                say=lambda message: log.event("bake", "info", message),
            )
            step.ids.update(snapshot=baked.id, name=baked.name, regions=list(baked.regions))
        with log.step("rollout", image=baked.id) as step:
            try:
                prepared = rollout_mod.prepare_rollout(
                    tf,
                    settings,
                    str(baked.id),
                    strategy=options.strategy,
                    batch_size=options.batch_size,
                    max_unavailable=options.max_unavailable,
                    canary=options.canary,
                    report=lambda message: log.event("rollout", "info", message),
                )
            except ScalerError as err:
                # prepare_rollout put terraform.tfvars back: nothing changed on the site.
                step.fail(str(err))
                return SiteResult(
                    site.name,
                    "error",
                    f"snapshot {baked.id} is baked, but the rollout did not start: {err}",
                    decision,
                    baked.id,
                    duration=_since(started),
                )
            step.ids.update(previous=prepared.plan.previous_image)
            try:
                result = rollout_mod.apply_rollout(
                    tf,
                    settings,
                    prepared,
                    report=lambda message: log.event("rollout", "info", message),
                    # A stop request (systemctl stop, Ctrl-C) ends the batch in flight first.
                    should_stop=should_stop,
                    # paced as a hand-run rollout is
                    budget=workflow.api_budget(
                        options.api_budget,
                        lambda message: log.event("rollout", "info", message),
                        dict(settings.env),
                    ),
                )
            except (ScalerError, OSError) as err:
                step.fail(str(err))
                return SiteResult(
                    site.name,
                    "needs-person",
                    f"the rollout of snapshot {baked.id} stopped half way: {err}; "
                    "check the site, then run `scaler rollout --resume`",
                    decision,
                    baked.id,
                    prepared.plan.previous_image,
                    _since(started),
                )
            outcome = _rollout_outcome(result)
            step.ids.update(
                status=result.status,
                replaced=len(result.replaced),
                api_requests=result.api_requests,
            )
            step.message = result.message
            if outcome not in ("rolled-out", "unchanged"):
                step.outcome = "failed"
    return SiteResult(
        site.name,
        outcome,
        result.message,
        decision,
        baked.id,
        prepared.plan.previous_image,
        _since(started),
    )


def summary_text(command: str, results: Sequence[SiteResult]) -> str:
    """One line for people (and chat): what happened on each site."""
    if len(results) == 1:
        only = results[0]
        return f"scaler {command} on {only.site}: {only.outcome} - {only.message}"
    parts = ", ".join(f"{r.site} {r.outcome}" for r in results)
    return f"scaler {command} on {len(results)} sites (exit {worst_exit(results)}): {parts}"


def summary_fields(command: str, results: Sequence[SiteResult]) -> dict[str, Any]:
    """The webhook's and --json's fields."""
    worst = worst_exit(results)
    outcome = next((r.outcome for r in results if r.exit_code == worst), "not-due")
    return {
        "command": command,
        "exit_code": worst,
        "outcome": outcome,
        "sites": [r.to_json() for r in results],
    }
