"""The rollout record (`.scaler/rollout.json`, docs/rollout-record.md) and how a rollout ended."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from scaler.exitcodes import ExitCode
from scaler.fsutil import BOOKKEEPING_DIR, bookkeeping_dir, write_atomic
from scaler.rollout.plan import RolloutError, Strategy

Status = Literal[
    "done", "nothing-to-do", "dry-run", "rolled-back", "failed", "interrupted", "refused", "paused"
]

# What a rollout record is for: a rollout to a new image, an --abort of an unfinished one back
# to its previous image, or an --undo of the last finished one.
Kind = Literal["rollout", "abort", "undo"]


RECORD_NAME = "rollout.json"


LEGACY_RECORD_NAME = ".scaler-rollout.json"


RECORD_VERSION = 2


HISTORY_NAME = "history.json"


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
    kind: Kind = "rollout"
    # the addresses whose old droplets a surge moved aside (scaler.rollout.surge): a --resume
    # undoes that surge before it goes on
    retiring: tuple[str, ...] = ()

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
            kind=raw.get("kind") or "rollout",
            retiring=tuple(str(a) for a in raw.get("retiring") or ()),
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
    # seconds since the rollout began (this run of it), for a timeline
    start: float = 0.0
    end: float = 0.0


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
    kind: Kind = "rollout"
    # healthy droplets behind the balancer over time, (seconds since the start, healthy), as
    # counted where the rollout counts them (before each batch, after it, at the end)
    capacity: tuple[tuple[float, int], ...] = ()
    # the API requests the token made, (seconds since the start, requests since the reading
    # before), as the API budget read them (empty when it was not watched)
    api_used: tuple[tuple[float, int], ...] = ()

    @property
    def ok(self) -> bool:
        """True when the rollout did what was asked (or there was nothing to do)."""
        return self.status in ("done", "nothing-to-do", "dry-run")

    @property
    def exit_code(self) -> ExitCode:
        """What `scaler rollout` exits with after this result (scaler.exitcodes)."""
        if self.ok:
            return ExitCode.DONE
        if self.status == "rolled-back":
            return ExitCode.ROLLED_BACK if self.rollback_healthy else ExitCode.NEEDS_PERSON
        if self.status == "interrupted":
            return ExitCode.INTERRUPTED
        return ExitCode.NEEDS_PERSON  # failed (the rollback too), paused

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (with the timeline: batches' start and end, capacity)."""
        data = asdict(self)
        data["ok"] = self.ok
        data["exit_code"] = int(self.exit_code)
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


@dataclass(frozen=True)
class HistoryEntry:
    """One run of `scaler rollout` as `--history` lists it (`.scaler/history.json`)."""

    started: float
    ended: float
    kind: Kind
    from_image: str
    to_image: str
    status: str
    strategy: str
    replaced: int
    message: str


HISTORY_KEEP = 500
"""Entries the history keeps (the oldest go first)."""


def read_history(path: Path) -> tuple[HistoryEntry, ...]:
    """The rollout history, oldest first (empty when there is none)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return ()
    except (OSError, json.JSONDecodeError) as err:
        raise RolloutError(f"cannot read {path} ({err}); move it away to start afresh") from err
    try:
        return tuple(
            HistoryEntry(
                started=float(e["started"]),
                ended=float(e["ended"]),
                kind=e.get("kind") or "rollout",
                from_image=str(e["from_image"]),
                to_image=str(e["to_image"]),
                status=str(e["status"]),
                strategy=str(e.get("strategy") or ""),
                replaced=int(e.get("replaced") or 0),
                message=str(e.get("message") or ""),
            )
            for e in raw["entries"]
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RolloutError(f"{path} is not a rollout history ({err}); move it away") from err


def append_history(path: Path, entry: HistoryEntry) -> None:
    """Add one entry to the history, atomically (the whole file is rewritten)."""
    path = Path(path)
    if path.parent.name == BOOKKEEPING_DIR:
        bookkeeping_dir(path.parent.parent)
    entries = [*read_history(path), entry][-HISTORY_KEEP:]
    data = {"version": 1, "entries": [asdict(e) for e in entries]}
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def last_done(history: tuple[HistoryEntry, ...]) -> HistoryEntry | None:
    """The newest run that finished with every target on its image (what --undo undoes)."""
    return next((e for e in reversed(history) if e.status == "done"), None)
