"""--notify-url: a Slack-compatible JSON POST to a real HTTP server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import QuietHandler, serve_loopback, stop_loopback

from scaler.notify import NotifyError, check_url, post_summary

TOKEN = "dop_v1_" + "cd34" * 16


class Hook:
    """A webhook receiver on 127.0.0.1: records each POST, answers with `status`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = serve_loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/secretpath"

    def close(self) -> None:
        stop_loopback(self.server)


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def test_posts_text_and_fields_as_json(hook: Hook) -> None:
    status = post_summary(
        hook.url,
        "scaler rebake on prod: rolled-out - 3 droplets now run image 170000004",
        {"command": "rebake", "exit_code": 3, "sites": [{"site": "prod"}]},
        secrets=(TOKEN,),
    )
    assert status == 200
    (request,) = hook.received
    assert request["path"] == "/services/T0/B0/secretpath"
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert request["headers"]["User-Agent"].startswith("scaler/")
    assert json.loads(request["body"]) == {
        "text": "scaler rebake on prod: rolled-out - 3 droplets now run image 170000004",
        "command": "rebake",
        "exit_code": 3,
        "sites": [{"site": "prod"}],
    }


def test_secrets_are_scrubbed_from_the_body(hook: Hook) -> None:
    post_summary(hook.url, f"failed: token {TOKEN} refused", {"message": f"Bearer {TOKEN}"})
    body = hook.received[0]["body"].decode()
    assert TOKEN not in body
    assert json.loads(body)["text"] == "failed: token *** refused"


def test_an_error_status_is_a_one_line_error_without_the_secret_path(hook: Hook) -> None:
    hook.status = 500
    with pytest.raises(NotifyError) as err:
        post_summary(hook.url, "x")
    port = hook.server.server_address[1]
    assert str(err.value) == (
        f"the webhook http://127.0.0.1:{port}/... answered 500 Internal Server Error; "
        "check --notify-url"
    )


def test_an_unreachable_webhook_is_a_notify_error(hook: Hook) -> None:
    port = hook.server.server_address[1]
    hook.close()
    with pytest.raises(NotifyError, match=rf"cannot reach the webhook http://127.0.0.1:{port}/"):
        post_summary(f"http://127.0.0.1:{port}/x", "x", timeout=2)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1:8080/hook", "http:///nohost"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(NotifyError, match="is not an http\\(s\\) URL"):
        check_url(url)
