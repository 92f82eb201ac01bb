"""manifest.json in Packer's format: append atomically, read the last artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scaler.manifest import (
    Artifact,
    ManifestError,
    append_build,
    last_artifact,
    parse_artifact_id,
)
from scaler.tfvars import image_id_from


def test_reads_packers_own_manifest(shared_data: Path) -> None:
    artifact = last_artifact(shared_data / "packer" / "manifest-packer-1.6.6.json")
    assert artifact == Artifact(
        id=170000002, regions=("ams3", "nyc3"), name="digitalocean", build_time=1795619101
    )


def test_append_keeps_packers_builds_and_sets_last_run(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text((shared_data / "packer" / "manifest-packer-1.6.6.json").read_text())
    entry = append_build(
        path,
        regions=("ams3", "sfo2"),
        image_id=170000009,
        build_time=1795700000,
        custom_data={"snapshot_name": "nav-guide_25-01-02-03-04-05", "provisioning_sha256": "ab"},
    )
    data = json.loads(path.read_text())
    assert len(data["builds"]) == 3 and data["builds"][-1] == entry
    assert data["last_run_uuid"] == entry["packer_run_uuid"]
    assert entry["artifact_id"] == "ams3,sfo2:170000009"
    # Packer's keys in Packer's order, and Packer's value types (files null, strings in
    # custom_data: Packer's is a map of strings)
    packers = data["builds"][0]
    assert list(entry) == list(packers)
    assert entry["files"] is None and packers["files"] is None
    assert {k: type(v) for k, v in entry.items() if k != "custom_data"} == {
        k: type(v) for k, v in packers.items() if k != "custom_data"
    }
    assert all(isinstance(v, str) for v in entry["custom_data"].values())
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", entry["packer_run_uuid"])
    artifact = last_artifact(path)
    assert (artifact.id, artifact.name, artifact.artifact_id) == (
        170000009,
        "nav-guide_25-01-02-03-04-05",
        "ams3,sfo2:170000009",
    )
    # what terraform.tfvars gets: the bare id
    assert image_id_from(artifact.artifact_id) == "170000009"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_missing_and_broken_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"^no manifest at .*; run `scaler bake` first"):
        last_artifact(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"is not JSON \(.* at line 1\); fix or move it$"):
        last_artifact(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text('{"builds": [], "last_run_uuid": ""}')
    with pytest.raises(ManifestError, match=r"holds no digitalocean build; run `scaler bake`$"):
        last_artifact(tmp_path / "manifest.json")


def test_artifact_id_forms() -> None:
    assert parse_artifact_id("nyc3:12") == (("nyc3",), 12)
    assert parse_artifact_id("12") == ((), 12)
    with pytest.raises(ManifestError, match="is not '<regions>:<snapshot id>'"):
        parse_artifact_id("nyc3:abc")


def test_append_without_custom_data_writes_null_like_packer(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    first = append_build(path, regions=("nyc3",), image_id=170000001, build_time=1795618954)
    second = append_build(path, regions=("nyc3",), image_id=170000002, build_time=1795619101)
    data = json.loads(path.read_text())
    assert data["builds"] == [first, second] and first["custom_data"] is None
    assert data["last_run_uuid"] == second["packer_run_uuid"] != first["packer_run_uuid"]
    assert last_artifact(path).id == 170000002
