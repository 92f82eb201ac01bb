"""A fault at each bake step: nothing is left behind and the reason is one line."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import QuietHandler, need, serve_loopback, stop_loopback
from test_bake import (
    EXAMPLE_STATE,
    BakeProcess,
    api,
    bake_cloud_fixture,  # noqa: F401 - fixtures shared with tests/test_bake.py
    bake_env,
    cloud_fixture,  # noqa: F401
    example_inventory,
    fast_cloud,
    resources,
    write_playbook,
)
from test_provision import processes_naming

from scaler.bake import BakeFailed, bake_image
from scaler.cloud import Cloud, Pacing
from scaler.config import BakeConfig, apply
from scaler.local.api import Delays, LocalCloud

PING = [{"name": "Ping", "ansible.builtin.ping": {}}]


def quick_config(tmp_path: Path, tasks: list[dict[str, Any]] | None = None, **values: Any) -> Any:
    """A bake with a one-task play (the role is not the point here), over SSH as always."""
    settings: dict[str, Any] = {
        "project": "fault",
        "manifest": str(tmp_path / "manifest.json"),
        "playbook": str(write_playbook(tmp_path, tasks or PING)),
    }
    settings.update(values)
    return apply(BakeConfig(), settings)


def failing_bake(cloud: LocalCloud, tmp_path: Path, **values: Any) -> str:
    """Run a bake that must fail; returns its one-line message. No snapshot may be left."""
    before = resources(cloud)["snapshots"]
    with pytest.raises(BakeFailed) as caught:
        bake_image(
            quick_config(tmp_path, **values),
            fast_cloud(cloud),
            inventory=example_inventory(),
        )
    assert resources(cloud)["snapshots"] == before
    assert not (tmp_path / "manifest.json").exists()
    message = str(caught.value)
    assert "\n" not in message
    return message


@contextlib.contextmanager
def slower(cloud: LocalCloud, **delays: float) -> Any:
    """Some of the shared cloud's delays changed for one test."""
    before: Delays = cloud.delays
    cloud.delays = replace(before, **delays)
    try:
        yield
    finally:
        cloud.delays = before


def actions_posted(cloud: LocalCloud) -> list[tuple[str, int, float]]:
    """(type, status, time) of every droplet and image action POST in the request log."""
    kinds = {"/v2/droplets/{id}/actions", "/v2/images/{id}/actions"}
    return [(r.path, r.status, r.time) for r in cloud.requests() if r.template[5:] in kinds]


def test_graceful_shutdown_times_out_then_power_off(cloud: LocalCloud, tmp_path: Path) -> None:
    """A shutdown still running after its timeout: power-off, retried past the 422 "pending
    event" the unfinished shutdown causes, and the bake goes on to its snapshot."""
    lines: list[str] = []
    cloud.reset_log()
    with slower(cloud, action=1.0):
        result = bake_image(
            quick_config(tmp_path, timeouts={"shutdown": 0.3}),
            fast_cloud(cloud),
            inventory=example_inventory(),
            on_progress=lines.append,
        )
    try:
        (droplet,) = {p.split("/")[3] for p, _, _ in actions_posted(cloud)}
        assert (
            f"graceful shutdown did not finish (timed out after 0.3s waiting for shutdown of "
            f"{droplet}); powering off" in lines
        )
        bodies = [(p, s) for p, s, _ in actions_posted(cloud)]
        statuses = [s for _, s in bodies]
        # shutdown accepted, power-off refused while it runs, then accepted, then the snapshot
        assert statuses[0] == 201 and statuses[1] == 422 and statuses[-2:] == [201, 201]
        assert set(statuses[1:-2]) == {422}
        assert api(cloud, "GET", f"images/{result.id}")["image"]["name"] == result.name
    finally:
        api(cloud, "DELETE", f"images/{result.id}")


