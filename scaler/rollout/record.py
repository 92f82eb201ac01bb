"""The rollout record (`.scaler/rollout.json`, docs/rollout-record.md) and how a rollout ended."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from scaler.fsutil import BOOKKEEPING_DIR, bookkeeping_dir, write_atomic
from scaler.rollout.plan import RolloutError, Strategy

Status = Literal[
    "done", "nothing-to-do", "dry-run", "rolled-back", "failed", "interrupted", "refused"
]


RECORD_NAME = "rollout.json"


LEGACY_RECORD_NAME = ".scaler-rollout.json"


RECORD_VERSION = 2


@dataclass(frozen=True)
class Creating:
    """A droplet a batch is about to replace: its address, the droplet it replaces, the name
    the new one gets and when the apply started (to find it if the state never learns it)."""

    address: str
    old_id: str
    name: str
    since: float


@dataclass(frozen=True)
class RolloutRecord:
    """What the rollout record holds (docs/rollout-record.md; version RECORD_VERSION)."""

    target_image: str
    previous_image: str
    strategy: Strategy
    batches: tuple[tuple[str, ...], ...]
    done: tuple[str, ...]
    status: str
    started: float
    updated: float
    creating: tuple[Creating, ...] = ()
    healthy: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """True when there is nothing left to resume."""
        return self.status in ("done", "rolled-back")


def read_record(path: Path) -> RolloutRecord | None:
    """The rollout record, or None when there is none (a version-1 `.scaler-rollout.json`
    beside the Terraform files is read too)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        legacy = path.parent.parent / LEGACY_RECORD_NAME
        if path.parent.name != BOOKKEEPING_DIR or not legacy.is_file():
            return None
        return read_record_file(legacy)
    except (OSError, json.JSONDecodeError) as err:
        raise RolloutError(f"cannot read {path} ({err}); move it away to start afresh") from err
    return _record_from(raw, path)


def read_record_file(path: Path) -> RolloutRecord:
    """One record file (no fallback)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RolloutError(f"cannot read {path} ({err}); move it away to start afresh") from err
    return _record_from(raw, path)


def _record_from(raw: Any, path: Path) -> RolloutRecord:
    try:
        if not isinstance(raw, dict) or int(raw.get("version", 1)) > RECORD_VERSION:
            raise ValueError(f"version {raw.get('version') if isinstance(raw, dict) else '?'}")
        return RolloutRecord(
            target_image=str(raw["target_image"]),
            previous_image=str(raw["previous_image"]),
            strategy=raw["strategy"],
            batches=tuple(tuple(b) for b in raw["batches"]),
            done=tuple(raw["done"]),
            status=str(raw["status"]),
            started=float(raw["started"]),
            updated=float(raw["updated"]),
            creating=tuple(
                Creating(str(c["address"]), str(c["old_id"]), str(c["name"]), float(c["since"]))
                for c in raw.get("creating") or ()
            ),
            healthy=tuple(str(h) for h in raw.get("healthy") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RolloutError(f"{path} is not a rollout record ({err}); move it away") from err


def write_record(path: Path, progress: RolloutRecord) -> None:
    """Record progress atomically (a version-1 file beside it goes: this one replaces it)."""
    path = Path(path)
    if path.parent.name == BOOKKEEPING_DIR:
        bookkeeping_dir(path.parent.parent)
    data = {"version": RECORD_VERSION, **asdict(progress)}
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    legacy = path.parent.parent / LEGACY_RECORD_NAME
    if path.parent.name == BOOKKEEPING_DIR and legacy.is_file():
        legacy.unlink()


@dataclass(frozen=True)
class BatchResult:
    """One batch as it went."""

    addresses: tuple[str, ...]
    droplet_ids: tuple[str, ...]
    healthy: bool
    seconds: float


@dataclass(frozen=True)
class Node:
    """One rollout target as the state has it: droplet id, image and address."""

    address: str
    droplet_id: str
    image: str
    ip: str


@dataclass(frozen=True)
class RolloutResult:
    """How a rollout ended."""

    status: Status
    target_image: str
    previous_image: str
    strategy: Strategy
    batches: tuple[BatchResult, ...]
    replaced: tuple[str, ...]
    rolled_back: tuple[str, ...]
    min_healthy: int | None
    floor: int
    elapsed: float
    message: str
    before: tuple[Node, ...] = ()
    after: tuple[Node, ...] = ()
    api_requests: int | None = None
    # Only for status "rolled-back": did the droplets put back pass the health check?
    rollback_healthy: bool | None = None

    @property
    def ok(self) -> bool:
        """True when the rollout did what was asked (or there was nothing to do)."""
        return self.status in ("done", "nothing-to-do", "dry-run")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def stale_rollout_files(directory: Path) -> list[tuple[Path, str, bool]]:
    """Rollout bookkeeping a dead run left in a Terraform directory: (path, why, removable)."""
    from scaler import lock

    found: list[tuple[Path, str, bool]] = []
    if lock.holder(Path(directory)) is not None:
        return found  # a rollout is at work there
    folder = Path(directory) / BOOKKEEPING_DIR
    for plan in [
        *sorted(folder.glob("*.tfplan")),
        *sorted(Path(directory).glob("scaler-roll*.tfplan")),
    ]:
        found.append((plan, "plan file of a dead rollout", True))
    record = folder / RECORD_NAME
    progress = read_record(record)
    if progress is not None and not progress.finished:
        found.append(
            (
                record,
                f"unfinished rollout to image {progress.target_image} ({progress.status}); "
                f"run scaler rollout --resume -C {directory}",
                False,
            )
        )
    return found
