"""Shared fixtures.

Tests that need ../shared/data skip without it, except in CI (CI=true) where that is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from scaler.local.api import LocalCloud

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def need(condition: bool, reason: str) -> None:
    """Skip the calling test when `condition` is false; in CI (CI=true) fail instead of skipping."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (skips are errors in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real inputs in ../shared/data."""
    need(SHARED_DATA.is_dir(), f"{SHARED_DATA} is absent (real inputs live beside the checkout)")
    return SHARED_DATA


def shared_files(sub: str, pattern: str = "*") -> list[Path]:
    """Files under ../shared/data/<sub> for parametrizing; empty when the folder is absent."""
    folder = SHARED_DATA / sub
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []


def xdist_worker_index() -> int:
    """This pytest-xdist worker's number (gw3 -> 3), 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def free_network() -> int:
    """A network number kept for a cloud that a subprocess starts (`scaler local up --network N`).

    Clouds in this process claim their own number (LocalCloud with no network).
    """
    from scaler.local.netclaim import reserve_network

    return reserve_network()


# The local provider polls at the real provider's cadence (10 s before the first look); tests run
# it 50 times faster, as their local clouds' delays are short too. Set before any provider starts.
PROVIDER_POLL_SCALE = "0.02"


@pytest.fixture(scope="session", autouse=True)
def _provider_poll_scale() -> Iterator[None]:
    """SCALER_LOCAL_PROVIDER_POLL for every Terraform run in the session (unless already set)."""
    saved = os.environ.get("SCALER_LOCAL_PROVIDER_POLL")
    os.environ.setdefault("SCALER_LOCAL_PROVIDER_POLL", PROVIDER_POLL_SCALE)
    yield
    if saved is None:
        os.environ.pop("SCALER_LOCAL_PROVIDER_POLL", None)


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """One local cloud per test session and worker: free port, free network, 0.2 s delays."""
    from scaler.local.api import Delays, LocalCloud

    cloud = LocalCloud(
        tmp_path_factory.mktemp("local-cloud"),
        port=0,
        delays=Delays.uniform(0.2),
    )
    cloud.start()
    yield cloud
    cloud.stop()


@pytest.fixture
def fresh_cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    """A local cloud of its own for one test: empty, free network, 0.1 s delays."""
    from scaler.local.api import Delays, LocalCloud

    cloud = LocalCloud(
        tmp_path / "local-cloud",
        port=0,
        delays=Delays.uniform(0.1),
    )
    cloud.start()
    yield cloud
    cloud.stop()


def make_snapshots(cloud: LocalCloud, names: list[str]) -> list[int]:
    """Snapshots with these names (in order), taken of one droplet through the real API."""
    from scaler.cloud import Cloud, DropletSpec, Pacing

    client = Cloud("local-token", cloud.endpoint, pacing=Pacing.fast())
    droplet = client.create_droplet(
        DropletSpec(name="snapper", region="nyc3", size="s-1vcpu-1gb", image="debian-12-x64")
    )
    client.wait_for_droplet_active(droplet.id, 30)
    ids = []
    for name in names:
        action = client.droplet_action(droplet.id, "snapshot", name=name)
        client.wait_for_action(action.id, 30, f"snapshot {name}")
        ids.append(next(i.id for i in client.droplet_snapshots(droplet.id) if i.name == name))
    client.delete_droplet(droplet.id)
    return ids


def cloud_api(cloud: LocalCloud, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the local cloud's /v2 API (`path` relative to it), as the cloud's own token."""
    request = urllib.request.Request(
        cloud.endpoint + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@contextlib.contextmanager
def module_cloud(
    tmp_path_factory: pytest.TempPathFactory, name: str, **options: Any
) -> Iterator[LocalCloud]:
    """A test module's own local cloud: a free network number, 0.05 s delays, no SSH."""
    from scaler.local.api import Delays, LocalCloud

    with LocalCloud(
        tmp_path_factory.mktemp(name),
        delays=Delays.uniform(0.05),
        ssh=False,
        **options,
    ) as cloud:
        yield cloud


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """check()'s first truthy value, polled every 0.05 s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_loopback(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded HTTP server on a free 127.0.0.1 port, serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_loopback(server: ThreadingHTTPServer) -> None:
    """Stop a serve_loopback server and free its port."""
    server.shutdown()
    server.server_close()
