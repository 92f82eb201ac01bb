"""Prepare a rollout: set image_slug, plan the whole change with Terraform and guard it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from scaler.events import Say
from scaler.fsutil import write_atomic
from scaler.rollout import surge
from scaler.rollout.plan import (
    DEFAULT_BATCH,
    Change,
    PlanRefused,
    RolloutError,
    RolloutPlan,
    Strategy,
    check_plan,
    held_by_scaler,
    ignores_image,
    pause_batch,
    pin_key,
    pin_var_missing,
    plan_rollout,
    uses_for_each,
)
from scaler.rollout.record import (
    Creating,
    Kind,
    RolloutRecord,
    last_done,
    read_history,
    read_record,
    write_record,
)
from scaler.rollout.settings import Settings, quiet
from scaler.rollout.stack import (
    STATE_LOCKED,
    Now,
    Runner,
    check_image,
    declares_variable,
    lock_holder,
    pins_for,
    read_now,
    tf_plan,
)
from scaler.terraform import TerraformFailed
from scaler.tfvars import (
    TfvarsNotFound,
    VariableNotFound,
    get_tfvar,
    set_tfvar,
)


@dataclass(frozen=True)
class Prepared:
    """A rollout ready to apply: its plan, the whole-change plan's changes, and tfvars backup."""

    plan: RolloutPlan
    changes: tuple[Change, ...]
    planfile: Path
    tfvars_before: bytes | None
    resumed: bool
    # the droplets ignore image changes: each batch is replaced with `-replace=ADDRESS`
    replace_each: bool = False
    kind: Kind = "rollout"
    # droplets an aborted rollout's killed apply was creating (removed before the abort runs)
    creating: tuple[Creating, ...] = ()
    # the unfinished record an abort replaces (put back when the abort goes no further)
    replaces: RolloutRecord | None = None


def _previous_image(settings: Settings, now: Now) -> str:
    try:
        return str(get_tfvar(settings.tfvars, settings.image_var))
    except (TfvarsNotFound, VariableNotFound):
        running = set(now.images.values())
        if len(running) == 1:
            return running.pop()
        raise RolloutError(
            f"no {settings.image_var} in {settings.tfvars} and the targets run "
            f"different images ({', '.join(sorted(running))}); set it first"
        ) from None


def restore_tfvars(
    settings: Settings, before: bytes | None, replaces: RolloutRecord | None = None
) -> None:
    """Put the tfvars file back as it was before prepare_rollout (then forget its record, or
    put back the record it `replaces`)."""
    if before is None:
        with contextlib.suppress(FileNotFoundError):
            settings.tfvars.unlink()
    elif not settings.tfvars.exists() or settings.tfvars.read_bytes() != before:
        write_atomic(settings.tfvars, before)
    with contextlib.suppress(RolloutError):
        progress = read_record(settings.record_file)
        if progress is not None and progress.status == "planning":
            settings.record_file.unlink(missing_ok=True)
            if replaces is not None:
                write_record(settings.record_file, replaces)


