"""What killed runs left behind, found by the run id scaler puts on everything it creates.

A bake's run id (8 hex digits) is on every resource it creates: the build droplet carries the
tags `scaler-bake` and `scaler-run-<id>`, the temporary key is named `scaler-bake-<id>`. Its
temp folder `scaler-bake-<id>-*` holds `run.json` (RUN_SCHEMA): the process that runs it, the
snapshot it is taking and whether it finished. `find_leftovers` (pure reads) lists what a dead
run left; `remove_leftovers` removes it. Only resources named or tagged with a run id count:
a user's own droplets, keys and snapshots are never candidates, and a snapshot only when a dead
run's record names it and the run's manifest does not list it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scaler.cloud import Cloud, CloudError, Droplet, created_at_epoch
from scaler.events import Say
from scaler.fsutil import write_atomic

BAKE_TAG = "scaler-bake"
RUN_TAG_PREFIX = "scaler-run-"
KEY_PREFIX = "scaler-bake-"
RUN_FILE = "run.json"
RUN_SCHEMA = 1
# Temp folders scaler makes; each is removed on exit, so one whose owner died is a leftover.
TEMP_PREFIXES = ("scaler-bake-", "scaler-ansible-", "scaler-cp-", "scaler-provider-")
_RUN_ID = re.compile(r"[0-9a-f]{8}")
_KEY_NAME = re.compile(r"scaler-bake-([0-9a-f]{8})")
# a cloud resource of a run this machine does not know is left alone until this old
DEFAULT_MIN_AGE = 3600.0

Kind = Literal["droplet", "key", "snapshot", "temp folder", "rollout record"]


def run_tag(run_id: str) -> str:
    """The tag every droplet of a run carries."""
    return RUN_TAG_PREFIX + run_id


def key_name(run_id: str) -> str:
    """The name of a run's temporary SSH key."""
    return KEY_PREFIX + run_id


# -- run records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """`run.json` in a bake's temp folder (schema version RUN_SCHEMA)."""

    run_id: str
    pid: int
    pid_start: str
    started: float
    manifest: str
    snapshot_name: str = ""
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        """The file's JSON."""
        return {
            "version": RUN_SCHEMA,
            "run_id": self.run_id,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "started": self.started,
            "manifest": self.manifest,
            "snapshot_name": self.snapshot_name,
            "finished": self.finished,
        }


def process_start(pid: int) -> str:
    """The start time of a process (field 22 of /proc/PID/stat), "" when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name may hold spaces and parentheses: fields start after the last ")"
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def alive(pid: int, pid_start: str) -> bool:
    """True when that process (not a later one with its pid) still runs."""
    if pid <= 0:
        return False
    start = process_start(pid)
    if start:
        return start == pid_start or not pid_start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # no /proc: cannot tell a reused pid apart
    return not Path("/proc/self/stat").exists()


def new_run_record(run_id: str, manifest: Path) -> RunRecord:
    """The record of a run starting now in this process."""
    pid = os.getpid()
    return RunRecord(run_id, pid, process_start(pid), time.time(), str(Path(manifest).resolve()))


def write_run_record(folder: Path, record: RunRecord) -> None:
    """Write the record into the run's temp folder (private: it sits beside the key)."""
    write_atomic(folder / RUN_FILE, json.dumps(record.to_json(), indent=1) + "\n", mode=0o600)


