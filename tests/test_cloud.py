"""The DigitalOcean client against the local cloud: retries, waits, errors, no token leaks."""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest
from test_bake import SECRET_TOKEN, api, bake_cloud_fixture  # noqa: F401 - fixture

from scaler.cloud import (
    ActionErrored,
    Cloud,
    CloudError,
    DropletSpec,
    NotFound,
    Pacing,
    WaitTimeout,
    endpoint_from,
)
from scaler.local.api import LocalCloud

SPEC = DropletSpec(name="client-test", region="nyc3", size="s-1vcpu-1gb", image="debian-12-x64")


def client(cloud: LocalCloud, lines: list[str] | None = None) -> Cloud:
    return Cloud(
        SECRET_TOKEN,
        cloud.endpoint,
        pacing=Pacing.fast(0.05),
        on_progress=lines.append if lines is not None else None,
    )


def test_endpoint_forms() -> None:
    assert endpoint_from("http://127.0.0.1:9/") == "http://127.0.0.1:9/v2/"
    assert endpoint_from(None, {"DIGITALOCEAN_API_URL": "http://h:1"}) == "http://h:1/v2/"
    assert endpoint_from(None, {"DIGITALOCEAN_END_POINT": "http://h:2/v2/"}) == "http://h:2/v2/"
    assert endpoint_from(None, {}) == "https://api.digitalocean.com/v2/"


def test_retries_5xx_then_gives_up_with_the_apis_message(bake_cloud: LocalCloud) -> None:
    bake_cloud.faults.clear()
    bake_cloud.faults.fail("GET", "/v2/account", status=503, times=2)
    lines: list[str] = []
    assert "account" in client(bake_cloud, lines).request("GET", "account")
    assert lines == [
        "GET /v2/account -> 503; retrying in 0.1s",
        "GET /v2/account -> 503; retrying in 0.1s",
    ]
    bake_cloud.faults.fail("GET", "/v2/account", status=500, times=50, message="Broken.")
    with pytest.raises(CloudError, match=r"^GET /v2/account failed \(500\): Broken\.$"):
        client(bake_cloud).request("GET", "account")
    bake_cloud.faults.clear()


def test_429_waits_retry_after(bake_cloud: LocalCloud) -> None:
    bake_cloud.faults.clear()
    bake_cloud.faults.fail("GET", "/v2/regions", status=429, retry_after=1)
    started = time.monotonic()
    client(bake_cloud).request("GET", "regions")
    assert time.monotonic() - started >= 1.0


@contextlib.contextmanager
def answering(*responses: tuple[int, dict[str, str]]) -> Iterator[tuple[str, list[float]]]:
    """A loopback HTTP server giving these (status, headers) in turn, then 200 {"ok": true};
    yields its /v2/ URL and the times requests came in. The local cloud never sends a 429
    without retry-after, so the ratelimit-reset branch needs a server of its own."""
    queue = list(responses)
    seen: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(time.time())
            status, headers = queue.pop(0) if queue else (200, {})
            body = b'{"ok": true}' if status == 200 else b'{"id": "x", "message": "Slow down."}'
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/", seen
    finally:
        server.shutdown()
        server.server_close()


def test_429_without_retry_after_waits_until_ratelimit_reset() -> None:
    reset = int(time.time()) + 3  # epoch seconds, as DigitalOcean sends it
    with answering((429, {"ratelimit-reset": str(reset)})) as (url, seen):
        lines: list[str] = []
        c = Cloud(SECRET_TOKEN, url, pacing=Pacing.fast(0.05), on_progress=lines.append)
        assert c.request("GET", "account") == {"ok": True}
    assert len(seen) == 2 and seen[1] >= reset - 0.05, (seen, reset)
    (line,) = lines
    assert re.fullmatch(r"rate limited on GET /v2/account; retrying in [123]\.\ds", line), line


def test_remaining_requests_reads_ratelimit_remaining() -> None:
    answers = (
        (429, {"retry-after": "0"}),  # retried like any request, then read
        (200, {"ratelimit-remaining": "4321"}),
        (200, {}),
        (200, {"ratelimit-remaining": "soon"}),
    )
    with answering(*answers) as (url, seen):
        c = Cloud(SECRET_TOKEN, url, pacing=Pacing.fast(0.05))
        assert c.remaining_requests() == 4321
        assert c.remaining_requests() is None  # the API did not say
        assert c.remaining_requests() is None  # nor anything readable
    assert len(seen) == 4 and c.requests_made == 4


