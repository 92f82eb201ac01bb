"""What a rollout must change, pure: batches, the floor, the guard over a Terraform plan."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scaler.errors import ScalerError
from scaler.tfvars import (
    IMAGE_VAR,
)

Strategy = Literal["all", "rolling"]


DEFAULT_TARGET = "digitalocean_droplet.wp_node"


PIN_VAR = "wp_node_images"


DEFAULT_BATCH = "25%"


_SPEC = re.compile(r"\s*(\d+)\s*(%?)\s*")


_ALLOWED_UPDATES = ("digitalocean_loadbalancer",)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")


class RolloutError(ScalerError):
    """A rollout cannot start or go on."""


class PlanRefused(RolloutError):
    """The guard refused a Terraform plan."""

    def __init__(self, message: str, offending: Sequence[str]) -> None:
        super().__init__(message)
        self.offending = tuple(offending)


@dataclass(frozen=True)
class RolloutPlan:
    """What a rollout will do: which droplets go to which image, in which batches."""

    target_image: str
    previous_image: str
    strategy: Strategy
    targets: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    skipped: tuple[str, ...]
    max_unavailable: int
    floor: int
    canary: bool

    @property
    def nothing_to_do(self) -> bool:
        """True when every target already runs the target image."""
        return not self.batches

    @property
    def replacing(self) -> tuple[str, ...]:
        """Every address the rollout replaces, in order."""
        return tuple(a for batch in self.batches for a in batch)


def parse_count(text: str | int, total: int, what: str = "--batch-size") -> int:
    """`N` or `N%` of `total` (rounded up, at least 1) as a count."""
    if isinstance(text, int):
        number, percent = text, False
    else:
        match = _SPEC.fullmatch(text)
        if match is None:
            raise RolloutError(f"{what} {text!r} is not a count; give N (like 2) or N% (like 25%)")
        number, percent = int(match.group(1)), bool(match.group(2))
    if number <= 0 or (percent and number > 100):
        raise RolloutError(f"{what} {text!r} is out of range; give 1 or more, or 1% to 100%")
    if percent:
        return max(1, math.ceil(total * number / 100))
    return number


def parse_duration(text: str) -> float:
    """`30m`, `90s`, `1.5h`, `250ms` or bare seconds as seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise RolloutError(f"{text!r} is not a duration; give e.g. 30m, 90s or 1h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def plan_rollout(
    instances: Mapping[str, str],
    target_image: str,
    previous_image: str,
    *,
    strategy: Strategy | None = None,
    batch_size: str | int = DEFAULT_BATCH,
    max_unavailable: str | int | None = None,
    canary: bool = False,
) -> RolloutPlan:
    """The batches that move `instances` (address -> image it runs) onto `target_image`."""
    targets = tuple(sorted(instances, key=address_key))
    total = len(targets)
    if total == 0:
        raise RolloutError("no rollout targets in the state; apply the stack first")
    todo = tuple(a for a in targets if instances[a] != target_image)
    skipped = tuple(a for a in targets if instances[a] == target_image)
    chosen: Strategy = strategy or ("rolling" if total > 1 else "all")
    size = parse_count(batch_size, total)
    if max_unavailable is None:
        unavailable = size
    elif str(max_unavailable).strip() in ("0", "0%"):
        raise RolloutError(
            "--max-unavailable 0 would never let a droplet go: a replaced droplet leaves the "
            "load balancer's healthy set until its new droplet passes the check; give 1 or more"
        )
    else:
        unavailable = parse_count(max_unavailable, total, "--max-unavailable")
    batches: tuple[tuple[str, ...], ...]
    if chosen == "all":
        unavailable = total
        batches = (todo,) if todo else ()
    else:
        # A batch never takes out more droplets than may be unavailable at once.
        size = min(size, unavailable)
        rest = list(todo)
        out: list[tuple[str, ...]] = []
        if canary and rest:
            out.append((rest.pop(0),))
        while rest:
            out.append(tuple(rest[:size]))
            del rest[:size]
        batches = tuple(out)
    return RolloutPlan(
        target_image=target_image,
        previous_image=previous_image,
        strategy=chosen,
        targets=targets,
        batches=batches,
        skipped=skipped,
        max_unavailable=min(unavailable, total),
        floor=max(0, total - unavailable),
        canary=canary and chosen == "rolling",
    )


