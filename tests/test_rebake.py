"""`scaler rebake`: the pure decision, the facts from the local cloud, locks, logs, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import (
    QuietHandler,
    make_snapshots,
    module_cloud,
    serve_loopback,
    stop_loopback,
)

from scaler.bake import provisioning_hash
from scaler.cli import main
from scaler.cloud import Cloud
from scaler.config import REPO_ROOT, BakeConfig
from scaler.local.api import LocalCloud
from scaler.lock import LOCK_NAME
from scaler.manifest import Artifact, append_build
from scaler.rebake import (
    Reason,
    RebakeDecision,
    RebakeFacts,
    SiteResult,
    decide_rebake,
    gather_facts,
    load_sites,
    worst_exit,
)
from scaler.snapshots import Snapshot

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SHA = "a" * 64
DEBIAN_ID = 150000001  # the local cloud's fixed id behind debian-12-x64


def artifact(**custom: Any) -> Artifact:
    data = {"base_image": "debian-12-x64", "base_image_id": DEBIAN_ID, "provisioning_sha256": SHA}
    data.update(custom)
    return Artifact(
        170000001,
        ("nyc3",),
        "wordpress_1",
        1795000000,
        {k: v for k, v in data.items() if v is not None},
    )


def facts(last: Artifact | None = None, days_old: float | None = 1, **changes: Any) -> RebakeFacts:
    newest = (
        Snapshot(170000001, "wordpress_1", NOW - timedelta(days=days_old), 1.0, ("nyc3",))
        if days_old is not None
        else None
    )
    values: dict[str, Any] = {
        "project": "wordpress",
        "base_image": "debian-12-x64",
        "base_image_id": DEBIAN_ID,
        "provisioning_sha256": SHA,
        "last_bake": last if last is not None else artifact(),
        "newest_snapshot": newest,
    }
    values.update(changes)
    return RebakeFacts(**values)


@pytest.fixture(scope="module")
def own_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """This module's local cloud (its own network: no droplet address shared with others)."""
    with module_cloud(tmp_path_factory, "rebake-cloud") as cloud:
        yield cloud


@pytest.fixture
def fresh_cloud(own_cloud: LocalCloud) -> LocalCloud:
    """The module's cloud, emptied for one test."""
    own_cloud.reset()
    return own_cloud


WEEK = timedelta(days=7)


# --- the pure decision --------------------------------------------------------------------------


def test_nothing_changed_is_not_due() -> None:
    assert decide_rebake(facts(), max_age=WEEK, now=NOW) == RebakeDecision(False, (), ())


def test_base_image_with_a_new_id_is_due() -> None:
    decision = decide_rebake(facts(base_image_id=150000077), max_age=WEEK, now=NOW)
    assert decision == RebakeDecision(
        True,
        (
            Reason(
                "base-image",
                "the base image debian-12-x64 is now image 150000077 (the last bake used "
                "150000001)",
            ),
        ),
    )
    assert decision.summary() == (
        "due: the base image debian-12-x64 is now image 150000077 (the last bake used 150000001)"
    )


def test_another_base_slug_is_due() -> None:
    decision = decide_rebake(
        facts(base_image="ubuntu-24-04-x64", base_image_id=150000003), max_age=None, now=NOW
    )
    assert [(r.code, r.text) for r in decision.reasons] == [
        (
            "base-image",
            "the base image is now ubuntu-24-04-x64 (the last bake started from debian-12-x64)",
        )
    ]


def test_old_snapshot_is_due_only_past_max_age() -> None:
    old = decide_rebake(facts(days_old=8), max_age=WEEK, now=NOW)
    assert [(r.code, r.text) for r in old.reasons] == [
        (
            "max-age",
            "the newest snapshot wordpress_1 (170000001) is 8d old, more than --max-age 7d",
        )
    ]
    assert not decide_rebake(facts(days_old=6.9), max_age=WEEK, now=NOW).due
    assert not decide_rebake(facts(days_old=80), max_age=None, now=NOW).due


def test_changed_provisioning_is_due() -> None:
    decision = decide_rebake(facts(provisioning_sha256="b" * 64), max_age=WEEK, now=NOW)
    assert [(r.code, r.text) for r in decision.reasons] == [
        (
            "provisioning",
            "the provisioning changed (sha256 bbbbbbbbbbbb, the last bake had aaaaaaaaaaaa)",
        )
    ]


