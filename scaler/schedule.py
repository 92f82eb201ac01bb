"""Run `scaler rebake` on a schedule: systemd service + timer units, or a crontab line.

`--every` takes `daily` (00:00), `weekly` (Monday 00:00) or a 5-field cron expression
(minute hour day-of-month month day-of-week) made of numbers, `*`, lists, ranges and steps
(plus month and weekday names and the @hourly/@daily/@weekly/@monthly/@yearly shorthands).
Cron expressions become systemd `OnCalendar=` values that fire at exactly the same minutes,
in the same (local) time zone. Cron runs a job when *either* the day of month or the day of
week matches if both are restricted; systemd requires both, so that case becomes two
`OnCalendar=` lines.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic

DEFAULT_NAME = "scaler-rebake"
DEFAULT_RANDOM_DELAY = "30min"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_ENV_FILE = "/etc/scaler/scaler.env"
USER_ENV_FILE = "%h/.config/scaler/scaler.env"
# The rebake exit code that means "rolled out": a success, not a failed unit.
ROLLED_OUT_EXIT = 3

EVERY_WORDS = {"daily": "0 0 * * *", "weekly": "0 0 * * 1"}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SYSTEMD_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class ScheduleError(ScalerError):
    """A schedule that cannot be expressed, or units that cannot be written."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    # 7 is Sunday too, as in every cron.
    _Field("day of week", 0, 7, _CRON_DAYS, 0),
)


@dataclass(frozen=True)
class Schedule:
    """When to run: the cron expression and the equivalent systemd OnCalendar values."""

    every: str
    cron: str
    calendars: tuple[str, ...]


def parse_every(every: str) -> Schedule:
    """A Schedule from `daily`, `weekly` or a 5-field cron expression; ScheduleError otherwise."""
    text = " ".join(every.split())
    cron = EVERY_WORDS.get(text.lower(), _MACROS.get(text.lower(), text))
    if text.lower() == "@reboot":
        raise ScheduleError(
            "@reboot is not a schedule; give daily, weekly or a cron expression like '0 3 * * *'"
        )
    return Schedule(text, cron, cron_to_calendar(cron))


def _value(token: str, spec: _Field, expr: str) -> int:
    lowered = token.lower()
    if spec.names and lowered in spec.names:
        return spec.names.index(lowered) + spec.name_base
    if not token.isdigit():
        raise _bad(expr, f"{token!r} is not a number in the {spec.name} field")
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise _bad(expr, f"{spec.name} {number} is outside {spec.low}-{spec.high}")
    return number


def _bad(expr: str, why: str) -> ScheduleError:
    return ScheduleError(
        f"cannot use cron expression {expr!r}: {why}; use numbers, *, lists (1,15), "
        "ranges (1-5) and steps (*/15, 0-30/10) in 5 fields: minute hour day month weekday"
    )


def _parse_field(text: str, spec: _Field, expr: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(expr, f"step {step_text!r} in the {spec.name} field is not a number > 0")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
            if spec.name == "day of week":
                high = 6
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec, expr), _value(last, spec, expr)
            if low > high:
                raise _bad(expr, f"range {base!r} in the {spec.name} field runs backwards")
        elif base:
            low = _value(base, spec, expr)
            # `5/15` means 5, 20, 35, 50 (from 5 to the end), as in Vixie cron.
            high = spec.high if slash else low
        else:
            raise _bad(expr, f"empty item in the {spec.name} field")
        values.update(range(low, high + 1, step))
    if spec.name == "day of week" and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def cron_to_calendar(expr: str) -> tuple[str, ...]:
    """The systemd OnCalendar values that fire exactly when the cron expression does."""
    fields = expr.split()
    if len(fields) != 5:
        raise _bad(expr, f"it has {len(fields)} fields, not 5")
    unsupported = re.search(r"[^0-9A-Za-z*,/-]", "".join(fields))
    if unsupported:
        raise _bad(expr, f"{unsupported.group()!r} is not supported")
    minute, hour, dom, month, dow = (
        _parse_field(text, spec, expr) for text, spec in zip(fields, _FIELDS, strict=True)
    )
    time = f"{_render(hour, 0, 23)}:{_render(minute, 0, 59)}:00"
    months = _render(month, 1, 12)
    days = _render(dom, 1, 31)
    weekdays = _render_weekdays(dow)
    dom_star, dow_star = fields[2].startswith("*"), fields[4].startswith("*")
    if dom_star or dow_star:
        prefix = "" if weekdays == "*" else weekdays + " "
        return (f"{prefix}*-{months}-{days} {time}",)
    # Both restricted: cron fires when either matches; systemd ORs separate OnCalendar lines.
    return (f"{weekdays} *-{months}-* {time}", f"*-{months}-{days} {time}")


def _render(values: set[int], low: int, high: int) -> str:
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if len(ordered) >= 2:
        step = ordered[1] - ordered[0]
        progression = all(b - a == step for a, b in itertools.pairwise(ordered))
        # systemd's A/B runs from A to the end of the field, so only that shape may use it.
        if progression and step > 1 and ordered[-1] + step > high:
            return f"{ordered[0]:02d}/{step}"
    return ",".join(
        f"{a:02d}" if a == b else f"{a:02d}..{b:02d}" if b - a >= 2 else f"{a:02d},{b:02d}"
        for a, b in _runs(ordered)
    )