def address_key(address: str) -> tuple[str, int, str]:
    base, _, index = address.partition("[")
    index = index.rstrip("]")
    return (base, int(index), "") if index.isdigit() else (base, -1, index)


RETIRING = "_scaler_retiring"
"""Appended to the resource name of an old droplet a surge moved aside (scaler.rollout.surge)."""

FAILED = "_scaler_failed"
"""Appended to the resource name of a new droplet moved aside when a surge is undone."""


def aside(address: str, suffix: str) -> str:
    """The address with `suffix` on its resource name: web[0] -> web_scaler_retiring[0]."""
    base, bracket, rest = address.partition("[")
    head, dot, name = base.rpartition(".")
    return f"{head}{dot}{name}{suffix}{bracket}{rest}"


def held_by_scaler(address: str) -> bool:
    """True for an address a surge moved a droplet to (one no configuration declares)."""
    base = address.partition("[")[0]
    return base.endswith(RETIRING) or base.endswith(FAILED)


def matches_target(address: str, targets: Sequence[str]) -> bool:
    """True when `address` is one of `targets` or an instance of a target resource."""
    return any(address == t or address.startswith(t + "[") for t in targets)


@dataclass(frozen=True)
class Change:
    """One resource change in a Terraform plan."""

    address: str
    type: str
    actions: tuple[str, ...]
    deposed: bool = False

    @property
    def kind(self) -> str:
        """create, update, delete, replace, read or no-op."""
        if set(self.actions) == {"create", "delete"}:
            return "replace"
        return self.actions[0] if len(self.actions) == 1 else "+".join(self.actions)


def plan_changes(plan_json: Mapping[str, Any]) -> tuple[Change, ...]:
    """The changes of a plan (`terraform show -json PLAN`), no-ops and reads left out."""
    found = []
    for item in plan_json.get("resource_changes") or ():
        actions = tuple(item["change"]["actions"])
        if actions in (("no-op",), ("read",)):
            continue
        deposed = bool(item.get("deposed"))
        found.append(Change(item["address"], item.get("type", ""), actions, deposed))
    return tuple(found)


def check_plan(
    plan_json: Mapping[str, Any],
    targets: Sequence[str],
    *,
    expect: Sequence[str] | None = None,
    create: bool = False,
) -> tuple[Change, ...]:
    """The guard: the plan's changes, or PlanRefused naming whatever is not allowed.

    Targets may be replaced or updated in place; other resources may only see an in-place update
    of a load balancer, and droplets a surge moved aside (held_by_scaler) may be deleted. With
    `expect`, exactly those targets must be replaced; `create`: created (a surge's, whose old
    droplets were moved aside).
    """
    changes = plan_changes(plan_json)
    bad: list[Change] = []
    for change in changes:
        if matches_target(change.address, targets):
            # A deposed object is an old droplet a failed create-before-destroy left behind.
            allowed = ("create",) if create else ("replace", "update")
            if change.kind not in allowed and not (change.deposed and change.kind == "delete"):
                bad.append(change)
        elif change.kind == "delete" and change.type == "digitalocean_droplet":
            if not held_by_scaler(change.address):
                bad.append(change)
        elif not (change.kind == "update" and change.type in _ALLOWED_UPDATES):
            bad.append(change)
    if bad:
        named = ", ".join(f"{c.kind} {c.address}" for c in bad)
        raise PlanRefused(
            f"the plan would {named}; a rollout may only replace "
            f"{', '.join(targets)} (and update a load balancer in place)",
            [c.address for c in bad],
        )
    if expect is not None:
        replaced = {c.address for c in changes if c.kind == "replace" or c.kind == "create"}
        if replaced != set(expect):
            extra = sorted(replaced - set(expect), key=address_key)
            missing = sorted(set(expect) - replaced, key=address_key)
            parts = []
            if extra:
                parts.append(f"also replace {', '.join(extra)}")
            if missing:
                parts.append(f"not replace {', '.join(missing)}")
            raise PlanRefused(
                f"the batch plan would {' and '.join(parts)}; expected exactly "
                f"{', '.join(sorted(expect, key=address_key))}",
                extra + missing,
            )
    return changes


