"""Snapshot hygiene: list this project's baked snapshots and prune old ones safely.

A project's snapshots are the private snapshot images named `<project>_...` (the bake's and the
tutorial's Packer template's naming). Pruning never deletes a snapshot in use (image_slug in
terraform.tfvars, or the image of any droplet in the Terraform state) nor the newest N;
`plan_prune` decides, pure, and `delete_snapshots` does it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scaler.cloud import Cloud, CloudError
from scaler.errors import ScalerError
from scaler.rollout import PIN_VAR
from scaler.state import State
from scaler.tfvars import IMAGE_VAR, BadValue, TfvarsError, image_id_from, read_tfvars

DROPLET_TYPE = "digitalocean_droplet"
_DURATION_PART = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNIT = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class SnapshotError(ScalerError):
    """Snapshots could not be listed or deleted."""


def parse_age(text: str, option: str = "--older-than") -> timedelta:
    """A timedelta from `7d`, `24h`, `2w`, `90m`, `1d12h` (s, m, h, d, w)."""
    compact = "".join(text.split()).lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ScalerError(
            f"{option} {text!r} is not an age; give a number and a unit: 30m, 24h, 7d, 2w"
        )
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNIT[unit]: int(number)})
    return total


def format_age(age: timedelta) -> str:
    """A short age for people: 45s, 12m, 5h, 3d."""
    seconds = max(int(age.total_seconds()), 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot image: id, name, when it was taken, size and regions."""

    id: int
    name: str
    created_at: datetime
    size_gigabytes: float
    regions: tuple[str, ...]

    def age(self, now: datetime) -> timedelta:
        """How old the snapshot is at `now`."""
        return now - self.created_at


def parse_time(text: str) -> datetime:
    """An API timestamp (`2026-11-25T03:00:00Z`) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def snapshot_from_api(raw: Mapping[str, Any]) -> Snapshot:
    """A Snapshot from an image object of the API."""
    return Snapshot(
        id=int(raw["id"]),
        name=str(raw.get("name", "")),
        created_at=parse_time(str(raw["created_at"])),
        size_gigabytes=float(raw.get("size_gigabytes") or 0.0),
        regions=tuple(str(r) for r in raw.get("regions") or ()),
    )


def project_snapshots(snapshots: Iterable[Snapshot], project: str) -> list[Snapshot]:
    """The snapshots named `<project>_...`, newest first (ties: higher id first)."""
    prefix = f"{project}_"
    mine = [s for s in snapshots if s.name.startswith(prefix)]
    return sorted(mine, key=lambda s: (s.created_at, s.id), reverse=True)


# --- what is in use ----------------------------------------------------------------------------


def in_use_from(
    state: State | None,
    tfvars_path: Path | None,
    image_var: str = IMAGE_VAR,
    pin_var: str = PIN_VAR,
) -> dict[int, tuple[str, ...]]:
    """Snapshot ids in use, each with why: image_slug and the per-droplet pins (wp_node_images)
    in the tfvars file, and the image of every droplet in the state.

    A tfvars file that exists but cannot be read is a SnapshotError: what it names is unknown.
    """
    reasons: dict[int, list[str]] = {}

    def use(value: object, why: str) -> None:
        if isinstance(value, str | int) and not isinstance(value, bool):
            try:
                image_id = int(image_id_from(str(value)))
            except BadValue:
                return  # a distribution slug such as debian-12-x64: no snapshot of ours
            reasons.setdefault(image_id, []).append(why)

    if tfvars_path is not None and tfvars_path.is_file():
        try:
            values = read_tfvars(tfvars_path)
        except TfvarsError as err:
            raise SnapshotError(
                f"cannot tell which snapshots {tfvars_path} names: {err}; fix the file"
            ) from None
        use(values.get(image_var), f"{image_var} in {tfvars_path.name}")
        pins = values.get(pin_var)
        if isinstance(pins, Mapping):
            # A rollout in progress pins the droplets it has not rolled yet to their old image.
            for key, value in sorted(pins.items(), key=lambda kv: str(kv[0])):
                use(value, f'{pin_var}["{key}"] in {tfvars_path.name}')
    if state is not None:
        for resource in state.resources:
            if resource.type != DROPLET_TYPE:
                continue
            image = str(resource.attributes.get("image", "")).strip()
            if image.isdigit():
                reasons.setdefault(int(image), []).append(f"droplet {resource.address}")
    return {k: tuple(v) for k, v in reasons.items()}


# --- pruning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """A snapshot pruning leaves alone, and why."""

    snapshot: Snapshot
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PrunePlan:
    """What `prune` deletes and what it keeps (with reasons), newest first."""

    delete: tuple[Snapshot, ...]
    keep: tuple[Kept, ...]


def plan_prune(
    snapshots: Sequence[Snapshot],
    in_use: Mapping[int, Sequence[str]],
    keep: int,
    older_than: timedelta | None,
    now: datetime,
) -> PrunePlan:
    """Which snapshots to delete: not in use, not among the newest `keep`, older than given."""
    if keep < 0:
        raise ScalerError(f"--keep must be 0 or more, got {keep}")
    ordered = sorted(snapshots, key=lambda s: (s.created_at, s.id), reverse=True)
    delete: list[Snapshot] = []
    kept: list[Kept] = []
    for rank, snapshot in enumerate(ordered):
        reasons = [f"in use: {why}" for why in in_use.get(snapshot.id, ())]
        if rank < keep:
            reasons.append(f"newest {keep}")
        if older_than is not None and snapshot.age(now) <= older_than:
            reasons.append(f"not older than {format_age(older_than)}")
        if reasons:
            kept.append(Kept(snapshot, tuple(reasons)))
        else:
            delete.append(snapshot)
    return PrunePlan(tuple(delete), tuple(kept))


# --- the cloud side ----------------------------------------------------------------------------


def list_snapshots(cloud: Cloud) -> list[Snapshot]:
    """Every private snapshot image of the account (all pages)."""
    found: list[Snapshot] = []
    page = 1
    while True:
        # The API filters by type only for distribution and application images.
        data = cloud.request("GET", f"images?private=true&page={page}")
        found += [
            snapshot_from_api(raw)
            for raw in data.get("images", [])
            if raw.get("type") == "snapshot"
        ]
        if not (data.get("links") or {}).get("pages", {}).get("next"):
            return found
        page += 1


def delete_snapshots(
    cloud: Cloud,
    snapshots: Sequence[Snapshot],
    on_deleted: Callable[[Snapshot], None] | None = None,
) -> None:
    """Delete each snapshot in turn; a failure does not stop the rest (SnapshotError after)."""
    failed: list[str] = []
    for snapshot in snapshots:
        try:
            cloud.delete_image(snapshot.id)
        except CloudError as err:
            failed.append(f"{snapshot.id} ({err})")
            continue
        if on_deleted is not None:
            on_deleted(snapshot)
    if failed:
        raise SnapshotError(
            f"could not delete {len(failed)} snapshot(s): {'; '.join(failed)}; run prune again"
        )
