"""Packer's manifest.json: read it, append a build, find the last artifact.

The format is Packer's manifest post-processor's (1.6.6)::

    {"builds": [{"name": "digitalocean", "builder_type": "digitalocean",
                 "build_time": 1795618954, "files": null, "artifact_id": "ams3,nyc3:170000001",
                 "packer_run_uuid": "...", "custom_data": {...}}],
     "last_run_uuid": "..."}

`artifact_id` is "<regions joined by ','>:<snapshot id>"; Terraform's droplet image needs the
bare id (Artifact.id). `files` is null, as Packer writes it for a digitalocean build (a
snapshot has no local files and Go marshals the empty list as null), so tools that read Packer's
manifests read ours unchanged; `custom_data` is null when empty, a map of strings otherwise.
Files are replaced atomically.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError
from scaler.fsutil import read_text, strict_json, write_atomic

BUILDER_TYPE = "digitalocean"
BUILD_NAME = "digitalocean"


class ManifestError(ScalerError):
    """The manifest is missing, unreadable or holds no usable build."""


@dataclass(frozen=True)
class Artifact:
    """One baked snapshot as the manifest records it."""

    id: int
    regions: tuple[str, ...]
    name: str
    build_time: int
    custom_data: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_id(self) -> str:
        """Packer's artifact_id: regions joined by ',' then ':' and the id."""
        return f"{','.join(self.regions)}:{self.id}"


def artifact_id(regions: tuple[str, ...] | list[str], image_id: int) -> str:
    """Packer's artifact_id for a DigitalOcean snapshot."""
    return f"{','.join(regions)}:{image_id}"


def parse_artifact_id(text: str) -> tuple[tuple[str, ...], int]:
    """Regions and id from "<regions>:<id>" (a bare id has no regions)."""
    regions, _, ident = text.strip().rpartition(":")
    try:
        image_id = int(ident)
    except ValueError:
        raise ManifestError(
            f"artifact_id {text!r} is not '<regions>:<snapshot id>'; was it written by a "
            "digitalocean build?"
        ) from None
    return tuple(r for r in regions.split(",") if r), image_id


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest's JSON; an empty one when the file does not exist."""
    try:
        text = read_text(path, "manifest")
    except FileNotFoundError:
        return {"builds": [], "last_run_uuid": ""}
    try:
        data = strict_json(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"manifest {path} is not JSON ({err.msg} at line {err.lineno}); fix or move it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("builds", []), list):
        raise ManifestError(f"manifest {path} has no 'builds' list; is it a Packer manifest?")
    data.setdefault("builds", [])
    return data


def append_build(
    path: Path,
    *,
    regions: tuple[str, ...] | list[str],
    image_id: int,
    build_time: int,
    custom_data: Mapping[str, Any] | None = None,
    run_uuid: str | None = None,
    name: str = BUILD_NAME,
    strip_time: bool = False,
) -> dict[str, Any]:
    """Append one build to the manifest (created if absent) atomically; returns the entry.

    strip_time leaves build_time out, as Packer's manifest post-processor does."""
    data = read_manifest(path)
    run = run_uuid or str(uuid.uuid4())
    entry: dict[str, Any] = {
        "name": name,
        "builder_type": BUILDER_TYPE,
        "build_time": int(build_time),
        "files": None,
        "artifact_id": artifact_id(regions, image_id),
        "packer_run_uuid": run,
        "custom_data": dict(custom_data) if custom_data else None,
    }
    if strip_time:
        del entry["build_time"]
    data["builds"].append(entry)
    data["last_run_uuid"] = run
    write_atomic(Path(path), json.dumps(data, indent=2) + "\n")
    return entry


def last_artifact(path: Path) -> Artifact:
    """The snapshot of the last run's digitalocean build (what `--from-manifest` rolls out)."""
    if not Path(path).is_file():
        raise ManifestError(f"no manifest at {path}; run `scaler bake` first or pass its path")
    data = read_manifest(path)
    builds = [
        b
        for b in data["builds"]
        if isinstance(b, dict) and b.get("builder_type") == BUILDER_TYPE and b.get("artifact_id")
    ]
    if not builds:
        raise ManifestError(f"manifest {path} holds no digitalocean build; run `scaler bake`")
    last_run = data.get("last_run_uuid")
    of_last_run = [b for b in builds if last_run and b.get("packer_run_uuid") == last_run]
    build = (of_last_run or builds)[-1]
    regions, image_id = parse_artifact_id(str(build["artifact_id"]))
    custom = build.get("custom_data")
    custom_data = dict(custom) if isinstance(custom, dict) else {}
    return Artifact(
        id=image_id,
        regions=regions,
        name=str(custom_data.get("snapshot_name", build.get("name", ""))),
        build_time=int(build.get("build_time") or 0),
        custom_data=custom_data,
    )