def prepare_rollout(
    tf: Runner,
    settings: Settings,
    image: str | None,
    *,
    resume: bool = False,
    abort: bool = False,
    undo: bool = False,
    strategy: Strategy | None = None,
    batch_size: str | int = DEFAULT_BATCH,
    max_unavailable: str | int | None = None,
    canary: bool = False,
    report: Say = quiet,
) -> Prepared:
    """Set image_slug, plan the whole change and guard it; on refusal tfvars are put back.

    `abort`: roll an unfinished rollout back to its previous image, batch by batch; `undo`: roll
    back the last finished rollout (from the history) the same way.
    """
    progress = read_record(settings.record_file)
    kind: Kind = "rollout"
    creating: tuple[Creating, ...] = ()
    aborted: RolloutRecord | None = None
    if abort:
        if progress is None or progress.finished or progress.status == "planning":
            raise RolloutError(f"nothing to abort: no unfinished rollout in {settings.record_file}")
        if progress.kind == "abort":
            resume = True  # an abort that stopped half way: continue it
        else:
            image, strategy, kind = progress.previous_image, progress.strategy, "abort"
            creating, aborted = progress.creating, progress
            progress = None
    elif undo:
        if progress is not None and not progress.finished:
            raise RolloutError(
                f"an unfinished rollout to image {progress.target_image} ({progress.status}) "
                f"is recorded in {settings.record_file}; --resume or --abort it before --undo"
            )
        last = last_done(read_history(settings.history_file))
        if last is not None:
            image = last.from_image
        elif progress is not None and progress.status == "done":
            image = progress.previous_image  # a rollout from before the history was kept
        else:
            raise RolloutError(
                f"nothing to undo: no finished rollout in {settings.history_file}; "
                "pass --image ID to roll out an image"
            )
        kind = "undo"
    if resume:
        if progress is None or progress.finished:
            raise RolloutError(
                f"nothing to resume: no unfinished rollout in {settings.record_file}"
            )
        if image is not None and image != progress.target_image:
            raise RolloutError(
                f"the unfinished rollout is to image {progress.target_image}, not {image}; "
                "drop --image to resume it"
            )
        image = progress.target_image
        strategy = progress.strategy
        kind = progress.kind
    elif progress is not None and not progress.finished:
        raise RolloutError(
            f"an unfinished rollout to image {progress.target_image} ({progress.status}, "
            f"{len(progress.done)} droplets done) is recorded in {settings.record_file}; "
            "pass --resume to continue it, or remove that file to start over"
        )
    if image is None:
        raise RolloutError("no image to roll out; pass --image ID or --from-manifest PATH")
    # a surge killed half way (surge.py): its old droplets back at their addresses first
    if (resume or kind == "abort") and surge.undo(tf, settings, report):
        report("undid the interrupted surge; the old droplets are back in the Terraform state")
    now = read_now(tf, settings)  # first: it says which workspace has no state
    if not (resume or kind == "abort") and (
        aside := sorted(a for a in surge.state_addresses(tf) if held_by_scaler(a))
    ):
        raise RolloutError(
            f"the Terraform state holds droplets a surge moved aside ({', '.join(aside)}): "
            "a rollout with --strategy all is under way from another checkout of this "
            "stack, or was killed there; wait for it, or run scaler rollout --resume there"
        )
    if resume:
        assert progress is not None
        previous = progress.previous_image
    else:
        previous = _previous_image(settings, now)
        check_image(
            settings, image, sorted(set(now.regions.values())), min(now.disks.values(), default=0)
        )
    plan = plan_rollout(
        now.images,
        image,
        previous,
        strategy=strategy,
        batch_size=batch_size,
        max_unavailable=max_unavailable,
        canary=canary,
    )
    if settings.pause_after is not None and not plan.nothing_to_do:
        pause_batch(plan, settings.pause_after)  # an impossible pause point: said before planning
    before = settings.tfvars.read_bytes() if settings.tfvars.exists() else None
    planfile = settings.bookkeeping / "rollout.tfplan"
    if plan.nothing_to_do and not resume and kind != "abort":
        return Prepared(plan, (), planfile, before, resume, kind=kind, replaces=aborted)
    pinned = plan.strategy == "rolling" and declares_variable(
        settings.terraform_dir, settings.pin_var
    )
    if not resume:
        # recorded before tfvars is touched: from here on a kill -9 is resumable
        now_time = time.time()
        write_record(
            settings.record_file,
            RolloutRecord(
                plan.target_image,
                plan.previous_image,
                plan.strategy,
                plan.batches,
                (),
                "planning",
                now_time,
                now_time,
                kind=kind,
            ),
        )
    if pinned and not resume:
        # Pins before the image: from the first byte written, a plain `terraform apply`
        # changes nothing the rollout has not (each droplet pinned to what it runs).
        set_tfvar(settings.tfvars, settings.pin_var, pins_for(now, plan.targets, ()))
    set_tfvar(settings.tfvars, settings.image_var, image)
    try:
        report(f"planning the rollout of image {image} ({len(plan.replacing)} droplets)")
        now_is = f"stays {image!r}" if resume else f"is back to {previous!r}"
        try:
            plan_json = tf_plan(tf, settings, planfile, {} if pinned else None)
        except TerraformFailed as err:
            if STATE_LOCKED not in err.stderr:
                raise
            raise RolloutError(
                f"Terraform's state lock is held{lock_holder(err.stderr)} and was not released "
                f"within --lock-timeout {settings.lock_timeout}; wait for that run to finish or "
                f"raise --lock-timeout; nothing was applied and {settings.image_var} in "
                f"{settings.tfvars} {now_is}"
            ) from None
        try:
            changes = check_plan(plan_json, settings.targets)
        except PlanRefused as err:
            raise PlanRefused(
                f"refusing to roll out: {err}; nothing was applied and {settings.image_var} "
                f"in {settings.tfvars} {now_is}",
                err.offending,
            ) from None
        replace_each = ignores_image(plan, changes)
        if replace_each:
            report(
                "the droplets ignore image changes (lifecycle ignore_changes): each batch is "
                "replaced with terraform's -replace"
            )
        elif plan.strategy == "rolling" and settings.pin_var not in plan_json.get("variables", {}):
            raise RolloutError(
                pin_var_missing(
                    settings.pin_var, settings.image_var, for_each=uses_for_each(plan.targets)
                )
            )
    except BaseException:
        if not resume:
            restore_tfvars(settings, before, aborted)
        raise
    return Prepared(plan, changes, planfile, before, resume, replace_each, kind, creating, aborted)


def plan_batches(
    tf: Runner, settings: Settings, prepared: Prepared, report: Say = quiet
) -> list[tuple[tuple[str, ...], tuple[Change, ...]]]:
    """Each batch's own plan, as if the batches before it were done (for --dry-run)."""
    plan = prepared.plan
    now = read_now(tf, settings)
    out = []
    rolled: list[str] = []
    for number, batch in enumerate(plan.batches, 1):
        rolled.extend(batch)
        planfile = settings.bookkeeping / "batch.tfplan"
        if prepared.replace_each:
            # nothing pins the others: each batch's plan names its droplets alone
            plan_json = tf_plan(tf, settings, planfile, None, refresh=False, replace=batch)
            changes = check_plan(plan_json, settings.targets, expect=batch)
        else:
            pins = {pin_key(a): now.images[a] for a in plan.targets if a not in rolled}
            plan_json = tf_plan(tf, settings, planfile, pins, refresh=False)
            changes = check_plan(plan_json, settings.targets, expect=rolled)
        report(f"batch {number}/{len(plan.batches)}: plan replaces {', '.join(batch)}")
        out.append((batch, changes))
    return out