def _runs(ordered: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in ordered:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _render_weekdays(values: set[int]) -> str:
    if values >= set(range(7)):
        return "*"
    # systemd weeks start on Monday: cron 1..6 -> 0..5, cron 0 (Sunday) -> 6.
    monday_first = sorted((v - 1) % 7 for v in values)
    return ",".join(
        _SYSTEMD_DAYS[a]
        if a == b
        else f"{_SYSTEMD_DAYS[a]}..{_SYSTEMD_DAYS[b]}"
        if b - a >= 2
        else f"{_SYSTEMD_DAYS[a]},{_SYSTEMD_DAYS[b]}"
        for a, b in _runs(monday_first)
    )


# --- units and crontab lines -------------------------------------------------------------------


@dataclass(frozen=True)
class Units:
    """A systemd service and the timer that starts it."""

    service_name: str
    service: str
    timer_name: str
    timer: str


_SAFE_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str) -> str:
    """One ExecStart= argument, quoted for systemd (specifiers % and variables $ escaped)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _SAFE_ARG.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", name) or name.endswith((".", "-")):
        raise ScheduleError(
            f"unit name {name!r} is not usable; use letters, digits, '-', '_' and '.'"
        )
    return name


def render_units(
    schedule: Schedule,
    command: Sequence[str],
    *,
    workdir: Path,
    name: str = DEFAULT_NAME,
    random_delay: str = DEFAULT_RANDOM_DELAY,
    env_file: str | None = SYSTEM_ENV_FILE,
    user: bool = False,
) -> Units:
    """The service (runs `command` once in `workdir`) and its timer (`schedule`, Persistent)."""
    _check_name(name)
    if not re.fullmatch(r"\d+(\.\d+)?\s*(us|ms|s|sec|m|min|h|hr|d|w)?", random_delay.strip()):
        raise ScheduleError(
            f"--random-delay {random_delay!r} is not a systemd time span; give e.g. 30min, 1h, 0"
        )
    service_lines = [
        f"# Written by `scaler schedule`: runs `{shlex.join(command[1:])}` once.",
        "# Exit codes: 0 nothing due, 3 rolled out, 1 error (nothing changed),",
        "# 4 failed and rolled back, 5 failed and needs a person (see `scaler rebake --help`).",
        "[Unit]",
        "Description=scaler: rebake the WordPress snapshot and roll it out when due",
    ]
    if not user:
        service_lines += ["Wants=network-online.target", "After=network-online.target"]
    service_lines += [
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={str(workdir).replace('%', '%%')}",
    ]
    if env_file:
        # The token lives in this file (mode 0600), never in the unit.
        service_lines.append(f"EnvironmentFile={env_file}")
    service_lines += [
        "ExecStart=" + " ".join(systemd_quote(arg) for arg in command),
        f"SuccessExitStatus={ROLLED_OUT_EXIT}",
        "",
    ]
    timer_lines = [
        f"# Written by `scaler schedule --every {schedule.every!r}` (cron: {schedule.cron}).",
        "[Unit]",
        f"Description=scaler: start {name}.service ({schedule.every})",
        "",
        "[Timer]",
        *(f"OnCalendar={calendar}" for calendar in schedule.calendars),
        # Catch up after downtime, and spread many sites' bakes over the API's rate limit.
        "Persistent=true",
        f"RandomizedDelaySec={random_delay.strip()}",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return Units(
        f"{name}.service", "\n".join(service_lines), f"{name}.timer", "\n".join(timer_lines)
    )


def render_cron_line(
    schedule: Schedule,
    command: Sequence[str],
    *,
    workdir: Path,
    lock_file: Path | None = None,
    env_file: str | None = None,
) -> str:
    """A crontab line: cd to `workdir`, read `env_file`, run `command` under `flock -n`."""
    lock = lock_file or workdir / ".scaler" / "schedule.flock"
    steps = [f"cd {shlex.quote(str(workdir))}", f"mkdir -p {shlex.quote(str(lock.parent))}"]
    if env_file:
        steps.append(f"set -a && . {shlex.quote(env_file)} && set +a")
    steps.append(f"flock -n {shlex.quote(str(lock))} {shlex.join(command)}")
    # cron turns an unescaped % into a newline.
    return f"{schedule.cron} " + " && ".join(steps).replace("%", "\\%")


def default_unit_dir(user: bool, environ: Mapping[str, str] | None = None) -> Path:
    """/etc/systemd/system, or ~/.config/systemd/user (XDG_CONFIG_HOME honoured) with --user."""
    if not user:
        return SYSTEM_UNIT_DIR
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(os.path.expanduser(config)) / "systemd" / "user"


def install_units(units: Units, unit_dir: Path) -> tuple[Path, Path]:
    """Write both unit files into `unit_dir` (created if missing), atomically; their paths."""
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        service = unit_dir / units.service_name
        timer = unit_dir / units.timer_name
        write_atomic(service, units.service, mode=0o644)
        write_atomic(timer, units.timer, mode=0o644)
    except OSError as err:
        raise ScheduleError(
            f"cannot write units to {unit_dir} ({err.strerror or err}); run as root, "
            "or pass --user for user units, or --unit-dir DIR"
        ) from None
    return service, timer