def test_remaining_requests_on_the_local_cloud(bake_cloud: LocalCloud) -> None:
    bake_cloud.faults.clear()
    remaining = client(bake_cloud).remaining_requests()
    # the local cloud sends DigitalOcean's headers: 5000 an hour, less what this token spent
    assert remaining is not None and 0 < remaining < 5000, remaining


def test_pending_event_is_retried_and_actions_wait(bake_cloud: LocalCloud) -> None:
    bake_cloud.faults.clear()
    c = client(bake_cloud)
    droplet = c.create_droplet(SPEC)
    try:
        # creation is still in progress: the API says "pending event" and the client waits
        bake_cloud.reset_log()
        action = c.droplet_action(droplet.id, "power_off")
        # Only this droplet's action POSTs: the create's own log line may land after reset_log.
        path = f"/v2/droplets/{droplet.id}/actions"
        posts = [r.status for r in bake_cloud.requests() if r.method == "POST" and r.path == path]
        assert posts[0] == 422 and posts[-1] == 201 and set(posts[:-1]) == {422}, posts
        assert c.wait_for_action(action.id, 10, "power-off").status == "completed"
        assert c.wait_for_droplet_off(droplet.id, 10).status == "off"
        bake_cloud.faults.error_action(droplet_id=droplet.id, action_type="power_on")
        action = c.droplet_action(droplet.id, "power_on")
        started = time.monotonic()
        with pytest.raises(ActionErrored, match=rf"^power-on failed: action {action.id} errored$"):
            c.wait_for_action(action.id, 60, "power-on")
        assert time.monotonic() - started < 5  # at once, not at the timeout
    finally:
        c.delete_droplet(droplet.id)
    c.delete_droplet(droplet.id)  # gone already is fine
    with pytest.raises(NotFound):
        c.get_droplet(droplet.id)


def test_wait_times_out(bake_cloud: LocalCloud) -> None:
    bake_cloud.faults.clear()
    bake_cloud.faults.stall(name="^stalled-")
    c = client(bake_cloud)
    droplet = c.create_droplet(DropletSpec("stalled-1", "nyc3", "s-1vcpu-1gb", "debian-12-x64"))
    try:
        with pytest.raises(
            WaitTimeout,
            match=rf"^timed out after 0\.5s waiting for droplet {droplet.id} to become active$",
        ):
            c.wait_for_droplet_active(droplet.id, 0.5)
    finally:
        c.delete_droplet(droplet.id)


def test_token_never_logged(bake_cloud: LocalCloud, caplog: pytest.LogCaptureFixture) -> None:
    bake_cloud.faults.clear()
    bake_cloud.faults.fail("GET", "/v2/sizes", status=401)
    with caplog.at_level(logging.DEBUG), pytest.raises(CloudError) as caught:
        client(bake_cloud).request("GET", "sizes")
    assert str(caught.value) == (
        "GET /v2/sizes: the API token was refused (401); check DIGITALOCEAN_TOKEN"
    )
    assert caplog.records and SECRET_TOKEN not in caplog.text


def test_polls_stay_steady_then_slow_down(bake_cloud: LocalCloud) -> None:
    """steady_polls looks poll_min apart, then the interval grows to poll_max."""
    bake_cloud.faults.clear()
    bake_cloud.faults.stall(name="^paced-")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 4))
        time.sleep(seconds)

    pacing = Pacing(poll_min=0.01, poll_max=0.03, growth=2, steady_polls=3)
    c = Cloud(SECRET_TOKEN, bake_cloud.endpoint, pacing=pacing, sleep=sleep)
    droplet = c.create_droplet(DropletSpec("paced-1", "nyc3", "s-1vcpu-1gb", "debian-12-x64"))
    try:
        with pytest.raises(WaitTimeout):
            c.wait_for_droplet_active(droplet.id, 0.5)
    finally:
        c.delete_droplet(droplet.id)
    assert slept[:7] == [0.01, 0.01, 0.01, 0.02, 0.03, 0.03, 0.03]