def test_transfers_to_extra_regions_run_in_parallel(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.reset_log()
    with slower(cloud, transfer=1.0):
        result = bake_image(
            quick_config(tmp_path, snapshot_regions=["ams3", "lon1", "nyc3", "fra1", "ams3"]),
            fast_cloud(cloud),
            inventory=example_inventory(),
        )
    try:
        transfers = [t for p, s, t in actions_posted(cloud) if p.startswith("/v2/images/")]
        assert len(transfers) == 3  # nyc3 is the build region; ams3 once
        # all three started before the first could end (1 s each; one after another they
        # would start at least 2 s apart)
        assert max(transfers) - min(transfers) < 0.5, transfers
        assert result.regions == ("ams3", "lon1", "fra1", "nyc3")
        image = api(cloud, "GET", f"images/{result.id}")["image"]
        assert sorted(image["regions"]) == ["ams3", "fra1", "lon1", "nyc3"]
        manifest = (tmp_path / "manifest.json").read_text()
        assert f'"artifact_id": "ams3,lon1,fra1,nyc3:{result.id}"' in manifest
    finally:
        api(cloud, "DELETE", f"images/{result.id}")


def test_server_error_on_droplet_create(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.faults.fail("POST", "/v2/droplets", status=500, times=20, message="Server was sad.")
    message = failing_bake(cloud, tmp_path)
    assert re.fullmatch(
        r"bake failed while creating the build droplet: POST /v2/droplets failed \(500\): "
        r"Server was sad\.; removed ssh key \d+",
        message,
    ), message


def test_a_droplet_the_api_refuses_is_one_line_and_leaves_nothing(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """DigitalOcean refuses a droplet name its spec does not allow (422): the bake says so in
    one line, as the API words it, and its SSH key goes."""
    need(cloud.validator is not None, "the local cloud checks requests only with the API spec")
    before = resources(cloud)
    message = failing_bake(cloud, tmp_path, droplet_name="build droplet")
    assert re.fullmatch(
        r"bake failed while creating the build droplet: POST /v2/droplets failed \(422\): name "
        r'"build droplet" is not valid \(it must match .+\)\.; removed ssh key \d+',
        message,
    ), message
    assert resources(cloud) == before


def test_errored_snapshot_fails_at_once(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.faults.error_action(action_type="snapshot")
    message = failing_bake(cloud, tmp_path, timeouts={"snapshot": 60})
    assert re.fullmatch(
        r"bake failed while waiting for snapshot fault_[\d-]+: snapshot fault_[\d-]+ failed: "
        r"action \d+ errored; removed snapshot 'fault_[\d-]+' \(of droplet \d+\), "
        r"droplet \d+, ssh key \d+",
        message,
    ), message


def test_snapshot_made_before_a_later_failure_is_deleted(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.faults.fail(
        "POST", r"/v2/images/\d+/actions", status=422, message="Region is not available."
    )
    message = failing_bake(cloud, tmp_path, snapshot_regions=["ams3"])
    assert re.fullmatch(
        r"bake failed while transferring snapshot (\d+) to ams3: POST /v2/images/\1/actions "
        r"failed \(422\): Region is not available\.; removed snapshot \1, droplet \d+, "
        r"ssh key \d+",
        message,
    ), message


def test_ansible_failure(cloud: LocalCloud, tmp_path: Path) -> None:
    tasks = [{"name": "Break on purpose", "ansible.builtin.fail": {"msg": "no WordPress today"}}]
    message = failing_bake(cloud, tmp_path, tasks=tasks)
    assert re.fullmatch(
        r"bake failed while provisioning droplet (\d+) with play\.yml: provisioning failed at "
        r"task 'Break on purpose' on packerbox: no WordPress today; removed droplet \1, "
        r"ssh key \d+",
        message,
    ), message


def test_droplet_never_active(cloud: LocalCloud, tmp_path: Path) -> None:
    cloud.faults.stall(name="^scaler-bake-")
    message = failing_bake(cloud, tmp_path, timeouts={"active": 1})
    assert re.fullmatch(
        r"bake failed while waiting for droplet (\d+) to become active: timed out after 1s "
        r"waiting for droplet \1 to become active; removed droplet \1, ssh key \d+",
        message,
    ), message


def _cli_args(cloud: LocalCloud) -> list[str]:
    return ["--state", str(EXAMPLE_STATE)]


def _config_file(tmp_path: Path, tasks: list[dict[str, Any]]) -> None:
    playbook = write_playbook(tmp_path, tasks)
    (tmp_path / "scaler.toml").write_text(
        f'[bake]\nproject = "sig"\nplaybook = "{playbook}"\npoll_min = 0.05\npoll_max = 0.2\n'
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_during_provisioning(
    cloud: LocalCloud, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """Ansible is stopped too: no process of the run outlives the bake (the task's own process,
    inside the build droplet, goes with the droplet)."""
    marker = f"sleep {30 + signum.value}.{os.getpid()}"  # this run's own: its process is found
    task = {"name": "Take a while", "ansible.builtin.shell": f"exec {marker}"}
    _config_file(tmp_path, [task])
    temp = tmp_path / "t"  # the bake's temp files (Ansible's private dir) go here
    temp.mkdir()
    env = {**bake_env(cloud, tmp_path), "TMPDIR": str(temp)}
    bake = BakeProcess(_cli_args(cloud), tmp_path, env)
    bake.wait_for(r"provisioning droplet \d+", timeout=300)  # a loaded machine boots slowly
    deadline = time.monotonic() + 60
    while not processes_naming(marker):
        assert time.monotonic() < deadline and bake.proc.poll() is None, "\n".join(bake.lines)
        time.sleep(0.05)
    assert processes_naming(str(temp)), "ansible-playbook should be running"
    bake.proc.send_signal(signum)
    exit_code, out, err = bake.finish()
    assert exit_code == code and out == ""
    assert re.fullmatch(
        rf"Error: bake interrupted \({signum.name}\) while provisioning droplet (\d+) with "
        r"play\.yml; removed droplet \1, ssh key \d+",
        err.splitlines()[-1],
    ), err
    assert processes_naming(str(temp)) == []
    assert processes_naming(marker) == []


@pytest.mark.slow
def test_sigterm_while_waiting(cloud: LocalCloud, tmp_path: Path) -> None:
    _config_file(tmp_path, PING)
    cloud.faults.stall(name="^scaler-bake-")
    bake = BakeProcess(_cli_args(cloud), tmp_path, bake_env(cloud, tmp_path))
    bake.wait_for(r"waiting for droplet \d+ to become active")
    bake.proc.send_signal(signal.SIGTERM)
    code, out, err = bake.finish()
    assert code == 143 and out == ""
    assert re.fullmatch(
        r"Error: bake interrupted \(SIGTERM\) while waiting for droplet (\d+) to become active; "
        r"removed droplet \1, ssh key \d+",
        err.splitlines()[-1],
    ), err


@pytest.mark.slow
def test_second_ctrl_c_lists_what_is_left(cloud: LocalCloud, tmp_path: Path) -> None:
    _config_file(tmp_path, PING)
    cloud.faults.stall(name="^scaler-bake-")
    cloud.faults.latency("DELETE", r"/v2/droplets/\d+", 3.0, times=1)
    bake = BakeProcess(_cli_args(cloud), tmp_path, bake_env(cloud, tmp_path))
    line = bake.wait_for(r"waiting for droplet \d+ to become active")
    droplet = re.search(r"droplet (\d+)", line).group(1)  # type: ignore[union-attr]
    key = re.search(r"key (\d+)", bake.wait_for(r"registered temporary SSH key")).group(1)  # type: ignore[union-attr]
    bake.proc.send_signal(signal.SIGINT)
    bake.wait_for(rf"removing droplet {droplet}")
    bake.proc.send_signal(signal.SIGINT)
    code, out, err = bake.finish()
    try:
        assert code == 130 and out == ""
        auth = '-H "Authorization: Bearer $DIGITALOCEAN_TOKEN"'
        assert (
            f"  droplet {droplet}: curl -fsS -X DELETE {auth} {cloud.endpoint}droplets/{droplet}"
            in err
        )
        assert (
            f"  ssh key {key}: curl -fsS -X DELETE {auth} {cloud.endpoint}account/keys/{key}" in err
        )
        assert re.fullmatch(
            rf"Error: bake interrupted \(SIGINT\) while waiting for droplet {droplet} to become "
            rf"active; LEFT BEHIND droplet {droplet}, ssh key {key} \(commands above\); "
            "nothing to remove",
            err.splitlines()[-1],
        ), err
    finally:
        for path in (f"droplets/{droplet}", f"account/keys/{key}"):
            with contextlib.suppress(OSError):  # the slow delete may have gone through
                api(cloud, "DELETE", path)


def test_missing_db_password_on_a_real_cloud_fails_before_anything(tmp_path: Path) -> None:
    """Not the local cloud (an API on loopback that has no /_local/health): the password is
    never invented, and the bake stops before any API request."""
    seen: list[str] = []

    class NotLocal(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

    server = serve_loopback(NotLocal)
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v2/"
        config = apply(BakeConfig(), {"manifest": str(tmp_path / "manifest.json")})
        with pytest.raises(BakeFailed) as caught:
            bake_image(config, Cloud("test", endpoint, pacing=Pacing.fast()), inventory={})
    finally:
        stop_loopback(server)
    assert str(caught.value) == (
        "bake failed while checking the inputs: no welp_db_password for wp-config.php; set "
        "WELP_DB_PASSWORD in the environment (or pass -e @vars.yml, --vault-password-file, or "
        "[bake.extra_vars] in scaler.toml); nothing to remove"
    )
    assert seen == ["/_local/health"]  # the one look that tells a local cloud, no API call


def test_directory_droplets_are_refused_before_anything(
    fresh_cloud: LocalCloud, tmp_path: Path
) -> None:
    """A local cloud with directory droplets: one line saying why and how to get real ones."""
    config = quick_config(tmp_path)
    with pytest.raises(BakeFailed) as caught:
        bake_image(config, fast_cloud(fresh_cloud), inventory=example_inventory())
    assert str(caught.value) == (
        f"bake failed while checking the inputs: the local cloud at 127.0.0.1:{fresh_cloud.port} "
        "runs directory droplets, which nothing can provision; a bake needs real droplets: "
        "restart it with `scaler local down && scaler local up --droplets real` as root on "
        "Debian (`make demo` installs what they need); nothing to remove"
    )
    assert [r.path for r in fresh_cloud.requests()] == []


@pytest.mark.parametrize(
    ("field", "what", "option"),
    [
        ("user_data_file", "user data file", "--user-data-file"),
        ("playbook", "playbook", "--playbook"),
    ],
)
def test_missing_input_file_fails_before_anything(
    fresh_cloud: LocalCloud, tmp_path: Path, field: str, what: str, option: str
) -> None:
    # The tutorial's template names ./config/cloud-config.yaml; run elsewhere, it is not there.
    missing = tmp_path / "config" / "cloud-config.yaml"
    config = apply(BakeConfig(), {"manifest": str(tmp_path / "manifest.json"), field: str(missing)})
    with pytest.raises(BakeFailed) as caught:
        bake_image(config, fast_cloud(fresh_cloud), inventory=example_inventory())
    assert str(caught.value) == (
        f"bake failed while checking the inputs: the {what} {missing} does not exist; "
        f"pass {option} PATH; nothing to remove"
    )
    assert fresh_cloud.requests() == []


def test_bake_rides_out_digitaloceans_lags(cloud: LocalCloud, tmp_path: Path) -> None:
    """Pending event just after the shutdown, the snapshot not yet in image lists: it still
    bakes, retrying the first and reading the droplet's own snapshot list for the second."""
    cloud.reset_log()
    with slower(cloud, pending_after=3.0, image_listing=30.0):
        result = bake_image(
            quick_config(tmp_path),
            fast_cloud(cloud),
            inventory=example_inventory(),
        )
        try:
            posted = actions_posted(cloud)
            assert 422 in [s for _p, s, _t in posted], posted  # the snapshot after the shutdown
            assert result.id not in resources(cloud)["snapshots"]  # not listed yet
            assert f'"artifact_id": "nyc3:{result.id}"' in (tmp_path / "manifest.json").read_text()
            assert resources(cloud)["droplets"] == set()
        finally:
            api(cloud, "DELETE", f"images/{result.id}")
