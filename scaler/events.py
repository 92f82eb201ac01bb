"""A structured event log for unattended runs: one line per event on stderr, text or JSON.

A JSON event is one object per line::

    {"time": "2026-11-25T03:00:04.120Z", "started": "2026-11-25T03:00:01.000Z",
     "step": "bake", "outcome": "ok", "duration": 3.12, "ids": {"snapshot": 170000004},
     "message": "baked wordpress_26-11-25-03-00-01", "site": "prod"}

`time` is when the event was written, `started` (steps only) when the step began, `duration`
is in seconds. Values that look like an API token (DigitalOcean's `dop_v1_...` and the like,
bare 64-hex strings, `Bearer ...`), values under keys that name a secret, and the values of the
known token variables in the environment are written as `***`: logs end up in CI output and
journald, and the token must never be there.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

# A progress callback: one human line at a time (the CLI prints it on stderr).
Say = Callable[[str], None]
# Seconds from a fixed start: time.monotonic for waits and deadlines, time.time for stamps.
Clock = Callable[[], float]

LogFormat = Literal["text", "json"]
Outcome = Literal["ok", "failed", "skipped", "info"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

REDACTED = "***"

# Environment variables that hold a DigitalOcean token in the tools scaler drives.
TOKEN_ENV_VARS = (
    "DIGITALOCEAN_TOKEN",
    "DIGITALOCEAN_ACCESS_TOKEN",
    "DIGITALOCEAN_API_TOKEN",
    "DO_API_TOKEN",
    "TF_VAR_do_token",
    "TF_VAR_do_api_token",
    "PKR_VAR_do_api_token",
)

# DigitalOcean's current tokens (personal, OAuth, refresh) and its older 64-hex ones.
_TOKEN_PATTERN = re.compile(
    r"\bdo[por]_v1_[A-Za-z0-9]{16,}|\b[0-9a-fA-F]{64}\b|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|api_key", re.IGNORECASE)


def known_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The token values set in the environment (any of TOKEN_ENV_VARS), longest first."""
    env = os.environ if environ is None else environ
    values = {env[name] for name in TOKEN_ENV_VARS if len(env.get(name, "")) >= 4}
    return tuple(sorted(values, key=len, reverse=True))


def scrub(value: Any, secrets: Sequence[str] = ()) -> Any:
    """`value` with every token-looking string and every known secret replaced by ***."""
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
        return _TOKEN_PATTERN.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) and v else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, secrets) for v in value]
    return value


def _stamp(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Step:
    """A step in progress: add ids or a message before it ends; `fail` marks it failed."""

    name: str
    ids: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    outcome: Outcome = "ok"

    def fail(self, message: str) -> None:
        """Mark the step failed without raising (the caller carries on, e.g. to roll back)."""
        self.outcome = "failed"
        self.message = message


class EventLog:
    """Writes events to a stream (stderr by default) as text or one JSON object per line."""

    def __init__(
        self,
        fmt: LogFormat = "text",
        stream: TextIO | None = None,
        *,
        secrets: Sequence[str] | None = None,
        context: Mapping[str, Any] | None = None,
        clock: Clock = time.time,
    ) -> None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
        self.fmt = fmt
        self._stream = stream
        self.secrets = tuple(known_secrets() if secrets is None else secrets)
        self.context = dict(context or {})
        self._clock = clock

    def bind(self, **context: Any) -> EventLog:
        """The same log with more fields on every event (e.g. site=prod)."""
        child = EventLog(self.fmt, self._stream, secrets=self.secrets, clock=self._clock)
        child.context = {**self.context, **context}
        return child

    def event(
        self,
        step: str,
        outcome: Outcome = "info",
        message: str = "",
        *,
        ids: Mapping[str, Any] | None = None,
        duration: float | None = None,
        started: float | None = None,
        **fields: Any,
    ) -> None:
        """Write one event."""
        now = self._clock()
        record: dict[str, Any] = {"time": _stamp(now)}
        if started is not None:
            record["started"] = _stamp(started)
        record.update(step=step, outcome=outcome)
        if duration is not None:
            record["duration"] = round(duration, 3)
        record["ids"] = dict(ids or {})
        if message:
            record["message"] = message
        record.update(self.context)
        record.update(fields)
        self._write(scrub(record, self.secrets))

    @contextmanager
    def step(self, name: str, **ids: Any) -> Iterator[Step]:
        """Time a step and write its event when it ends: ok, failed (also on an exception)."""
        current = Step(name, dict(ids))
        started = self._clock()
        try:
            yield current
        except BaseException as err:
            current.outcome = "failed"
            current.message = current.message or str(err) or type(err).__name__
            raise
        finally:
            self.event(
                name,
                current.outcome,
                current.message,
                ids=current.ids,
                duration=self._clock() - started,
                started=started,
            )

    def _write(self, record: dict[str, Any]) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        if self.fmt == "json":
            line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
        else:
            line = _text_line(record)
        stream.write(line + "\n")
        stream.flush()


def _text_line(record: Mapping[str, Any]) -> str:
    head = f"{record['time'][11:19]} {record['step']}"
    if record["outcome"] != "info":
        head += f" {record['outcome']}"
    if "duration" in record:
        head += f" ({record['duration']:.1f}s)"
    line = head
    if record.get("message"):
        line += f": {record['message']}"
    extras = {k: v for k, v in record.items() if k not in _TEXT_SKIP}
    extras.update(record.get("ids") or {})
    if extras:
        line += "  " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
    return line


_TEXT_SKIP = frozenset({"time", "started", "step", "outcome", "duration", "ids", "message"})


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
