"""The database password and other role secrets: from the environment, `-e @FILE` or a vault,
never on a command line, never left in a temp folder (issue 13, hole 6; issue 11, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_bake import (
    EXAMPLE_STATE,
    SCALER,
    api,
    bake_cloud_fixture,  # noqa: F401 - fixtures shared with tests/test_bake.py
    bake_env,
    cloud_fixture,  # noqa: F401
    write_playbook,
)

from scaler.bake import BakeFailed, bake_image, role_uses
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.local.api import LocalCloud
from scaler.provision import PLAYBOOK, ROLES_DIR

PASSWORD = "s3cret-Pa55word-in-env"
VAULTED = "vaulted-Va1ue-9876"


def _play(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "needle").write_text(PASSWORD + "\n")
    tasks = [
        {
            # while ansible-playbook runs: every command line on this machine, and every file
            # under the bake's temp dir that holds the password
            "name": "Look around",
            "ansible.builtin.shell": (
                f"for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done "
                f'> {out}/cmdlines 2>/dev/null; grep -rlFf {tmp_path}/needle "$TMPDIR_OF_BAKE" '
                f"> {out}/files || true"
            ),
            # the needle comes from a file: in the command or its environment (Ansible puts
            # that on the module's command line) it would be in a cmdline itself
            "environment": {"TMPDIR_OF_BAKE": str(tmp_path / "t")},
        },
        {
            "name": "What the role got",
            "ansible.builtin.copy": {
                "dest": str(out / "got.json"),
                "content": "{{ {'password': welp_db_password, 'vaulted': vaulted_var,"
                " 'plain': plain_var} | to_json }}",
            },
        },
    ]
    return write_playbook(tmp_path, tasks)


def _vault(tmp_path: Path) -> tuple[Path, Path]:
    secret = tmp_path / "secret.yml"
    secret.write_text(f"vaulted_var: {VAULTED}\n")
    password = tmp_path / "vault-pass"
    password.write_text("vault-password\n")
    vault = Path(sys.executable).parent / "ansible-vault"
    subprocess.run(
        [str(vault), "encrypt", "--vault-password-file", str(password), str(secret)],
        check=True,
        capture_output=True,
    )
    assert VAULTED not in secret.read_text()
    return secret, password


def test_password_from_the_environment_and_vars_from_a_vault(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    playbook = _play(tmp_path)
    secret, vault_pass = _vault(tmp_path)
    plain = tmp_path / "plain.yml"
    plain.write_text("plain_var: from-a-file\n")
    temp = tmp_path / "t"
    temp.mkdir()
    env = {**bake_env(cloud, tmp_path), "TMPDIR": str(temp), "WELP_DB_PASSWORD": PASSWORD}
    argv = [
        str(SCALER),
        "bake",
        "--state",
        str(EXAMPLE_STATE),
        "--local-state-dir",
        str(cloud.state_dir),
        "--connection",
        "local",
        "--playbook",
        str(playbook),
        "--project",
        "secrets",
        "--poll-interval",
        "0.05",
        "-e",
        f"@{plain}",
        "-e",
        f"@{secret}",
        "--vault-password-file",
        str(vault_pass),
        "--json",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)["id"]
    try:
        out = tmp_path / "out"
        got = json.loads((out / "got.json").read_text())
        assert got == {"password": PASSWORD, "vaulted": VAULTED, "plain": "from-a-file"}
        cmdlines = (out / "cmdlines").read_text()
        assert "ansible-playbook" in cmdlines  # the look saw the run itself
        assert f"@{secret}" in cmdlines and "--vault-password-file" in cmdlines
        assert PASSWORD not in cmdlines and VAULTED not in cmdlines
        # while the play ran, no file under the temp dir held the password any more
        assert (out / "files").read_text() == ""
        assert PASSWORD not in result.stderr + result.stdout
        assert list(temp.iterdir()) == []
    finally:
        api(cloud, "DELETE", f"images/{image}")


def _user_role(tmp_path: Path) -> Path:
    role = tmp_path / "roles" / "mysite" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- ansible.builtin.ping: {}\n")
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: packerbox\n  roles:\n    - role: mysite\n")
    return playbook


def test_role_uses_reads_the_roles_the_playbook_names(tmp_path: Path) -> None:
    assert role_uses(PLAYBOOK, ROLES_DIR, "welp_db_password")
    playbook = _user_role(tmp_path)
    assert not role_uses(playbook, tmp_path / "elsewhere", "welp_db_password")
    (tmp_path / "roles" / "mysite" / "defaults").mkdir()
    (tmp_path / "roles" / "mysite" / "defaults" / "main.yml").write_text("welp_db_password: ''\n")
    assert role_uses(playbook, tmp_path / "elsewhere", "welp_db_password")


def test_no_password_is_demanded_for_a_role_that_has_none(
    cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WELP_DB_PASSWORD", raising=False)
    config = apply(
        BakeConfig(),
        {"playbook": str(_user_role(tmp_path)), "roles_path": str(tmp_path / "none")},
    )
    # a real cloud (no droplet_root): only the token is refused, not a missing password
    with pytest.raises(BakeFailed) as caught:
        bake_image(config, Cloud("bad", cloud.endpoint + "nowhere/", pacing=Pacing.fast()))
    assert "welp_db_password" not in str(caught.value)


def test_the_bundled_role_asks_for_the_password_from_the_environment(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WELP_DB_PASSWORD", raising=False)
    with pytest.raises(BakeFailed) as caught:
        bake_image(BakeConfig(), Cloud("test", cloud.endpoint, pacing=Pacing.fast()))
    assert str(caught.value) == (
        "bake failed while checking the inputs: no welp_db_password for wp-config.php; set "
        "WELP_DB_PASSWORD in the environment (or pass -e @vars.yml, --vault-password-file, or "
        "[bake.extra_vars] in scaler.toml); nothing to remove"
    )


@pytest.mark.parametrize("command", ["bake", "rollout", "rebake"])
def test_every_command_that_bakes_takes_the_role_inputs(command: str) -> None:
    result = subprocess.run(
        [str(SCALER), command, "--help"], capture_output=True, text=True, check=True
    )
    assert "-e, --extra-var NAME=VALUE|@FILE" in result.stdout
    assert "--vault-password-file" in result.stdout
    assert "WELP_DB_PASSWORD" in result.stdout
