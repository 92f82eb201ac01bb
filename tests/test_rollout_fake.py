"""The rollout's paths with a fake Terraform runner (tests/fake_terraform.py): exact command
lines, messages and statuses, fast; health, warm-up and gates over real loopback HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fake_terraform import DB, LB, WEB, Answer, FakeTerraform, failing, fake_stack

from scaler.cli import main
from scaler.exitcodes import ExitCode
from scaler.rollout import (
    Gate,
    PlanRefused,
    RolloutError,
    RolloutResult,
    Settings,
    apply_rollout,
    prepare_rollout,
    read_history,
    read_record,
)
from scaler.tfvars import get_tfvar

A = [f"{WEB}[{i}]" for i in range(3)]


def broken_from(first_bad: int) -> Answer:
    """Healthy for the first requests, then 500 (an image that goes bad after boot)."""
    return lambda path, n: 200 if n < first_bad else 500


ANSWERS: dict[str, Answer] = {
    "100": lambda path, n: 200,
    "200": lambda path, n: 200,
    "bad": lambda path, n: 500,
    "nologin": lambda path, n: 404 if path == "/wp-login.php" else 200,
    "flaky": broken_from(4),
}


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API: the balancer is the state's, no image lookup, no drain."""
    for name in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "SCALER_LOCAL_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeTerraform]:
    with fake_stack(tmp_path, ANSWERS) as stack:
        yield stack


def settings_for(fake: FakeTerraform, **changes: Any) -> Settings:
    base = Settings(
        terraform_dir=fake.directory,
        lock_timeout="0s",
        health_interval=0.25,
        health_timeout=10.0,
        health_grace=0.0,
        port_map={80: fake.web.port},
    )
    return replace(base, **changes)