def test_no_bake_at_all_is_due() -> None:
    bare = RebakeFacts("wordpress", "debian-12-x64", DEBIAN_ID, SHA)
    decision = decide_rebake(bare, max_age=None, now=NOW)
    assert [(r.code, r.text) for r in decision.reasons] == [
        ("no-snapshot", "no baked snapshot of wordpress yet")
    ]


def test_snapshot_gone_from_the_account_is_due_with_max_age() -> None:
    decision = decide_rebake(facts(days_old=None), max_age=WEEK, now=NOW)
    assert [r.code for r in decision.reasons] == ["max-age"]
    assert decision.reasons[0].text == (
        "no snapshot of wordpress is left in the account (the manifest names 170000001)"
    )


def test_force_is_due_and_still_lists_real_reasons() -> None:
    decision = decide_rebake(facts(provisioning_sha256="c" * 64), max_age=None, now=NOW, force=True)
    assert decision.due
    assert [r.code for r in decision.reasons] == ["forced", "provisioning"]
    assert decide_rebake(facts(), max_age=None, now=NOW, force=True).reasons == (
        Reason("forced", "--force was given"),
    )


def test_every_reason_at_once() -> None:
    decision = decide_rebake(
        facts(days_old=30, base_image_id=1, provisioning_sha256="d" * 64), max_age=WEEK, now=NOW
    )
    assert [r.code for r in decision.reasons] == ["base-image", "provisioning", "max-age"]


def test_a_plain_packer_manifest_cannot_tell_and_says_so() -> None:
    bare = Artifact(170000001, ("nyc3",), "digitalocean", 1795000000, {})
    decision = decide_rebake(facts(last=bare), max_age=WEEK, now=NOW)
    assert not decision.due
    assert decision.notes == (
        "the manifest records no base image id for snapshot 170000001; cannot tell whether "
        "debian-12-x64 changed",
        "the manifest records no provisioning hash for snapshot 170000001; cannot tell whether "
        "the provisioning changed",
    )


def test_without_a_recorded_id_a_base_image_published_after_the_bake_is_due() -> None:
    no_id = artifact(base_image_id=None)  # build_time 1795000000 = 2026-11-18 11:06 UTC
    later = facts(last=no_id, base_image_created_at=datetime(2026, 11, 20, 8, 0, tzinfo=UTC))
    decision = decide_rebake(later, max_age=None, now=NOW)
    assert decision.reasons == (
        Reason(
            "base-image",
            "the base image debian-12-x64 (image 150000001) was published 2026-11-20 08:00 UTC, "
            "after the last bake (2026-11-18 11:06 UTC)",
        ),
    )
    earlier = facts(last=no_id, base_image_created_at=datetime(2026, 11, 1, tzinfo=UTC))
    assert decide_rebake(earlier, max_age=None, now=NOW) == RebakeDecision(False, (), ())


def test_worst_exit_orders_outcomes() -> None:
    def result(outcome: Any) -> SiteResult:
        return SiteResult("s", outcome, "")

    assert worst_exit([]) == 0
    assert worst_exit([result("not-due"), result("rolled-out")]) == 3
    assert worst_exit([result("rolled-out"), result("error")]) == 1
    assert worst_exit([result("error"), result("rolled-back"), result("due")]) == 4
    assert worst_exit([result("needs-person"), result("rolled-back")]) == 5
    assert worst_exit([result("due"), result("not-due")]) == 6


def test_sites_from_scaler_toml(tmp_path: Path) -> None:
    toml = tmp_path / "scaler.toml"
    toml.write_text(
        '[[sites]]\nname = "prod"\nterraform_dir = "tf/prod"\n\n'
        '[[sites]]\nterraform_dir = "tf/shared"\nworkspace = "staging"\n'
        'manifest = "staging-manifest.json"\n'
    )
    prod, staging = load_sites(toml)
    assert (prod.name, prod.terraform_dir, prod.workspace) == ("prod", tmp_path / "tf/prod", None)
    assert staging.name == "shared:staging"
    assert staging.manifest == tmp_path / "staging-manifest.json"
    toml.write_text('[[sites]]\nterraform_dir = "a"\ncolour = "red"\n')
    with pytest.raises(Exception, match=r"site 1 has unknown keys \['colour'\]"):
        load_sites(toml)


