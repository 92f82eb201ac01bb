"""The database password and other role secrets: from the environment, `-e @FILE` or a vault,
never on a command line, never left in a temp folder (issue 13, hole 6; issue 11, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from realbake import (  # noqa: F401 - fixtures
    EXAMPLE_STATE,
    ScalerProcess,
    api,
    bake_env,
    cloud_fixture,
    real_cloud_fixture,
    write_playbook,
)

from scaler.bake import BakeFailed, bake_image, role_uses
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.local.api import LocalCloud
from scaler.provision import PLAYBOOK, ROLES_DIR

SCALER = Path(sys.executable).parent / "scaler"
PASSWORD = "s3cret-Pa55word-in-env"
VAULTED = "vaulted-Va1ue-9876"


def _play(tmp_path: Path) -> Path:
    """In the droplet: what the role got, fetched back here; then a pause to look around."""
    out = tmp_path / "out"
    out.mkdir()
    tasks = [
        {
            "name": "What the role got",
            "ansible.builtin.copy": {
                "dest": "/root/got.json",
                "content": "{{ {'password': welp_db_password, 'vaulted': vaulted_var,"
                " 'plain': plain_var} | to_json }}",
            },
        },
        {
            "name": "Fetch it",
            "ansible.builtin.fetch": {"src": "/root/got.json", "dest": f"{out}/", "flat": True},
        },
        {"name": "Pause", "ansible.builtin.command": "sleep 3"},
    ]
    return write_playbook(tmp_path, tasks)


def _cmdlines() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return found


def _holding(folder: Path, needle: str) -> list[Path]:
    hits = []
    for path in folder.rglob("*"):
        try:
            if (
                path.is_file()
                and not path.is_symlink()
                and needle in path.read_text(errors="replace")
            ):
                hits.append(path)
        except OSError:
            continue
    return hits


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
    args = ["bake", "--state", str(EXAMPLE_STATE), "--playbook", str(playbook)]
    args += ["--project", "secrets", "--poll-interval", "0.1", "--json"]
    args += ["-e", f"@{plain}", "-e", f"@{secret}", "--vault-password-file", str(vault_pass)]
    bake = ScalerProcess(args, tmp_path, env)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # every command line on this machine while the bake runs
        while not stop.is_set():
            seen.extend(c for c in _cmdlines() if "ansible" in c or "scaler" in c)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        bake.wait_for(r"ansible \w+: \[packerbox\] Fetch it", timeout=240)
        # the play runs: ansible-playbook has read its extra vars, and they are gone from disk
        during = _holding(temp, PASSWORD)
        code, out, err = bake.finish()
    finally:
        stop.set()
        watcher.join(timeout=10)
        if bake.proc.poll() is None:
            bake.proc.kill()
    assert code == 0, err
    image = json.loads(out)["id"]
    try:
        got = json.loads((tmp_path / "out" / "got.json").read_text())
        assert got == {"password": PASSWORD, "vaulted": VAULTED, "plain": "from-a-file"}
        playbooks = [c for c in seen if "ansible-playbook" in c]
        assert playbooks, "the watcher never saw ansible-playbook"
        assert any(f"@{secret}" in c and "--vault-password-file" in c for c in playbooks)
        assert not [c for c in seen if PASSWORD in c or VAULTED in c]
        assert during == []
        assert PASSWORD not in err + out
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


# No API answers here: a real cloud to the bake (not the local one), which fails at its first
# request unless the inputs fail first.
NOWHERE = "http://127.0.0.1:9/v2/"


def test_no_password_is_demanded_for_a_role_that_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WELP_DB_PASSWORD", raising=False)
    config = apply(
        BakeConfig(),
        {"playbook": str(_user_role(tmp_path)), "roles_path": str(tmp_path / "none")},
    )
    with pytest.raises(BakeFailed) as caught:
        bake_image(config, Cloud("t", NOWHERE, pacing=Pacing(retries=0)))
    assert str(caught.value).startswith("bake failed while looking up the base image")


def test_the_bundled_role_asks_for_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WELP_DB_PASSWORD", raising=False)
    with pytest.raises(BakeFailed) as caught:
        bake_image(BakeConfig(), Cloud("t", NOWHERE, pacing=Pacing(retries=0)))
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