def ignores_image(plan: RolloutPlan, changes: Sequence[Change]) -> bool:
    """True when the whole-change plan replaces none of the droplets that run another image:
    the stack's droplets have `lifecycle { ignore_changes = [image] }`."""
    replaced = {c.address for c in changes if c.kind in ("replace", "create")}
    return bool(plan.replacing) and not replaced & set(plan.replacing)


def pin_lookup(pin_var: str, image_var: str = IMAGE_VAR, *, for_each: bool = False) -> str:
    """The droplets' `image = ...` line that honours the pin variable."""
    key = "each.key" if for_each else "tostring(count.index)"
    return f"image = lookup(var.{pin_var}, {key}, var.{image_var})"


def pin_var_missing(pin_var: str, image_var: str = IMAGE_VAR, *, for_each: bool = False) -> str:
    """The one-line error for a stack without the per-droplet image variable rolling needs."""
    what = "for_each key" if for_each else "count index"
    return (
        f"rolling batches need the variable {pin_var!r} in the Terraform configuration, a map "
        f"from {what} to image that overrides {image_var} per droplet: add "
        f'variable "{pin_var}" (type map(string), default {{}}) and set the droplets\' '
        f"{pin_lookup(pin_var, image_var, for_each=for_each)} "
        "(as scaler's terraform/ does), or add lifecycle { ignore_changes = [image] } to the "
        "droplets (scaler then replaces each batch with -replace), or use --strategy all"
    )


def pin_key(address: str) -> str:
    """The pin key of a target: its count index ("0") or its for_each key."""
    base, bracket, inside = address.partition("[")
    inside = inside[:-1] if inside.endswith("]") else inside
    if bracket and inside.isdigit():
        return inside
    if bracket and inside.startswith('"'):
        with contextlib.suppress(ValueError):
            key = json.loads(inside)
            if isinstance(key, str):
                return key
    raise RolloutError(
        f"{address} is a single droplet, not an instance of `count` or `for_each`; rolling "
        f'batches need several droplets of one resource ({base}[0], ... or {base}["key"])'
    )


def uses_for_each(targets: Sequence[str]) -> bool:
    return any(a.endswith('"]') for a in targets)


def describe_changes(changes: Sequence[Change]) -> str:
    return ", ".join(f"{c.kind} {c.address}" + (" (deposed)" if c.deposed else "") for c in changes)


@dataclass(frozen=True)
class Gate:
    """An HTTP check each new droplet must pass beyond the balancer's: GET `path` on the
    check's port answers `status` (None: any 2xx)."""

    path: str
    status: int | None = None

    def passes(self, status: int | None) -> bool:
        """True when an answer with `status` passes the gate."""
        if status is None:
            return False
        return status == self.status if self.status is not None else 200 <= status < 300

    def describe(self) -> str:
        return f"{self.path} -> {self.status if self.status is not None else '2xx'}"


_GATE = re.compile(r"(/[^\s=]*)(?:=([1-5][0-9][0-9]))?")


def parse_gate(text: str) -> Gate:
    """`/wp-login.php` or `/wp-json/=200` as a Gate."""
    match = _GATE.fullmatch(text.strip())
    if match is None:
        raise RolloutError(
            f"--gate {text!r} is not PATH[=STATUS]; give e.g. /wp-login.php or /wp-json/=200"
        )
    return Gate(match.group(1), int(match.group(2)) if match.group(2) else None)


def pause_batch(plan: RolloutPlan, spec: str) -> int:
    """The batch after which `--pause-after` stops: `N` (batch N) or `N%` (the first batch
    after which that share of the droplets to replace is done)."""
    total = len(plan.batches)
    text = spec.strip()
    if text.endswith("%"):
        share = parse_count(text, len(plan.replacing) or 1, "--pause-after")
        done = 0
        for number, batch in enumerate(plan.batches, 1):
            done += len(batch)
            if done >= share:
                return number
        return total
    if not text.isdigit() or int(text) <= 0:
        raise RolloutError(
            f"--pause-after {spec!r} is not a batch number or share; give N (like 1) or N% "
            "(like 50%)"
        )
    number = int(text)
    if number >= total:
        raise RolloutError(
            f"--pause-after {number}: the rollout has {total} batches, so there is nothing "
            f"after batch {number} to pause before; give 1 to {total - 1}"
            if total > 1
            else f"--pause-after {number}: the rollout has one batch; nothing to pause between"
        )
    return number