# --- facts from the local cloud -----------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A project folder: its own copy of the provisioning files and a scaler.toml naming them."""
    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "packer-build.yml", folder / "packer-build.yml")
    shutil.copytree(REPO_ROOT / "roles", folder / "roles")
    (folder / "config").mkdir()
    shutil.copy(REPO_ROOT / "config" / "cloud-config.yaml", folder / "config" / "cloud-config.yaml")
    (folder / "scaler.toml").write_text(
        '[bake]\nproject = "wordpress"\nimage = "debian-12-x64"\nmanifest = "manifest.json"\n'
        'playbook = "packer-build.yml"\nroles_path = "roles"\n'
        'user_data_file = "config/cloud-config.yaml"\n'
    )
    return folder


def site_hash(folder: Path) -> str:
    return provisioning_hash(
        folder / "packer-build.yml", folder / "roles", folder / "config" / "cloud-config.yaml"
    )


def record_bake(folder: Path, image_id: int, **custom: Any) -> None:
    data: dict[str, Any] = {
        "snapshot_name": "wordpress_1",
        "base_image": "debian-12-x64",
        "base_image_id": DEBIAN_ID,
        "provisioning_sha256": site_hash(folder),
    }
    data.update(custom)
    data = {k: v for k, v in data.items() if v is not None}
    append_build(
        folder / "manifest.json",
        regions=["nyc3"],
        image_id=image_id,
        build_time=1795000000,
        custom_data=data,
    )


def rebake(
    cloud: LocalCloud, folder: Path, *args: str, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(
        main,
        ["rebake", "--config", str(folder / "scaler.toml"), "-C", str(folder), *args],
        env={**cloud.env(), **(env or {})},
    )


def test_check_not_due_then_due_on_each_reason(fresh_cloud: LocalCloud, site: Path) -> None:
    (snap,) = make_snapshots(fresh_cloud, ["wordpress_1"])
    record_bake(site, snap)
    same = rebake(fresh_cloud, site, "--check", "--max-age", "7d")
    assert same.exit_code == 0, same.output
    assert same.stdout == f"{site}: not-due: nothing says a rebake is due\n"

    # The id behind debian-12-x64 differs from the one the last bake recorded.
    record_bake(site, snap, base_image_id=149999999)
    moved = rebake(fresh_cloud, site, "--check")
    assert moved.exit_code == 6, moved.output
    assert moved.stdout == (
        f"{site}: due: the base image debian-12-x64 is now image 150000001 "
        "(the last bake used 149999999)\n"
    )

    # A role file changes: the provisioning hash differs from the recorded one.
    record_bake(site, snap)
    assert rebake(fresh_cloud, site, "--check").exit_code == 0
    task = next((site / "roles").rglob("main.yml"))
    task.write_text(task.read_text() + "\n# tuned\n")
    changed = rebake(fresh_cloud, site, "--check", "--json")
    assert changed.exit_code == 6
    summary = json.loads(changed.stdout)
    assert summary["exit_code"] == 6
    assert [r["code"] for r in summary["sites"][0]["reasons"]] == ["provisioning"]


def test_plain_manifest_on_the_local_cloud_uses_the_publish_date(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    (snap,) = make_snapshots(fresh_cloud, ["wordpress_1"])
    record_bake(site, snap, base_image_id=None)
    result = rebake(fresh_cloud, site, "--check", "--json")
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.stdout)["sites"]
    assert (only["due"], only["reasons"], only["notes"]) == (False, [], [])


def test_facts_from_the_local_cloud_and_max_age(fresh_cloud: LocalCloud, site: Path) -> None:
    older, newer = make_snapshots(fresh_cloud, ["wordpress_old", "wordpress_new"])
    make_snapshots(fresh_cloud, ["unrelated_x"])
    record_bake(site, older)
    config = BakeConfig(
        manifest=site / "manifest.json",
        playbook=site / "packer-build.yml",
        roles_path=site / "roles",
        user_data_file=site / "config" / "cloud-config.yaml",
    )
    got = gather_facts(config, Cloud("t", fresh_cloud.endpoint))
    assert got.base_image_id == DEBIAN_ID
    assert got.last_bake is not None and got.last_bake.id == older
    assert got.newest_snapshot is not None and got.newest_snapshot.id == newer
    assert got.provisioning_sha256 == site_hash(site)
    taken = got.newest_snapshot.created_at
    assert not decide_rebake(got, max_age=WEEK, now=taken + timedelta(days=6)).due
    late = decide_rebake(got, max_age=WEEK, now=taken + timedelta(days=8))
    assert late.reasons == (
        Reason(
            "max-age",
            f"the newest snapshot wordpress_new ({newer}) is 8d old, more than --max-age 7d",
        ),
    )


def test_no_manifest_and_no_snapshot_is_due(fresh_cloud: LocalCloud, site: Path) -> None:
    result = rebake(fresh_cloud, site, "--check")
    assert result.exit_code == 6
    assert result.stdout == f"{site}: due: no baked snapshot of wordpress yet\n"


def test_json_log_lines_parse_and_never_hold_the_token(fresh_cloud: LocalCloud, site: Path) -> None:
    (snap,) = make_snapshots(fresh_cloud, ["wordpress_1"])
    record_bake(site, snap, base_image_id=1)
    token = "dop_v1_" + "9f" * 32
    result = rebake(
        fresh_cloud,
        site,
        "--check",
        "--log-format",
        "json",
        env={"DIGITALOCEAN_TOKEN": token, "DIGITALOCEAN_ACCESS_TOKEN": token},
    )
    assert result.exit_code == 6, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["step"] for e in events] == ["decide", "finish"]
    decide = events[0]
    assert decide["outcome"] == "ok"
    assert decide["site"] == str(site)
    assert decide["ids"]["due"] is True
    assert decide["ids"]["reasons"] == ["base-image"]
    assert decide["ids"]["base_image_id"] == DEBIAN_ID
    assert decide["duration"] >= 0
    assert set(decide) >= {"time", "started", "step", "outcome", "duration", "ids", "message"}
    assert events[1]["exit_code"] == 6
    assert token not in result.stderr + result.stdout


