"""Remote state for real: Terraform's pg backend on a real PostgreSQL server (Debian's package).

The test starts its own server (initdb, pg_ctl) on a loopback port in a temporary folder and stops
it, also on failure. Two checkouts of one stack share its state there: the inventory reads it, one
rollout runs, and Terraform's state lock keeps a second, concurrent rollout off.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, module_cloud, need, wait_for
from test_rollout import FAST, WEB_PORT, make_image, terraform_commands

from scaler.cli import main
from scaler.local.api import LocalCloud
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

BIN = Path(sys.executable).parent
BACKEND = 'terraform {\n  backend "pg" {}\n}\n'

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str | None:
    # Debian keeps the server programs out of PATH, under /usr/lib/postgresql/<version>/bin.
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres (or nobody) user."""
    if os.geteuid() != 0:
        return argv
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--", *argv]
    pytest.fail("running as root, and no postgres or nobody user to run PostgreSQL as")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of this module's own on 127.0.0.1; yields the pg backend's conn_str."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    need(initdb is not None and pg_ctl is not None, "PostgreSQL is not installed (postgresql)")
    assert initdb is not None and pg_ctl is not None
    # Not under pytest's tmp_path: that is private to root, and the server runs as another user.
    top = Path(tempfile.mkdtemp(prefix="scaler-pg-"))
    data = top / "data"
    if os.geteuid() == 0:
        user = _as_server_user([])[2]
        entry = pwd.getpwnam(user)
        os.chown(top, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    started = False
    try:
        subprocess.run(
            _as_server_user(
                [initdb, "-D", str(data), "-U", "scaler", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {top}"
        started = True
        subprocess.run(
            _as_server_user(
                [pg_ctl, "-D", str(data), "-o", options, "-l", str(top / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        yield f"postgres://scaler@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        if started:
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(top, ignore_errors=True)


def _advisory_locks(conn: str) -> int:
    """How many advisory locks are held: the pg backend's state lock is one."""
    psql = _pg_bin("psql")
    assert psql is not None
    done = subprocess.run(
        [
            *(psql, conn, "-tAc"),
            "select count(*) from pg_locks where locktype = 'advisory' and granted",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of this module's own: quick delays, no rate limit, web on WEB_PORT."""
    with module_cloud(
        tmp_path_factory, "pg-cloud", rate_limit_per_minute=100_000, web_port=WEB_PORT
    ) as cloud:
        yield cloud


def _checkout(tmp_path: Path, name: str, image: str) -> Path:
    """A copy of terraform/ with a pg backend (configured at init) and its own tfvars."""
    directory = Path(shutil.copytree(ROOT / "terraform", tmp_path / name))
    (directory / "backend.tf").write_text(BACKEND)
    (directory / "terraform.tfvars").write_text(f'image_slug    = "{image}"\nwp_node_count = 3\n')
    return directory


def _env(cloud: LocalCloud, **extra: str) -> dict[str, str]:
    return {**cloud.env(), "SCALER_LOCAL_WEB_PORT": str(WEB_PORT), **extra}


def test_inventory_and_rollouts_share_a_pg_backend_and_its_lock(
    postgres: str,
    cloud: LocalCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = make_image(cloud, "pg-1", "<?php /* WordPress */ ?>\n")
    good2 = make_image(cloud, "pg-2", "<?php /* WordPress, newer */ ?>\n")
    first = _checkout(tmp_path, "alice", good)
    with local_provider(cloud.env()) as env:
        tf = Terraform(first, env=env, backend_config=[f"conn_str={postgres}"])
        tf.init()
        tf.apply()
    assert not (first / "terraform.tfstate").exists()  # the state lives in PostgreSQL

    # The inventory: `terraform state pull` in the Terraform directory, so any backend works.
    monkeypatch.chdir(tmp_path)
    for name in ("TF_STATE", "SCALER_TERRAFORM_DIR", "SCALER_TERRAFORM", "TF_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    listed = CliRunner().invoke(main, ["inventory", "--terraform-dir", "alice", "--list", "-v"])
    assert listed.exit_code == 0, listed.output
    assert listed.stderr == f"running `terraform state pull` in {first} (from --terraform-dir)\n"
    doc = json.loads(listed.stdout)
    assert len(doc["wp_node"]["hosts"]) == 3
    assert doc["ha_db_fip"]["hosts"] == ["module.galera.digitalocean_reserved_ip.ha_db_fip"]
    # The inventory plugin (through the embedded engine) and the script read the same state.
    source = tmp_path / "tfstate.yml"
    source.write_text(
        "plugin: scaler.tfstate.tfstate\nterraform_dir: alice\nterraform_bin: embedded\n"
    )
    ansible_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collection"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    graphs = [
        subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", inventory, "--graph"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**ansible_env, **env},
        )
        for inventory, env in (
            (str(source), {}),
            (f"{ROOT}/inventory/", {"SCALER_TERRAFORM_DIR": "alice"}),
        )
    ]
    assert [g.returncode for g in graphs] == [0, 0], [g.stderr for g in graphs]
    assert graphs[0].stdout == graphs[1].stdout
    assert "|--digitalocean_droplet.wp_node.2" in graphs[0].stdout

    # A second checkout of the stack, never initialised: its rollout runs init with
    # --backend-config, in the TF_DATA_DIR it is given, with the embedded engine.
    second = _checkout(tmp_path, "bob", good)
    before = (second / "terraform.tfvars").read_bytes()
    # Droplets boot slowly now: the first rollout's apply holds the state lock for 25 s, time
    # enough for the second one (init, state pull, plan) even on a busy machine.
    cloud.delays = replace(cloud.delays, droplet_boot=25.0)
    # one rolling batch of all three: --strategy all would move the old droplets aside in the
    # state (a surge) before its apply, and a second rollout would stop at that, not the lock
    rollout = [BIN / "scaler", "rollout", "--image", good2, "--batch-size", "3"]
    rollout += ["--max-unavailable", "3", "--yes", *FAST]
    one = subprocess.Popen(
        [*map(str, rollout), "-C", str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **_env(cloud)},
    )
    try:
        assert one.stderr is not None
        for line in one.stderr:
            if "applying" in line:
                break
        else:
            pytest.fail(f"the first rollout never applied: {one.communicate()}")
        wait_for("the state lock", lambda: _advisory_locks(postgres) > 0, timeout=10)
        caplog.set_level(logging.DEBUG, logger="python_terraform")
        two = CliRunner().invoke(
            main,
            [
                *("rollout", "-C", str(second), "--image", good2, "--strategy", "all", "--yes"),
                *("--lock-timeout", "0s", "--backend-config", f"conn_str={postgres}"),
                *("--terraform-bin", "embedded", *FAST),
            ],
            env=_env(cloud, TF_DATA_DIR="tfdata"),
            catch_exceptions=False,
        )
        # Kept off while the first one was still applying.
        assert one.poll() is None, "the first rollout ended before the second one planned"
        out, err = one.communicate(timeout=120)
    finally:
        if one.poll() is None:
            one.kill()
            one.wait()
        cloud.delays = replace(cloud.delays, droplet_boot=0.05)
    assert two.exit_code == 1, two.output
    assert two.stdout == ""
    assert two.stderr.splitlines()[-1] == (
        "Error: Terraform's state lock is held by another run (the pg backend does not say "
        "whose) and was not released within --lock-timeout 0s; wait for that run to finish or "
        f"raise --lock-timeout; nothing was applied and image_slug in {second}/terraform.tfvars "
        f"is back to '{good}'"
    )
    assert (second / "terraform.tfvars").read_bytes() == before
    # every Terraform dies with scaler: started under setpriv's parent-death signal
    engine = f"{shutil.which('setpriv')} --pdeathsig KILL -- {BIN / 'scaler-terraform'}"
    commands = terraform_commands(caplog)
    assert (
        commands[0] == f"{engine} init -input=false -backend-config=conn_str={postgres} -no-color"
    )
    assert (second / "tfdata" / "terraform.tfstate").is_file()  # the backend's settings
    assert not (second / ".terraform").exists()

    assert one.returncode == 0, err
    assert out.splitlines()[0] == f"done: 3 droplets now run image {good2}, all healthy"
    assert get_tfvar(first / "terraform.tfvars", "image_slug") == good2

    # Once the lock is free the second checkout sees the first one's work in the shared state.
    again = CliRunner().invoke(
        main,
        [
            *("rollout", "-C", str(second), "--image", good2, "--strategy", "all", "--yes"),
            *("--terraform-bin", "embedded", *FAST),
        ],
        env=_env(cloud, TF_DATA_DIR="tfdata"),
        catch_exceptions=False,
    )
    assert again.exit_code == 0, again.output
    assert again.stdout == f"nothing to do: every target already runs image {good2}\n"
