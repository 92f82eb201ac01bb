"""Where the bake's Ansible finds roles: the user's ANSIBLE_ROLES_PATH (or ansible.cfg's
roles_path) first, scaler's roles appended, never replacing them; galaxy_file installs.
Real ansible-playbook and ansible-galaxy; the roles' one task is delegated to this controller
and writes under tmp_path, so no build host is needed (role lookup is the point here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scaler.provision import (
    ProvisionFailed,
    SshConnection,
    find_ansible_cfg,
    install_galaxy_roles,
    roles_search_path,
    run_playbook,
)

INVENTORY = {"all": {"hosts": {"packerbox": {}}}}


def nowhere(tmp: Path) -> SshConnection:
    """A build host no task connects to (every task runs on localhost)."""
    return SshConnection(host="127.0.0.1", user="nobody", private_key_file=tmp / "no-key", port=9)


def make_role(folder: Path, name: str, out: Path) -> Path:
    """A role that writes `<out>/<name>`."""
    tasks = folder / name / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(
        json.dumps(
            [
                {
                    "ansible.builtin.copy": {"content": name, "dest": str(out / name)},
                    "delegate_to": "localhost",
                }
            ]
        )
    )
    return folder / name


def playbook(folder: Path, roles: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "play.yml"
    path.write_text(json.dumps([{"hosts": "packerbox", "gather_facts": False, "roles": roles}]))
    return path


def test_user_roles_path_is_kept_and_ours_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    galaxy = tmp_path / "galaxy-roles"  # as `ansible-galaxy install -p` would leave it
    ours = tmp_path / "ours"
    make_role(galaxy, "theirs", out)
    make_role(ours, "bundled", out)
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(galaxy))
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    play = playbook(tmp_path / "play", ["theirs", "bundled"])
    assert roles_search_path(find_ansible_cfg(play), [ours]) == [str(galaxy), str(ours)]
    run_playbook(INVENTORY, playbook=play, connection=nowhere(tmp_path), roles_path=ours)
    assert (out / "theirs").read_text() == "theirs" and (out / "bundled").read_text() == "bundled"


def test_ansible_cfg_beside_the_playbook_and_ansible_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    project = tmp_path / "project"
    make_role(project / "cfgroles", "fromcfg", out)
    (project / "ansible.cfg").write_text("[defaults]\nroles_path = cfgroles\n")
    monkeypatch.delenv("ANSIBLE_ROLES_PATH", raising=False)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    play = playbook(project, ["fromcfg"])
    assert find_ansible_cfg(play) == project / "ansible.cfg"
    run_playbook(INVENTORY, playbook=play, connection=nowhere(tmp_path), roles_path=tmp_path)
    assert (out / "fromcfg").read_text() == "fromcfg"

    elsewhere = tmp_path / "cfg"
    make_role(elsewhere / "r", "viaenv", out)
    (elsewhere / "my.cfg").write_text("[defaults]\nroles_path = r\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(elsewhere / "my.cfg"))
    play = playbook(tmp_path / "other", ["viaenv"])
    run_playbook(INVENTORY, playbook=play, connection=nowhere(tmp_path), roles_path=tmp_path)
    assert (out / "viaenv").read_text() == "viaenv"


def test_a_role_missing_everywhere_names_the_search_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", str(tmp_path / "user-roles"))
    play = playbook(tmp_path / "p", ["nowhere"])
    with pytest.raises(ProvisionFailed) as err:
        run_playbook(INVENTORY, playbook=play, connection=nowhere(tmp_path), roles_path=tmp_path)
    assert "the role 'nowhere' was not found" in str(err.value)
    assert str(tmp_path / "user-roles") in str(err.value)


def test_galaxy_file_installs_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    source = tmp_path / "src"
    make_role(source, "packaged", out)
    (source / "packaged" / "meta").mkdir()
    (source / "packaged" / "meta" / "main.yml").write_text(
        "galaxy_info:\n  author: t\n  description: t\n  license: MIT\n"
        '  min_ansible_version: "2.9"\n  platforms: []\ndependencies: []\n'
    )
    tarball = tmp_path / "packaged.tar.gz"
    subprocess.run(["tar", "czf", str(tarball), "-C", str(source), "packaged"], check=True)
    requirements = tmp_path / "requirements.yml"
    requirements.write_text(f"- src: file://{tarball}\n  name: galaxyrole\n")
    into = tmp_path / "installed"
    install_galaxy_roles(requirements, into)
    assert (into / "galaxyrole" / "tasks" / "main.yml").is_file()
    monkeypatch.delenv("ANSIBLE_ROLES_PATH", raising=False)
    play = playbook(tmp_path / "p", ["galaxyrole"])
    run_playbook(
        INVENTORY,
        playbook=play,
        connection=nowhere(tmp_path),
        roles_path=tmp_path / "none",
        extra_roles=[into],
    )
    assert (out / "packaged").read_text() == "packaged"
    requirements.write_text(f"- src: file://{tmp_path}/missing.tar.gz\n  name: gone\n")
    with pytest.raises(ProvisionFailed, match=r"^ansible-galaxy install -r .* failed \(rc 1\): "):
        install_galaxy_roles(requirements, into)