def test_second_run_is_refused_while_another_holds_the_lock(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    hold = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from scaler import lock\n"
        "with lock.hold(Path(sys.argv[1]), 'rebake'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(site)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = rebake(fresh_cloud, site)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    expected = (
        f"another scaler operation holds {site / LOCK_NAME}: pid {holder.pid} on "
        f"{socket.gethostname()}, since "
    )
    assert result.stdout.startswith(f"{site}: error: {expected}")
    assert "(rebake); wait for it to finish, or stop that process" in result.stdout
    assert fresh_cloud.counters() == {}  # refused before asking the API anything


def test_a_dead_holders_lock_is_taken_over(fresh_cloud: LocalCloud, site: Path) -> None:
    (snap,) = make_snapshots(fresh_cloud, ["wordpress_1"])
    record_bake(site, snap)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (site / LOCK_NAME).parent.mkdir(exist_ok=True)
    (site / LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 1.0, "op": "rebake"})
    )
    result = rebake(fresh_cloud, site, "--log-format", "json")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{site}: not-due: nothing says a rebake is due\n"
    lock_event = json.loads(result.stderr.splitlines()[0])
    assert lock_event["step"] == "lock"
    assert lock_event["outcome"] == "ok"
    assert lock_event["message"].startswith(f"took over a stale lock of pid {dead.pid} on ")
    assert (site / LOCK_NAME).read_text() == ""  # released after the run


def test_an_unfinished_rollout_needs_a_person(fresh_cloud: LocalCloud, site: Path) -> None:
    (site / ".scaler").mkdir()
    (site / ".scaler" / "rollout.json").write_text(
        json.dumps(
            {
                "target_image": "170000009",
                "previous_image": "170000001",
                "strategy": "rolling",
                "batches": [["a"]],
                "done": [],
                "status": "interrupted",
                "started": 1.0,
                "updated": 2.0,
            }
        )
    )
    result = rebake(fresh_cloud, site, "--force")
    assert result.exit_code == 5
    assert result.stdout == (
        f"{site}: needs-person: an unfinished rollout to image 170000009 (interrupted) is "
        f"recorded in {site / '.scaler' / 'rollout.json'}; finish it with `scaler rollout "
        "--resume` "
        "before rebaking\n"
    )