def read_run_record(folder: Path) -> RunRecord | None:
    """The record in a temp folder, None when it has none or cannot be read."""
    try:
        raw = json.loads((folder / RUN_FILE).read_text())
        return RunRecord(
            run_id=str(raw["run_id"]),
            pid=int(raw["pid"]),
            pid_start=str(raw.get("pid_start", "")),
            started=float(raw["started"]),
            manifest=str(raw.get("manifest", "")),
            snapshot_name=str(raw.get("snapshot_name", "")),
            finished=bool(raw.get("finished", False)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- finding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """One thing a dead run left: what it is, its id, and why it counts as scaler's."""

    kind: Kind
    ident: str
    why: str
    # None: reported, never removed (an unfinished rollout's record is how --resume goes on)
    remove: Callable[[], None] | None

    def describe(self) -> str:
        """One line for the report."""
        return f"{self.kind} {self.ident} ({self.why})"


# a folder without a record this young may be one whose owner is still filling it
_YOUNG = 120.0


def _owner_alive(folder: Path) -> bool:
    record = read_run_record(folder)
    if record is not None:
        return alive(record.pid, record.pid_start)
    with contextlib.suppress(OSError):
        if time.time() - folder.stat().st_mtime < _YOUNG:
            return True
    # folders without a record (ansible-runner's): an open file in them, or a process whose
    # command line names them, means their run is alive
    return _named_by_a_process(folder)


def _remove(folder: Path) -> None:
    """Remove a dead run's folder, ending what its run left working in it first (Ansible's
    forked workers outlive a killed ansible-playbook while their task runs)."""
    import signal

    for pid in _processes_using(folder):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder)


def _processes_using(folder: Path) -> list[int]:
    needle = str(folder)
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
                continue
            if os.readlink(entry / "cwd").startswith(needle):
                found.append(int(entry.name))
    return found


def mark_owner(folder: Path, what: str) -> None:
    """Record this process as the owner of a temp folder (cleanup judges it by that)."""
    write_run_record(folder, new_run_record(what, Path(os.devnull)))


def _named_by_a_process(folder: Path) -> bool:
    needle = str(folder)
    proc = Path("/proc")
    if not (proc / "self").exists():
        return True  # cannot tell: keep it
    me = str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == me:
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                return True
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(needle):
                        return True
            if os.readlink(entry / "cwd").startswith(needle):
                return True
    return False


def temp_folders(temp_dir: Path | None = None) -> list[Path]:
    """scaler's temp folders in temp_dir, else in the temp directory and /tmp."""
    dirs = {Path(temp_dir)} if temp_dir else {Path(tempfile.gettempdir()), Path("/tmp")}
    found: list[Path] = []
    for base in sorted(dirs):
        with contextlib.suppress(OSError):
            for entry in sorted(base.iterdir()):
                if (
                    entry.name.startswith(TEMP_PREFIXES)
                    and entry.is_dir()
                    and not entry.is_symlink()
                ):
                    with contextlib.suppress(OSError):
                        if entry.stat().st_uid == os.getuid():
                            found.append(entry)
    return found


def remove_dead_temp_folders(prefix: str, temp_dir: Path | None = None) -> list[Path]:
    """Remove this user's temp folders named prefix* whose owner is dead."""
    removed = []
    for folder in temp_folders(temp_dir):
        if folder.name.startswith(prefix) and not _owner_alive(folder):
            with contextlib.suppress(OSError):
                _remove(folder)
            removed.append(folder)
    return removed


def _age(created_at: str, now: float) -> float | None:
    created = created_at_epoch(created_at)
    return None if created is None else now - created


def _run_of_droplet(droplet: Droplet) -> str | None:
    for tag in droplet.tags:
        if tag.startswith(RUN_TAG_PREFIX) and _RUN_ID.fullmatch(tag[len(RUN_TAG_PREFIX) :]):
            return tag[len(RUN_TAG_PREFIX) :]
    return None


def _manifest_ids(path: str) -> set[int]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return set()
    ids = set()
    for build in data.get("builds") or () if isinstance(data, dict) else ():
        if isinstance(build, dict):
            with contextlib.suppress(ValueError, AttributeError):
                ids.add(int(str(build.get("artifact_id", "")).rpartition(":")[2]))
    return ids


def find_leftovers(
    cloud: Cloud | None,
    *,
    temp_dir: Path | None = None,
    min_age: float = DEFAULT_MIN_AGE,
    rollout_dirs: Sequence[Path] = (),
    now: float | None = None,
) -> list[Leftover]:
    """Everything dead scaler runs left: cloud resources by run id, temp folders, records."""
    now = time.time() if now is None else now
    found: list[Leftover] = []
    live_runs: set[str] = set()
    dead: dict[str, RunRecord] = {}
    for folder in temp_folders(temp_dir):
        record = read_run_record(folder)
        if _owner_alive(folder):
            if record is not None:
                live_runs.add(record.run_id)
            continue
        if record is not None:
            dead[record.run_id] = record
        why = f"run {record.run_id} died" if record else "its process is gone"
        found.append(Leftover("temp folder", str(folder), why, functools.partial(_remove, folder)))
    if cloud is not None:
        found += _cloud_leftovers(cloud, live_runs, dead, min_age, now)
    for directory in rollout_dirs:
        found += _rollout_leftovers(Path(directory))
    return found


def _cloud_leftovers(
    cloud: Cloud,
    live_runs: set[str],
    dead: dict[str, RunRecord],
    min_age: float,
    now: float,
) -> list[Leftover]:
    found: list[Leftover] = []
    young_runs: set[str] = set()
    for droplet in cloud.droplets(tag=BAKE_TAG):
        run = _run_of_droplet(droplet)
        if run is None or run in live_runs:
            continue
        age = _age(droplet.created_at, now)
        if run not in dead and (age is None or age < min_age):
            # maybe another machine's bake at work: not ours to judge yet
            young_runs.add(run)
            continue
        why = f"run {run} died" if run in dead else f"run {run}, {int((age or 0) // 60)} min old"
        found.append(
            Leftover(
                "droplet",
                str(droplet.id),
                f"{droplet.name}, tag {run_tag(run)}, {why}",
                functools.partial(cloud.delete_droplet, droplet.id),
            )
        )
    for key in cloud.ssh_keys():
        match = _KEY_NAME.fullmatch(key.name)
        if match is None:
            continue
        run = match.group(1)
        if run in live_runs or run in young_runs:
            continue
        if run not in dead and min_age > 0 and not _known_old(run, found):
            # keys carry no date: one of an unknown run goes only with its old droplet, or
            # when the caller asks for everything (--min-age 0)
            continue
        found.append(
            Leftover(
                "key",
                str(key.id),
                f"{key.name}, " + (f"run {run} died" if run in dead else "its run is gone"),
                functools.partial(cloud.delete_key, key.id),
            )
        )
    for run, record in dead.items():
        if not record.snapshot_name or record.finished:
            continue
        kept = _manifest_ids(record.manifest)
        for image in cloud.snapshot_images():
            if image.name != record.snapshot_name or image.id in kept:
                continue
            age = _age(image.created_at, now)
            if age is not None and age > now - record.started + 60:
                continue  # older than the run: someone else's snapshot of that name
            found.append(
                Leftover(
                    "snapshot",
                    str(image.id),
                    f"{image.name}, of unfinished run {run}, not in {record.manifest}",
                    functools.partial(cloud.delete_image, image.id),
                )
            )
    return found


def _known_old(run: str, found: list[Leftover]) -> bool:
    return any(f.kind == "droplet" and run_tag(run) in f.why for f in found)


def _rollout_leftovers(directory: Path) -> list[Leftover]:
    # imported here: rollout pulls in Terraform's runner, which cleanup of bakes does not need
    from scaler.rollout import stale_rollout_files

    found = []
    for path, why, removable in stale_rollout_files(directory):
        remove = functools.partial(path.unlink, missing_ok=True) if removable else None
        found.append(Leftover("rollout record", str(path), why, remove))
    return found


def remove_leftovers(leftovers: Sequence[Leftover], say: Say) -> list[tuple[Leftover, str]]:
    """Remove each; returns those that failed with the reason (one line)."""
    failed: list[tuple[Leftover, str]] = []
    for item in leftovers:
        if item.remove is None:
            continue
        try:
            item.remove()
            say(f"removed {item.describe()}")
        except (CloudError, OSError) as err:
            reason = " ".join(str(err).split())
            say(f"could not remove {item.kind} {item.ident}: {reason}")
            failed.append((item, reason))
    return failed