class Said:
    """The progress lines a rollout reports."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def roll(
    fake: FakeTerraform,
    image: str | None,
    settings: Settings | None = None,
    *,
    said: Said | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> RolloutResult:
    settings = settings or settings_for(fake)
    report = said or Said()
    prepared = prepare_rollout(fake, settings, image, report=report, **options)
    return apply_rollout(
        fake, settings, prepared, report=report, should_stop=should_stop, clock=clock
    )


def whole_plan(pins: dict[str, str] | None = None) -> str:
    var = (
        f" -var-file=<{json.dumps({'wp_node_images': pins}, sort_keys=True)}>"
        if pins is not None
        else ""
    )
    return (
        "terraform plan -input=false -out=DIR/.scaler/rollout.tfplan -lock-timeout=0s "
        f"-var-file=DIR/terraform.tfvars{var} -no-color"
    )


def batch_plan(pins: dict[str, str]) -> str:
    var = json.dumps({"wp_node_images": pins}, sort_keys=True)
    return (
        "terraform plan -input=false -refresh=false -out=DIR/.scaler/batch.tfplan "
        f"-lock-timeout=0s -var-file=DIR/terraform.tfvars -var-file=<{var}> -no-color"
    )


def rollback_plan() -> str:
    return (
        "terraform plan -input=false -out=DIR/.scaler/rollback.tfplan -lock-timeout=0s "
        "-var-file=DIR/terraform.tfvars -no-color"
    )


def apply(name: str) -> str:
    return f"terraform apply -input=false -lock-timeout=0s -no-color DIR/.scaler/{name}.tfplan"


ROLLING = [
    whole_plan({}),
    batch_plan({"1": "100", "2": "100"}),
    apply("batch"),
    batch_plan({"2": "100"}),
    apply("batch"),
    batch_plan({}),
    apply("batch"),
]


def test_a_rolling_rollout_runs_these_commands(fake: FakeTerraform) -> None:
    said = Said()
    db_before = fake.db
    result = roll(fake, "200", batch_size=1, said=said)
    assert (result.status, result.message) == (
        "done",
        "3 droplets now run image 200, all healthy",
    )
    assert result.exit_code == ExitCode.DONE
    assert fake.lines == ROLLING
    assert fake.images() == dict.fromkeys(A, "200")
    assert fake.db == db_before
    assert fake.no_changes()
    assert get_tfvar(fake.directory / "terraform.tfvars", "wp_node_images") == {}
    assert said.lines[:3] == [
        "planning the rollout of image 200 (3 droplets)",
        f"batch 1/3: planning {A[0]}",
        "batch 1/3: applying",
    ]
    assert "no API token: old droplets leave the balancer in the batch's apply, undrained" in (
        said.lines
    )
    # the timeline: batches in order, capacity sampled where the rollout counts health
    starts = [(b.start, b.end) for b in result.batches]
    assert all(0 <= s < e for s, e in starts)
    assert [s for s, _ in starts] == sorted(s for s, _ in starts)
    assert result.capacity and all(n in (2, 3) for _, n in result.capacity)
    assert result.capacity[-1][1] == 3
    data = result.to_json()
    assert data["batches"][0]["start"] == result.batches[0].start
    assert json.loads(json.dumps(data))["capacity"][0] == list(result.capacity[0])
    assert data["exit_code"] == 0
    (entry,) = read_history(fake.directory / ".scaler" / "history.json")
    assert (entry.kind, entry.from_image, entry.to_image, entry.status, entry.replaced) == (
        "rollout",
        "100",
        "200",
        "done",
        3,
    )


def record(fake: FakeTerraform) -> Any:
    return read_record(fake.directory / ".scaler" / "rollout.json")


def tfvars(fake: FakeTerraform) -> str:
    return (fake.directory / "terraform.tfvars").read_text()


def sick(address: str, fake: FakeTerraform, url_path: str) -> str:
    """How a failure names a droplet answering 500 (or 404) on `url_path`."""
    d = fake.droplets[address]
    return f"{address} ({d.public}): http://{d.private}:{fake.web.port}{url_path}"


def test_an_unhealthy_batch_rolls_back(fake: FakeTerraform) -> None:
    result = roll(fake, "bad", batch_size=1)
    assert fake.lines == [
        whole_plan({}),
        batch_plan({"1": "100", "2": "100"}),
        apply("batch"),
        rollback_plan(),
        apply("rollback"),
    ]
    assert result.status == "rolled-back"
    assert result.message.startswith(
        f"batch 1/3: {A[0]} failed its health check ({A[0]} (127.9.0."
    ), result.message
    assert result.message.endswith(
        "/ -> 500, body 'broken\\n'); rolled back 1 droplets to image 100 (healthy)"
    ), result.message
    assert (result.rollback_healthy, result.exit_code) == (True, ExitCode.ROLLED_BACK)
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()
    assert get_tfvar(fake.directory / "terraform.tfvars", "image_slug") == "100"
    assert record(fake).status == "rolled-back"
    (entry,) = read_history(fake.directory / ".scaler" / "history.json")
    assert (entry.status, entry.to_image) == ("rolled-back", "bad")


def test_a_failed_apply_rolls_back_and_says_why(fake: FakeTerraform) -> None:
    applies = []

    def fail_first(replaced: list[str]) -> None:
        applies.append(replaced)
        if len(applies) == 1:
            failing("Error: action 1 of droplet create failed: no capacity in nyc3")(replaced)

    fake.before_apply = fail_first
    result = roll(fake, "200", batch_size=1)
    assert fake.lines == [
        whole_plan({}),
        batch_plan({"1": "100", "2": "100"}),
        apply("batch"),
        rollback_plan(),
    ]  # nothing changed, so the rollback plan has nothing to apply
    assert (result.status, result.message) == (
        "rolled-back",
        "batch 1: terraform apply failed (exit 1): Error: action 1 of droplet create failed: "
        "no capacity in nyc3; rolled back 0 droplets to image 100 (healthy)",
    )
    assert result.exit_code == ExitCode.ROLLED_BACK
    assert fake.no_changes()


def test_the_capacity_floor_stops_before_a_batch_and_resume_goes_on(fake: FakeTerraform) -> None:
    down = fake.droplets[A[2]]
    fake.web.stop(down.private)
    result = roll(fake, "200", settings_for(fake, health_timeout=1.0), batch_size=1)
    assert fake.lines == [whole_plan({})]  # not one batch planned or applied
    assert result.status == "failed"
    assert result.message == (
        f"batch 1/3: only 1 healthy droplets would stay behind the load balancer wordpress-lb "
        f"({LB}) while {A[0]} is replaced, under the floor of 2 (--max-unavailable 1); not "
        f"healthy: {A[2]} (the balancer's check http:80/) (who is behind it is the Terraform "
        "state's view: no API token to ask); nothing of this batch was changed: fix that and "
        f"run scaler rollout --resume; {fake.directory}/terraform.tfvars holds image_slug = 200 "
        "and wp_node_images pins [0] 100, [1] 100, [2] 100: a plain terraform apply changes "
        "nothing this rollout has not changed"
    )
    assert result.exit_code == ExitCode.NEEDS_PERSON
    assert record(fake).status == "waiting-for-capacity"
    assert fake.no_changes()
    fake.web.start(down.private, "100")
    fake.lines.clear()
    resumed = roll(fake, None, resume=True)
    assert (resumed.status, fake.lines) == ("done", ROLLING)
    assert fake.images() == dict.fromkeys(A, "200")


def test_an_interrupted_rollout_resumes_where_it_stopped(fake: FakeTerraform) -> None:
    def stop() -> bool:
        return sum(line.startswith("terraform apply") for line in fake.lines) >= 1

    result = roll(fake, "200", batch_size=1, should_stop=stop)
    assert fake.lines == ROLLING[:3]
    assert (result.status, result.exit_code) == ("interrupted", ExitCode.INTERRUPTED)
    assert result.message == (
        f"interrupted after 1 of 3 droplets; run scaler rollout --resume to continue; "
        f"{fake.directory}/terraform.tfvars holds image_slug = 200 and wp_node_images pins "
        "[1] 100, [2] 100: a plain terraform apply changes nothing this rollout has not changed"
    )
    assert (record(fake).status, record(fake).done) == ("interrupted", (A[0],))
    assert fake.no_changes()
    with pytest.raises(RolloutError) as refused:
        roll(fake, "200")
    assert str(refused.value) == (
        f"an unfinished rollout to image 200 (interrupted, 1 droplets done) is recorded in "
        f"{fake.directory}/.scaler/rollout.json; pass --resume to continue it, or remove that "
        "file to start over"
    )
    fake.lines.clear()
    resumed = roll(fake, None, resume=True)
    assert fake.lines == [whole_plan({}), *ROLLING[3:]]
    assert resumed.status == "done"
    assert fake.images() == dict.fromkeys(A, "200")
    assert fake.no_changes()


def test_a_deadline_before_the_first_batch_changes_nothing(fake: FakeTerraform) -> None:
    result = roll(fake, "200", settings_for(fake, deadline=0.0), batch_size=1)
    assert fake.lines == [whole_plan({}), rollback_plan()]
    assert (result.status, result.message) == (
        "rolled-back",
        "the deadline passed before batch 1; rolled back 0 droplets to image 100 (healthy)",
    )
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()


def test_a_deadline_passing_between_batches_rolls_back_what_was_done(
    fake: FakeTerraform,
) -> None:
    later = [0.0]
    said = Said()

    def report(line: str) -> None:
        said(line)
        if line.startswith("batch 1/3: healthy"):
            later[0] = 3600.0  # an hour passes after the first batch

    result = roll(
        fake,
        "200",
        settings_for(fake, deadline=600.0),
        said=report,  # type: ignore[arg-type]
        clock=lambda: time.monotonic() + later[0],
        batch_size=1,
    )
    assert fake.lines == [*ROLLING[:3], rollback_plan(), apply("rollback")]
    assert (result.status, result.message) == (
        "rolled-back",
        "the deadline passed before batch 2; rolled back 1 droplets to image 100 (healthy)",
    )
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()


def test_pause_after_a_batch_then_resume(fake: FakeTerraform) -> None:
    result = roll(fake, "200", settings_for(fake, pause_after="1"), batch_size=1)
    assert fake.lines == ROLLING[:3]
    assert (result.status, result.exit_code) == ("paused", ExitCode.NEEDS_PERSON)
    assert result.message == (
        "paused after batch 1/3 (--pause-after 1): 1 of 3 droplets run image 200; look, then "
        "run scaler rollout --resume to go on or scaler rollout --abort to roll back; "
        f"{fake.directory}/terraform.tfvars holds image_slug = 200 and wp_node_images pins "
        "[1] 100, [2] 100: a plain terraform apply changes nothing this rollout has not changed"
    )
    assert record(fake).status == "paused"
    assert fake.no_changes()
    fake.lines.clear()
    resumed = roll(fake, None, resume=True)
    assert (resumed.status, fake.lines) == ("done", [whole_plan({}), *ROLLING[3:]])
    assert fake.images() == dict.fromkeys(A, "200")
    assert fake.no_changes()
    history = read_history(fake.directory / ".scaler" / "history.json")
    assert [(e.kind, e.status) for e in history] == [("rollout", "paused"), ("rollout", "done")]


def test_pause_at_a_share_of_the_droplets(fake: FakeTerraform) -> None:
    result = roll(fake, "200", settings_for(fake, pause_after="50%"), batch_size=1)
    assert result.status == "paused"
    assert result.message.startswith("paused after batch 2/3 (--pause-after 50%): 2 of 3 ")
    assert fake.lines == ROLLING[:5]


def test_a_pause_point_past_the_last_batch_is_refused_before_anything(
    fake: FakeTerraform,
) -> None:
    before = tfvars(fake)
    with pytest.raises(RolloutError) as refused:
        roll(fake, "200", settings_for(fake, pause_after="3"), batch_size=1)
    assert str(refused.value) == (
        "--pause-after 3: the rollout has 3 batches, so there is nothing after batch 3 to "
        "pause before; give 1 to 2"
    )
    assert (fake.lines, tfvars(fake), record(fake)) == ([], before, None)


def test_abort_rolls_a_paused_rollout_back_in_batches(fake: FakeTerraform) -> None:
    roll(fake, "200", settings_for(fake, pause_after="1"), batch_size=1)
    fake.lines.clear()
    said = Said()
    result = roll(fake, None, settings_for(fake, rollback=False), said=said, abort=True)
    assert fake.lines == [
        whole_plan({}),
        batch_plan({"1": "100", "2": "100"}),
        apply("batch"),
    ]
    assert (result.status, result.message, result.kind) == (
        "rolled-back",
        "aborted: 1 droplets rolled back to image 100 in batches, all healthy",
        "abort",
    )
    assert (result.rollback_healthy, result.exit_code) == (True, ExitCode.ROLLED_BACK)
    assert "planning the rollout of image 100 (1 droplets)" in said.lines
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()
    assert get_tfvar(fake.directory / "terraform.tfvars", "image_slug") == "100"
    assert (record(fake).status, record(fake).kind) == ("rolled-back", "abort")
    history = read_history(fake.directory / ".scaler" / "history.json")
    assert [(e.kind, e.from_image, e.to_image, e.status) for e in history] == [
        ("rollout", "100", "200", "paused"),
        ("abort", "200", "100", "rolled-back"),
    ]
    with pytest.raises(RolloutError) as nothing:
        roll(fake, None, abort=True)
    assert str(nothing.value) == (
        f"nothing to abort: no unfinished rollout in {fake.directory}/.scaler/rollout.json"
    )


def test_an_abort_the_guard_refuses_keeps_the_paused_rollout(fake: FakeTerraform) -> None:
    roll(fake, "200", settings_for(fake, pause_after="1"), batch_size=1)
    before = tfvars(fake)
    fake.extra_changes = [
        {"address": DB, "type": "digitalocean_droplet", "change": {"actions": ["delete"]}}
    ]
    with pytest.raises(PlanRefused) as refused:
        roll(fake, None, abort=True)
    assert str(refused.value) == (
        f"refusing to roll out: the plan would delete {DB}; a rollout may only replace {WEB} "
        "(and update a load balancer in place); nothing was applied and image_slug in "
        f"{fake.directory}/terraform.tfvars is back to '200'"
    )
    assert tfvars(fake) == before
    assert (record(fake).status, record(fake).kind) == ("paused", "rollout")


def test_undo_rolls_the_last_rollout_back(fake: FakeTerraform) -> None:
    with pytest.raises(RolloutError) as nothing:
        roll(fake, None, undo=True)
    assert str(nothing.value) == (
        f"nothing to undo: no finished rollout in {fake.directory}/.scaler/history.json; "
        "pass --image ID to roll out an image"
    )
    roll(fake, "200", batch_size=1)
    fake.lines.clear()
    result = roll(fake, None, undo=True, batch_size=1)
    assert (result.status, result.message, result.kind) == (
        "done",
        "undone: 3 droplets now run image 100, all healthy",
        "undo",
    )
    assert fake.lines == [
        whole_plan({}),
        batch_plan({"1": "200", "2": "200"}),
        apply("batch"),
        batch_plan({"2": "200"}),
        apply("batch"),
        batch_plan({}),
        apply("batch"),
    ]
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()


def test_undo_waits_for_an_unfinished_rollout(fake: FakeTerraform) -> None:
    roll(fake, "200", batch_size=1)
    roll(fake, "300", settings_for(fake, pause_after="1"), batch_size=1)
    with pytest.raises(RolloutError) as busy:
        roll(fake, None, undo=True)
    assert str(busy.value) == (
        f"an unfinished rollout to image 300 (paused) is recorded in {fake.directory}/"
        ".scaler/rollout.json; --resume or --abort it before --undo"
    )


def test_a_failing_gate_rolls_the_batch_back(fake: FakeTerraform) -> None:
    gates = (Gate("/wp-login.php"),)
    result = roll(fake, "nologin", settings_for(fake, gates=gates), batch_size=1)
    new = sick(A[0], fake, "/wp-login.php").split(" (")[1]  # the droplet is gone now
    assert result.status == "rolled-back"
    assert result.message.startswith(
        f"batch 1/3: gate failed (want /wp-login.php -> 2xx): {A[0]} (127.9.0."
    ), (result.message, new)
    assert result.message.endswith(
        "/wp-login.php -> 404, body 'broken\\n'; rolled back 1 droplets to image 100 (healthy)"
    ), result.message
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()


def test_a_failing_gate_can_pause_instead(fake: FakeTerraform) -> None:
    gates = (Gate("/wp-login.php"), Gate("/", 200))
    settings = settings_for(fake, gates=gates, on_gate_failure="pause")
    result = roll(fake, "nologin", settings, batch_size=1)
    d = fake.droplets[A[0]]
    assert (result.status, result.exit_code) == ("paused", ExitCode.NEEDS_PERSON)
    assert result.message == (
        f"batch 1/3: gate failed (want /wp-login.php -> 2xx, / -> 200): {A[0]} ({d.public}): "
        f"http://{d.private}:{fake.web.port}/wp-login.php -> 404, body 'broken\\n'; paused "
        "(--on-gate-failure pause): look at the new droplets, then run scaler rollout --resume "
        "to check them again and go on, or scaler rollout --abort to roll back"
    )
    assert record(fake).status == "paused"
    assert fake.no_changes()
    aborted = roll(fake, None, settings_for(fake, rollback=False), abort=True)
    assert aborted.status == "rolled-back"
    assert fake.images() == dict.fromkeys(A, "100")
    assert fake.no_changes()


def test_gates_that_pass_are_said(fake: FakeTerraform) -> None:
    said = Said()
    gates = (Gate("/wp-login.php"), Gate("/wp-json/", 200))
    result = roll(fake, "200", settings_for(fake, gates=gates), said=said, batch_size=2)
    assert result.status == "done"
    assert "batch 1/2: gates passed (/wp-login.php -> 2xx, /wp-json/ -> 200)" in said.lines


def test_warm_up_fails_a_droplet_that_goes_bad_after_its_check(fake: FakeTerraform) -> None:
    settings = settings_for(fake, min_healthy_time=30.0)
    result = roll(fake, "flaky", settings, batch_size=1)
    assert result.status == "rolled-back"
    assert result.message.startswith(
        f"batch 1/3: {A[0]} failed its health check during the warm-up "
        "(--min-healthy-time 30s): http://127.0.0."
    ), result.message
    assert result.message.endswith(
        "/ -> 500, body 'broken\\n'; rolled back 1 droplets to image 100 (healthy)"
    ), result.message
    assert not result.batches[0].healthy
    assert fake.images() == dict.fromkeys(A, "100")


def test_warm_up_holds_each_batch_that_long(fake: FakeTerraform) -> None:
    said = Said()
    result = roll(fake, "200", settings_for(fake, min_healthy_time=1.0), said=said, batch_size=2)
    assert result.status == "done"
    assert "batch 1/2: warming up: each new droplet must pass every check for 1s" in said.lines
    assert all(b.end - b.start >= 1.0 for b in result.batches)


# --- the command line, where no Terraform is needed --------------------------------------------


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["rollout", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--resume", "--abort"],
            "give one of --resume, --abort and --undo, not --resume and --abort",
        ),
        (["--undo", "--abort"], "give one of --resume, --abort and --undo, not --abort and --undo"),
        (["--history", "--resume"], "--history only lists the rollouts; drop --resume"),
        (["--history", "--image", "5"], "--history only lists the rollouts; drop --image"),
        (
            ["--abort", "--image", "5"],
            "--abort rolls back to the recorded previous image; drop --image/--from-manifest",
        ),
        (
            ["--on-gate-failure", "pause"],
            "--on-gate-failure needs at least one --gate PATH[=STATUS]",
        ),
        (
            ["--pause-after", "1", "--strategy", "all"],
            "--pause-after stops between batches; --strategy all has one",
        ),
        (
            ["--gate", "wp-login"],
            "Invalid value for '--gate': --gate 'wp-login' is not PATH[=STATUS]; give e.g. "
            "/wp-login.php or /wp-json/=200",
        ),
        (
            ["--drain", "soon"],
            "Invalid value for '--drain': 'soon' is not a duration; give e.g. 30m, 90s or 1h",
        ),
    ],
)
def test_bad_combinations_are_usage_errors(args: list[str], error: str, tmp_path: Path) -> None:
    result = cli("-C", str(tmp_path), *args)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines()[-1] == f"Error: {error}"


def test_history_lists_the_rollouts(fake: FakeTerraform) -> None:
    assert cli("-C", str(fake.directory), "--history").stdout == (
        f"no rollouts recorded in {fake.directory}/.scaler/history.json\n"
    )
    roll(fake, "200", settings_for(fake, pause_after="1"), batch_size=1)
    roll(fake, None, settings_for(fake, rollback=False), abort=True)
    listed = cli("-C", str(fake.directory), "--history")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  rollout  100 -> 200  paused  \(1 droplets, \d+s\)",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        r"\S+ \S+ UTC  abort    200 -> 100  rolled-back  \(1 droplets, \d+s\)", lines[1]
    ), lines[1]
    as_json = json.loads(cli("-C", str(fake.directory), "--history", "--json").stdout)
    assert [(e["kind"], e["status"]) for e in as_json] == [
        ("rollout", "paused"),
        ("abort", "rolled-back"),
    ]


def test_help_says_the_exit_codes() -> None:
    text = " ".join(cli("--help").stdout.split())
    assert (
        "Exit codes: 0 done; 4 failed and rolled back, healthy (the site runs as before); 5 "
        "needs a person: failed, paused, or the rollback is not healthy; 7 refused by the "
        "guard, nothing applied; 2 bad command line; 1 error, nothing changed; 130 "
        "interrupted (Ctrl-C), resumable."
    ) in text