def test_all_sites_run_in_turn_and_exit_with_the_worst(fresh_cloud: LocalCloud, site: Path) -> None:
    (snap,) = make_snapshots(fresh_cloud, ["wordpress_1"])
    record_bake(site, snap)
    (site / "broken.json").write_text("{not json")
    with (site / "scaler.toml").open("a") as toml:
        toml.write(
            '\n[[sites]]\nname = "gone"\nterraform_dir = "no-such-dir"\n'
            '\n[[sites]]\nname = "broken"\nterraform_dir = "."\nmanifest = "broken.json"\n'
            '\n[[sites]]\nname = "fine"\nterraform_dir = "."\n'
        )
    result = CliRunner().invoke(
        main, ["rebake", "--all", "--config", str(site / "scaler.toml")], env=fresh_cloud.env()
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"gone: error: no Terraform directory {site / 'no-such-dir'}; pass --terraform-dir DIR"
    )
    assert lines[1].startswith(f"broken: error: manifest {site / 'broken.json'} is not JSON")
    assert lines[2] == "fine: not-due: nothing says a rebake is due"


class Hook:
    """A webhook receiver on loopback."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = serve_loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    stop_loopback(server.server)


def test_notify_posts_the_summary(fresh_cloud: LocalCloud, site: Path, hook: Hook) -> None:
    result = rebake(fresh_cloud, site, "--check", "--notify-url", hook.url)
    assert result.exit_code == 6
    (body,) = hook.bodies
    assert body["text"] == (
        f"scaler rebake --check on {site}: due - no baked snapshot of wordpress yet"
    )
    assert body["command"] == "rebake --check"
    assert body["exit_code"] == 6
    assert body["outcome"] == "due"
    assert body["sites"][0]["reasons"] == [
        {"code": "no-snapshot", "text": "no baked snapshot of wordpress yet"}
    ]
    assert "scaler-local-token" not in json.dumps(body)


def test_a_dead_webhook_does_not_change_the_exit_code(fresh_cloud: LocalCloud, site: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = rebake(fresh_cloud, site, "--check", "--notify-url", f"http://127.0.0.1:{port}/x")
    assert result.exit_code == 6
    assert f"notify failed: cannot reach the webhook http://127.0.0.1:{port}/..." in result.stderr


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(main, ["rebake", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert (
        "Exit codes: 0 nothing due; 3 rolled out; 1 error, nothing changed; 2 bad command line; "
        "4 failed and rolled back (the site runs as before); 5 failed and needs a person; "
        "6 due (--check only)." in text
    )


def test_a_bad_notify_url_is_refused_before_anything_runs(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    result = rebake(fresh_cloud, site, "--notify-url", "hooks.example/x")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --notify-url 'hooks.example/x' is not an http(s) URL")
    assert fresh_cloud.counters() == {}
    assert not os.path.exists(site / LOCK_NAME)


def test_tokens_from_the_env_and_the_packer_var_file_never_reach_any_output(
    fresh_cloud: LocalCloud, site: Path, shared_data: Path
) -> None:
    # Neither looks like a DigitalOcean token, so only knowing the values can hide them.
    env_token, file_token = "ocean-env-secret-7Qx", "ocean-file-secret-9Zy"
    shutil.copy(shared_data / "packer" / "wp-node.json", site / "wp-node.json")
    variables = json.loads((shared_data / "packer" / "variables.json").read_text())
    # Both values end up in messages: the env token in a path, the file's in the image slug.
    variables.update(do_api_token=file_token, app_node_image=file_token, project_name="wordpress")
    (site / "variables.json").write_text(json.dumps(variables))
    (site / f"{env_token}.json").write_text("{not json")
    packer = ["--packer-template", str(site / "wp-node.json")]
    packer += ["--packer-var-file", str(site / "variables.json")]
    env = {"DIGITALOCEAN_TOKEN": env_token}
    broken = rebake(
        fresh_cloud,
        site,
        "--check",
        *packer,
        "--manifest",
        str(site / f"{env_token}.json"),
        "--log-format",
        "json",
        env=env,
    )
    missing = rebake(fresh_cloud, site, "--check", *packer, "--log-format", "json", env=env)
    missing_json = rebake(fresh_cloud, site, "--check", *packer, "--json", env=env)
    for result in (broken, missing, missing_json):
        assert result.exit_code == 1, result.output
        for secret in (env_token, file_token):
            assert secret not in result.stdout + result.stderr
    events = [json.loads(line) for line in broken.stderr.splitlines()]
    assert events[0]["step"] == "decide" and events[0]["outcome"] == "failed"
    assert f"manifest {site / '***.json'} is not JSON" in events[0]["message"]
    events = [json.loads(line) for line in missing.stderr.splitlines()]
    assert events[0]["ids"]["base_image"] == "***"
    assert events[0]["message"] == (
        "the base image '***' does not exist in the API; check `image` in the bake settings"
    )
    assert missing.stdout == (
        f"{site}: error: the base image '***' does not exist in the API; check `image` in "
        "the bake settings\n"
    )
    assert json.loads(missing_json.stdout)["sites"][0]["message"].startswith(
        "the base image '***' does not exist"
    )


def test_per_site_options_with_all_are_a_usage_error(site: Path) -> None:
    result = CliRunner().invoke(
        main, ["rebake", "--all", "--config", str(site / "scaler.toml"), "--workspace", "prod"]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: --workspace, --tfvars and --manifest are per site; set them in [[sites]] with --all"
    )


def test_prune_older_than_without_keep_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["rebake", "--prune-older-than", "30d"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: --prune-older-than needs --prune-keep N"


def test_a_rollback_that_left_droplets_unhealthy_needs_a_person() -> None:
    from scaler.rebake import _rollout_outcome
    from scaler.rollout import RolloutResult

    def ended(status: str, message: str, back_healthy: bool | None = None) -> RolloutResult:
        return RolloutResult(
            status,  # type: ignore[arg-type]
            "2",
            "1",
            "rolling",
            (),
            (),
            (),
            None,
            0,
            1.0,
            message,
            rollback_healthy=back_healthy,
        )

    healthy = ended("rolled-back", "rolled back 1 droplets to image 1 (healthy)", True)
    sick = ended("rolled-back", "rolled back 1 droplets to image 1 (NOT healthy)", False)
    assert _rollout_outcome(healthy) == "rolled-back"
    assert _rollout_outcome(sick) == "needs-person"
    assert _rollout_outcome(ended("done", "")) == "rolled-out"
    assert _rollout_outcome(ended("nothing-to-do", "")) == "unchanged"
    assert _rollout_outcome(ended("failed", "")) == "needs-person"
    assert _rollout_outcome(ended("interrupted", "")) == "needs-person"
    results = [
        SiteResult("a", _rollout_outcome(healthy), ""),
        SiteResult("b", _rollout_outcome(sick), ""),
    ]
    assert [r.exit_code for r in results] == [4, 5]


def test_prune_after_all_sites_keeps_what_any_site_runs(
    fresh_cloud: LocalCloud, site: Path
) -> None:
    from test_snapshots import state_with_droplets

    oldest, staging, prod = make_snapshots(
        fresh_cloud, ["wordpress_1", "wordpress_2", "wordpress_3"]
    )
    record_bake(site, prod)
    for name, image in (("prod", prod), ("staging", staging)):
        (site / name).mkdir()
        (site / name / "terraform.tfvars").write_text(f'image_slug = "{image}"\n')
        state_with_droplets(site / name / "terraform.tfstate", {"wp_node": str(image)})
    with (site / "scaler.toml").open("a") as toml:
        toml.write(
            '\n[[sites]]\nname = "prod"\nterraform_dir = "prod"\n'
            '\n[[sites]]\nname = "staging"\nterraform_dir = "staging"\n'
        )
    args = ["rebake", "--all", "--config", str(site / "scaler.toml"), "--prune-keep", "0"]
    result = CliRunner().invoke(main, [*args, "--json"], env=fresh_cloud.env())
    assert result.exit_code == 0, result.output
    sites = json.loads(result.stdout)["sites"]
    assert [(s["site"], s["outcome"], s.get("pruned")) for s in sites] == [
        ("prod", "not-due", [oldest]),
        ("staging", "not-due", None),
    ]
    left = {i.id for i in Cloud("t", fresh_cloud.endpoint).snapshot_images()}
    assert {prod, staging} <= left and oldest not in left

    # A site whose state cannot be read stops the prune, not the rebake.
    (site / "staging" / "terraform.tfvars").write_text('image_slug = "unclosed\n')
    broken = CliRunner().invoke(main, [*args, "--json"], env=fresh_cloud.env())
    assert broken.exit_code == 0, broken.output
    first = json.loads(broken.stdout)["sites"][0]
    assert first["outcome"] == "not-due"
    assert first["prune_error"].startswith(
        f"cannot tell which snapshots {site / 'staging' / 'terraform.tfvars'} names: "
    )
