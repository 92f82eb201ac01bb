"""A command that would fall back to scaler's bundled playbook or its default project name says
so, or refuses with what to pass (a tutorial user's folder has neither scaler.toml nor scaler's
files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_snapshots
from tutorial import write_project

from scaler.cli import main
from scaler.local.api import LocalCloud


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SCALER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "terraform.tfvars").write_text('image_slug = "debian-12-x64"\n')
    return tmp_path


def test_rollout_without_an_image_or_bake_settings_refuses(folder: Path) -> None:
    result = CliRunner().invoke(
        main, ["rollout", "-C", "stack", "--yes"], env={"SCALER_CONFIG": ""}
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: no image to roll out and no bake settings to bake one: pass --image ID or "
        "--from-manifest manifest.json, or --bake-config scaler.toml (a [bake] table; none was "
        "found here, in a parent folder or in $SCALER_CONFIG)"
    )


def test_rebake_without_bake_settings_refuses(folder: Path) -> None:
    result = CliRunner().invoke(
        main, ["rebake", "--check", "-C", "stack"], env={"SCALER_CONFIG": ""}
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: no bake settings: pass --packer-template wp-node.json --packer-var-file "
        "variables.json (your Packer files), or --config scaler.toml (a [bake] table; none was "
        "found here, in a parent folder or in $SCALER_CONFIG)"
    )


def test_snapshots_list_takes_the_project_from_the_packer_var_file(
    folder: Path, fresh_cloud: LocalCloud
) -> None:
    project = write_project(folder / "site")
    make_snapshots(fresh_cloud, ["tut_1", "wordpress_1"])
    env = {**fresh_cloud.env(), "SCALER_CONFIG": ""}
    runner = CliRunner()
    named = runner.invoke(
        main,
        ["snapshots", "list", "-C", "stack", "--packer-var-file", str(project / "variables.json")],
        env=env,
    )
    assert named.exit_code == 0, named.output
    assert [line.split()[1] for line in named.stdout.splitlines()[1:]] == ["tut_1"]
    assert "note:" not in named.stderr
    templated = runner.invoke(
        main,
        [
            "snapshots",
            "list",
            "-C",
            "stack",
            "--json",
            "--packer-template",
            str(project / "web-node.json"),
            "--packer-var-file",
            str(project / "variables.json"),
        ],
        env=env,
    )
    assert templated.exit_code == 0, templated.output
    assert '"project": "tut"' in templated.stdout
    defaulted = runner.invoke(main, ["snapshots", "list", "-C", "stack"], env=env)
    assert defaulted.exit_code == 0, defaulted.output
    assert defaulted.stderr.splitlines()[-1] == (
        "note: listing project 'wordpress', scaler's default (nothing here names one); pass "
        "--project NAME, --packer-var-file variables.json (its project_name), or set project in "
        "scaler.toml's [bake]"
    )
