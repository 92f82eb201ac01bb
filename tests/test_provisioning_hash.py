"""The provisioning hash covers what a bake runs: the user's playbook and every role it resolves
(beside the playbook, ANSIBLE_ROLES_PATH, ansible.cfg's roles_path, meta dependencies), the user
data and the role's var files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_snapshots
from tutorial import set_page, write_project

from scaler.bake import config_provisioning_hash, resolve_roles, role_uses
from scaler.cli import main
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, load_packer_template
from scaler.local.api import LocalCloud
from scaler.manifest import append_build
from scaler.rebake import base_image_now


def tutorial_config(folder: Path) -> BakeConfig:
    """The bake settings as `scaler bake --packer-template web-node.json -var-file ...` has."""
    return load_packer_template(
        folder / "web-node.json", BakeConfig(), var_file=folder / "variables.json"
    ).config


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ANSIBLE_ROLES_PATH", raising=False)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return write_project(tmp_path / "site")


def test_editing_the_users_role_beside_the_playbook_changes_the_hash(project: Path) -> None:
    config = tutorial_config(project)
    assert resolve_roles(config.playbook, config.roles_path) == [
        ("site", project / "roles" / "site")
    ]
    before = config_provisioning_hash(config)
    assert config_provisioning_hash(tutorial_config(project)) == before  # stable
    set_page(project, "tutorial site v2")
    assert config_provisioning_hash(tutorial_config(project)) != before


def test_a_role_on_ansible_roles_path_and_its_dependency(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shelf = tmp_path / "shelf"
    (project / "roles").rename(tmp_path / "moved")
    (tmp_path / "moved").rename(shelf)
    dep = shelf / "common" / "tasks"
    dep.mkdir(parents=True)
    (dep / "main.yml").write_text("---\n- ansible.builtin.ping:\n")
    (shelf / "site" / "meta").mkdir()
    (shelf / "site" / "meta" / "main.yml").write_text("---\ndependencies:\n  - role: common\n")
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(shelf))
    config = tutorial_config(project)
    assert resolve_roles(config.playbook, config.roles_path) == [
        ("common", shelf / "common"),
        ("site", shelf / "site"),
    ]
    before = config_provisioning_hash(config)
    (dep / "main.yml").write_text("---\n- ansible.builtin.ping:\n- ansible.builtin.ping:\n")
    assert config_provisioning_hash(config) != before


def test_a_role_found_through_ansible_cfg(project: Path, tmp_path: Path) -> None:
    (project / "roles").rename(project / "galaxy")
    (project / "ansible.cfg").write_text("[defaults]\nroles_path = galaxy\n")
    config = tutorial_config(project)
    assert resolve_roles(config.playbook, config.roles_path) == [
        ("site", (project / "galaxy" / "site").resolve())
    ]
    before = config_provisioning_hash(config)
    (project / "galaxy" / "site" / "defaults" / "main.yml").write_text('site_page: "v3"\n')
    assert config_provisioning_hash(config) != before


def test_the_token_is_no_reason_to_rebake(project: Path) -> None:
    variables = json.loads((project / "variables.json").read_text())
    before = config_provisioning_hash(tutorial_config(project))
    (project / "variables.json").write_text(
        json.dumps({**variables, "do_api_token": "dop_v1_" + "ab" * 32}, indent=2) + "\n"
    )
    assert config_provisioning_hash(tutorial_config(project)) == before


def test_a_role_var_file_is_in_the_hash(project: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    extra = tmp_path / "vars.yml"
    extra.write_text("site_page: a\n")
    config = replace(tutorial_config(project), extra_var_files=(extra,))
    before = config_provisioning_hash(config)
    extra.write_text("site_page: b\n")
    assert config_provisioning_hash(config) != before


def test_the_role_declares_no_database_password(project: Path) -> None:
    config = tutorial_config(project)
    assert not role_uses(config.playbook, config.roles_path, "welp_db_password")


def test_rebake_check_says_due_after_the_role_is_edited(
    project: Path, fresh_cloud: LocalCloud
) -> None:
    """`scaler rebake --check` with the user's Packer files: not due, then due on the edit."""
    (snap,) = make_snapshots(fresh_cloud, ["tut_1"])
    client = Cloud("t", fresh_cloud.endpoint, pacing=Pacing.fast())
    base_id, _ = base_image_now(client, "debian-12-x64")
    append_build(
        project / "manifest.json",
        regions=["nyc3"],
        image_id=snap,
        build_time=1795000000,
        custom_data={
            "snapshot_name": "tut_1",
            "base_image": "debian-12-x64",
            "base_image_id": base_id,
            "provisioning_sha256": config_provisioning_hash(tutorial_config(project)),
        },
    )
    args = [
        "rebake",
        "--check",
        "--packer-template",
        str(project / "web-node.json"),
        "--packer-var-file",
        str(project / "variables.json"),
        "--manifest",
        str(project / "manifest.json"),
        "-C",
        str(project),
    ]
    runner = CliRunner()
    same = runner.invoke(main, args, env=fresh_cloud.env())
    assert same.exit_code == 0, same.output
    assert same.stdout == f"{project}: not-due: nothing says a rebake is due\n"
    set_page(project, "tutorial site v2")
    due = runner.invoke(main, args, env=fresh_cloud.env())
    assert due.exit_code == 6, due.output
    assert due.stdout.startswith(f"{project}: due: ")
    assert "provisioning" in due.stdout
