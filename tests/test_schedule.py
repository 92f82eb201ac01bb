"""`scaler schedule`: cron -> OnCalendar, systemd units checked by systemd itself, cron lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, need

from scaler.cli import main
from scaler.schedule import (
    Schedule,
    ScheduleError,
    cron_to_calendar,
    parse_every,
    render_cron_line,
    render_units,
    systemd_quote,
)

SCALER = str(Path(sys.executable).parent / "scaler")

CASES = [
    ("daily", ("*-*-* 00:00:00",)),
    ("weekly", ("Mon *-*-* 00:00:00",)),
    ("0 3 * * *", ("*-*-* 03:00:00",)),
    ("*/5 * * * *", ("*-*-* *:00/5:00",)),
    ("30 2 * * 1-5", ("Mon..Fri *-*-* 02:30:00",)),
    ("0 0 1,15 * *", ("*-*-01,15 00:00:00",)),
    ("15 */6 * * *", ("*-*-* 00/6:15:00",)),
    ("0-30/10 9-17 * * *", ("*-*-* 09..17:00,10,20,30:00",)),
    ("5/15 * * jan-mar sun", ("Sun *-01..03-* *:05/15:00",)),
    ("0 4 * * 0,6", ("Sat,Sun *-*-* 04:00:00",)),
    ("0 4 * * 5-7", ("Fri..Sun *-*-* 04:00:00",)),
    ("0 0 */2 * *", ("*-*-01/2 00:00:00",)),
    ("@weekly", ("Sun *-*-* 00:00:00",)),
    ("0 12 * * 1,2,4", ("Mon,Tue,Thu *-*-* 12:00:00",)),
    # Both day fields restricted: cron runs on either, so systemd gets two OnCalendar lines.
    ("0 0 1 * mon", ("Mon *-*-* 00:00:00", "*-*-01 00:00:00")),
]


@pytest.mark.parametrize(("every", "calendars"), CASES)
def test_cron_expressions_become_oncalendar(every: str, calendars: tuple[str, ...]) -> None:
    assert parse_every(every).calendars == calendars


@pytest.mark.parametrize(("every", "calendars"), CASES)
def test_systemd_reads_each_calendar_as_written(every: str, calendars: tuple[str, ...]) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    for calendar in calendars:
        run = subprocess.run(
            ["systemd-analyze", "calendar", calendar], capture_output=True, text=True, check=False
        )
        assert run.returncode == 0, run.stderr
        # Our string is already systemd's normalized form: nothing got reinterpreted.
        assert f"Normalized form: {calendar}\n" in run.stdout


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("* * *", "it has 3 fields, not 5"),
        ("0 0 L * *", "'L' is not a number in the day of month field"),
        ("0 0 * * 1#2", "'#' is not supported"),
        ("0 0 ? * *", "'?' is not supported"),
        ("61 * * * *", "minute 61 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("5-1 * * * *", "range '5-1' in the minute field runs backwards"),
        ("*/0 * * * *", "step '0' in the minute field is not a number > 0"),
    ],
)
def test_unsupported_cron_is_refused_clearly(expr: str, why: str) -> None:
    with pytest.raises(ScheduleError) as err:
        cron_to_calendar(expr)
    assert str(err.value) == (
        f"cannot use cron expression {expr!r}: {why}; use numbers, *, lists (1,15), ranges "
        "(1-5) and steps (*/15, 0-30/10) in 5 fields: minute hour day month weekday"
    )


def test_reboot_is_not_a_schedule() -> None:
    with pytest.raises(ScheduleError, match="@reboot is not a schedule"):
        parse_every("@reboot")


def test_systemd_quote() -> None:
    assert systemd_quote("--max-age") == "--max-age"
    assert systemd_quote("/srv/my site") == '"/srv/my site"'
    assert systemd_quote('say "hi" 50%') == '"say \\"hi\\" 50%%"'
    assert systemd_quote("$HOME") == '"$$HOME"'


def test_units_text(tmp_path: Path) -> None:
    units = render_units(
        parse_every("daily"),
        [SCALER, "rebake", "--max-age", "7d", "--notify-url", "https://hooks.example/a b"],
        workdir=tmp_path,
        random_delay="1h",
    )
    assert units.service_name == "scaler-rebake.service"
    assert units.timer_name == "scaler-rebake.timer"
    service = units.service.splitlines()
    assert "Type=oneshot" in service
    assert f"WorkingDirectory={tmp_path}" in service
    assert "EnvironmentFile=/etc/scaler/scaler.env" in service
    assert (
        f'ExecStart={SCALER} rebake --max-age 7d --notify-url "https://hooks.example/a b"'
        in service
    )
    assert "SuccessExitStatus=3" in service
    assert "After=network-online.target" in service
    timer = units.timer.splitlines()
    assert "OnCalendar=*-*-* 00:00:00" in timer
    assert "Persistent=true" in timer
    assert "RandomizedDelaySec=1h" in timer
    assert "Unit=scaler-rebake.service" in timer
    assert "WantedBy=timers.target" in timer


def _verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    files = sorted(str(p) for p in unit_dir.iterdir())
    return subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("every", ["daily", "weekly", "0 3 * * 1-5", "0 0 1 * mon"])
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path, every: str) -> None:
    units_dir = tmp_path / "units"
    work = tmp_path / "site"
    work.mkdir()
    result = CliRunner().invoke(
        main,
        [
            "schedule",
            "--every",
            every,
            "--install",
            "--unit-dir",
            str(units_dir),
            "--workdir",
            str(work),
            "--env-file",
            "",
            "--",
            "--max-age",
            "7d",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(units_dir / "scaler-rebake.service"),
        str(units_dir / "scaler-rebake.timer"),
    ]
    assert "systemctl daemon-reload && systemctl enable --now scaler-rebake.timer" in (
        result.stderr
    )
    assert (units_dir / "scaler-rebake.service").stat().st_mode & 0o777 == 0o644
    verify = _verify(units_dir)
    assert verify.returncode == 0, verify.stderr
    # systemd reports what it ignores only as warnings: there must be none for our files.
    assert str(units_dir) not in verify.stderr, verify.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # The check above can fail: a calendar systemd cannot read makes verify fail.
    units = render_units(
        Schedule("x", "x", ("bogus",)), [SCALER, "rebake"], workdir=tmp_path, env_file=None
    )
    (tmp_path / units.service_name).write_text(units.service)
    (tmp_path / units.timer_name).write_text(units.timer)
    verify = _verify(tmp_path)
    assert verify.returncode != 0
    assert "Failed to parse calendar specification" in verify.stderr


def test_user_units_print_with_their_paths(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["schedule", "--every", "weekly", "--user", "--workdir", str(tmp_path)],
        env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"# {tmp_path}/cfg/systemd/user/scaler-rebake.service\n")
    assert f"# {tmp_path}/cfg/systemd/user/scaler-rebake.timer\n" in out
    assert "OnCalendar=Mon *-*-* 00:00:00" in out
    assert "EnvironmentFile=%h/.config/scaler/scaler.env" in out
    assert "network-online.target" not in out  # no such target in a user manager
    assert f"ExecStart={SCALER} rebake --log-format json\n" in out


def test_cron_line(tmp_path: Path) -> None:
    line = render_cron_line(
        parse_every("*/30 2-4 * * *"),
        [SCALER, "rebake", "--max-age", "7d", "--notify-url", "https://h.example/?a=1%"],
        workdir=tmp_path,
        env_file="/etc/scaler/scaler.env",
    )
    assert line == (
        f"*/30 2-4 * * * cd {tmp_path} && mkdir -p {tmp_path}/.scaler && set -a && "
        f". /etc/scaler/scaler.env && set +a && flock -n {tmp_path}/.scaler/schedule.flock "
        f"{SCALER} rebake --max-age 7d --notify-url 'https://h.example/?a=1\\%'"
    )


def test_cron_line_runs_and_flock_refuses_an_overlap(tmp_path: Path) -> None:
    need(shutil.which("flock") is not None, "flock (util-linux) is not installed")
    marker = tmp_path / "ran"
    line = render_cron_line(
        parse_every("daily"), ["touch", str(marker)], workdir=tmp_path, env_file=None
    )
    command = line.split(" ", 5)[5]  # what cron hands to /bin/sh
    lock = tmp_path / ".scaler" / "schedule.flock"
    lock.parent.mkdir()
    hold = (
        "import fcntl, sys, time\n"
        "f = open(sys.argv[1], 'w')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused = subprocess.run(["/bin/sh", "-c", command], check=False)
        assert refused.returncode == 1
        assert not marker.exists()
    finally:
        holder.kill()
        holder.wait()
    ran = subprocess.run(["/bin/sh", "-c", command], check=False)
    assert ran.returncode == 0
    assert marker.exists()


def test_cron_with_install_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["schedule", "--every", "daily", "--cron", "--install"])
    assert result.exit_code == 2
    assert "--install writes systemd units; add the --cron line with crontab -e" in result.output


def test_bad_every_is_an_error_line() -> None:
    result = CliRunner().invoke(main, ["schedule", "--every", "hourly-ish"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot use cron expression 'hourly-ish': it has 1")


def test_install_into_an_unwritable_dir_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(
        main, ["schedule", "--every", "daily", "--install", "--unit-dir", str(blocker / "x")]
    )
    assert result.exit_code == 1
    assert "run as root, or pass --user for user units, or --unit-dir DIR" in result.stderr


def test_the_ci_sample_runs_commands_scaler_accepts() -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / "docs" / "ci-schedule.yml").read_text())
    assert workflow[True]["schedule"][0]["cron"] == "17 3 * * 1"  # YAML 1.1 reads `on` as True
    parse_every(workflow[True]["schedule"][0]["cron"])
    steps = workflow["jobs"]["rebake"]["steps"]
    scripts = [s["run"] for s in steps if "run" in s and "scaler " in s["run"]]
    ctx = click.Context(main)
    rebake = main.get_command(ctx, "rebake")
    group = main.get_command(ctx, "snapshots")
    assert rebake is not None and isinstance(group, click.Group)
    prune = group.get_command(ctx, "prune")
    assert prune is not None
    commands = {"rebake": rebake, "prune": prune}
    seen = set()
    for script in scripts:
        flat = script.replace("\\\n", " ")
        for name, command in commands.items():
            marker = "scaler rebake" if name == "rebake" else "scaler snapshots prune"
            if marker not in flat:
                continue
            seen.add(name)
            words = flat.split(marker, 1)[1].split(">")[0].split()
            options = {w for w in words if w.startswith("--")}
            known = {o for p in command.params for o in p.opts}
            assert options <= known, options - known
    assert seen == {"rebake", "prune"}


def test_cron_line_reads_the_same_token_file_as_the_unit(tmp_path: Path) -> None:
    args = ["schedule", "--every", "daily", "--workdir", str(tmp_path), "--scaler", SCALER]
    cron = CliRunner().invoke(main, [*args, "--cron"])
    assert cron.exit_code == 0, cron.output
    assert " && set -a && . /etc/scaler/scaler.env && set +a && flock -n " in cron.stdout
    unit = CliRunner().invoke(main, args)
    assert "EnvironmentFile=/etc/scaler/scaler.env" in unit.stdout
    user = CliRunner().invoke(main, [*args, "--cron", "--user"], env={"HOME": str(tmp_path)})
    assert f". {tmp_path}/.config/scaler/scaler.env && set +a" in user.stdout
    none = CliRunner().invoke(main, [*args, "--cron", "--env-file", ""])
    assert "set -a" not in none.stdout
