"""The event log: text and JSON lines on a stream, timed steps, and no token ever written."""

from __future__ import annotations

import io
import json

import pytest

from scaler.events import EventLog, known_secrets, scrub

TOKEN = "dop_v1_" + "ab12" * 16
OLD_TOKEN = "0123456789abcdef" * 4


class FakeClock:
    """A clock the test moves by hand (the log's only time source)."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_json_events_are_one_object_per_line_with_step_outcome_duration_ids() -> None:
    out, clock = io.StringIO(), FakeClock()
    log = EventLog("json", out, secrets=(), clock=clock).bind(site="prod")
    with log.step("bake", project="wordpress") as step:
        clock.now += 2.5
        step.ids["snapshot"] = 170000004
        step.message = "baked wordpress_26-11-25"
    log.event("finish", "ok", "done", exit_code=3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {
        "time": "2026-11-18T11:06:42.500Z",
        "started": "2026-11-18T11:06:40.000Z",
        "step": "bake",
        "outcome": "ok",
        "duration": 2.5,
        "ids": {"project": "wordpress", "snapshot": 170000004},
        "message": "baked wordpress_26-11-25",
        "site": "prod",
    }
    assert second["step"] == "finish"
    assert second["exit_code"] == 3
    assert "started" not in second and "duration" not in second


def test_a_step_that_raises_is_logged_failed_and_the_error_propagates() -> None:
    out = io.StringIO()
    log = EventLog("json", out, secrets=(), clock=FakeClock())
    with pytest.raises(RuntimeError, match="snapshot action errored"), log.step("bake"):
        raise RuntimeError("snapshot action errored")
    event = json.loads(out.getvalue())
    assert event["outcome"] == "failed"
    assert event["message"] == "snapshot action errored"


def test_text_format_is_one_readable_line() -> None:
    out = io.StringIO()
    log = EventLog("text", out, secrets=(), clock=FakeClock())
    log.event("decide", "ok", "due: the provisioning changed", ids={"due": True}, duration=0.25)
    assert out.getvalue() == (
        "11:06:40 decide ok (0.2s): due: the provisioning changed  due=True\n"
    )


def test_tokens_never_reach_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    custom = "my-very-own-token-value"
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", custom)
    out = io.StringIO()
    log = EventLog("json", out, clock=FakeClock())  # secrets from the environment
    log.event(
        "bake",
        "failed",
        f"401 with Authorization: Bearer {custom} and {TOKEN}",
        ids={"api_token": "whatever", "old": OLD_TOKEN, "nested": {"password": "hunter2"}},
        url=f"https://x/?t={TOKEN}",
    )
    text = out.getvalue()
    for secret in (custom, TOKEN, OLD_TOKEN, "hunter2", "whatever"):
        assert secret not in text
    event = json.loads(text)
    assert event["message"] == "401 with Authorization: Bearer *** and ***"
    assert event["ids"] == {"api_token": "***", "old": "***", "nested": {"password": "***"}}


def test_known_secrets_reads_the_token_variables_only() -> None:
    env = {"DIGITALOCEAN_TOKEN": "aaaa-token", "TF_VAR_do_token": "bbbb", "HOME": "/root"}
    assert set(known_secrets(env)) == {"aaaa-token", "bbbb"}
    # Short, accidental values are not treated as secrets (they would mangle every line).
    assert known_secrets({"DIGITALOCEAN_TOKEN": "x"}) == ()


def test_scrub_keeps_ordinary_values() -> None:
    value = {"snapshot": 170000001, "name": "wordpress_26-11-25-03-00-01", "regions": ["nyc3"]}
    assert scrub(value, ("secret",)) == value


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        EventLog("yaml")  # type: ignore[arg-type]
