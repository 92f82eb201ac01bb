"""Shared fixtures.

Tests that need ../shared/data skip without it, except in CI (CI=true) where that is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@pytest.fixture
def readable_checkout() -> Iterator[Path]:
    """A copy of the package and the inventory script that every user can read, removed afterwards.

    For tests that run code as user nobody: the checkout's own folders may be closed to other
    users, and so is pytest's base temp; /tmp is open to all.
    """
    folder = Path(tempfile.mkdtemp(prefix="scaler-readable-", dir="/tmp"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("scaler", "inventory"):
            shutil.copytree(ROOT / part, folder / part, ignore=ignore, symlinks=True)
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


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


# DigitalOcean's API spec: every local cloud of the session checks its requests against it.
API_SPEC = SHARED_DATA / "do-openapi" / "DigitalOcean-public.v2.subset.yaml"


@pytest.fixture(scope="session", autouse=True)
def _requests_checked_by_the_spec() -> Iterator[None]:
    """SCALER_LOCAL_SPEC for every local cloud of the session (in process or not), when the spec
    is in ../shared/data: a request DigitalOcean would refuse is refused in every test."""
    saved = os.environ.get("SCALER_LOCAL_SPEC")
    if saved is None and API_SPEC.is_file():
        os.environ["SCALER_LOCAL_SPEC"] = str(API_SPEC)
    yield
    if saved is None:
        os.environ.pop("SCALER_LOCAL_SPEC", None)


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


# --- real droplets --------------------------------------------------------------------------------
# Tests that provision run on real droplets (Linux hosts of their own in namespaces). Their modules
# run in two groups under `-n 2 --dist loadgroup`, each group on one worker with that worker's own
# local cloud; the two clouds claim different network numbers (netclaim), so they run side by side
# as two test runs on one machine do. "real" holds every user of the session's WordPress bake, so
# that snapshot is baked once; "real-2" holds long modules that need no such snapshot (balanced by
# the figures of `pytest --durations`). Groups go by module: xdist's own `xdist_group` marker no
# longer reaches its scheduler under pytest 9.2 (it renames the node id, which pytest now derives
# from its own structured id), so pytest_xdist_make_scheduler below groups by the test's file.

REAL_FIXTURES = {"real_cloud", "real_droplet", "baked_wordpress"}
REAL_GROUPS = {
    **dict.fromkeys(
        (
            "test_bake.py",
            "test_bake_packer.py",
            "test_cloud.py",
            "test_local_ansible.py",
            "test_local_machines.py",
            "test_local_packer.py",
            "test_lost_answers.py",
            "test_provision.py",
            "test_rebake_local.py",
            "test_role.py",
            "test_secrets.py",
            "test_traffic.py",
            "test_wordpress_db.py",
        ),
        "real",
    ),
    **dict.fromkeys(
        (
            "test_bake_faults.py",
            "test_balancer.py",
            "test_cleanup.py",
            "test_rollout_drain.py",
            "test_stack_e2e.py",
            "test_tutorial_local.py",
        ),
        "real-2",
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every module with a test that uses a real droplet is in REAL_GROUPS (else a usage error)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if not REAL_FIXTURES & used:
            continue
        group = REAL_GROUPS.get(item.path.name)
        if group is None or ("baked_wordpress" in used and group != "real"):
            raise pytest.UsageError(
                f"{item.nodeid} uses real droplets: put {item.path.name} in REAL_GROUPS "
                'in tests/conftest.py ("real" if it uses baked_wordpress)'
            )
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under --dist loadgroup: xdist's scope scheduling with a scope per REAL_GROUPS group."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RealGroups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            return REAL_GROUPS.get(module, nodeid)

    return RealGroups(config, log)


def need_real_droplets() -> None:
    """Skip (fail in CI) unless this machine can run real droplets."""
    from scaler.local.droplets import unavailable

    why = unavailable()
    need(why is None, f"real droplets cannot run here: {why}")


@pytest.fixture(scope="session")
def real_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """This worker's local cloud with real droplets: 0.2 s delays, no rate limit.

    Torn down at the end, and checked: no namespace or veth of its network is left.
    """
    need_real_droplets()
    from scaler.local import balancer, netns
    from scaler.local.api import Delays, LocalCloud

    cloud = LocalCloud(
        tmp_path_factory.mktemp("real-cloud"),
        delays=Delays.uniform(0.2),
        rate_limit_per_minute=100_000,
        droplets="real",
    )
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()
    assert netns.leftovers(cloud.network) == []
    assert balancer.leftovers(cloud.network) == []


@dataclass(frozen=True)
class RealDroplet:
    """A running real droplet reachable over SSH as root with `key`."""

    id: int
    public_ip: str
    private_ip: str
    key: Path

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `command` on the droplet over real SSH as root."""
        from scaler.provision import SshConnection

        argv = SshConnection(self.public_ip, "root", self.key).ssh_argv(command)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def boot_real_droplet(
    cloud: LocalCloud, key_dir: Path, name: str, image: str | int, region: str = "nyc3"
) -> RealDroplet:
    """Create a droplet with a fresh key and wait until its first boot is done and SSH answers."""
    from scaler.bake import ed25519_key_pair, wait_for_ssh
    from scaler.cloud import Cloud, DropletSpec, Pacing
    from scaler.provision import SshConnection, wait_for_first_boot

    private, public = ed25519_key_pair(key_dir)
    client = Cloud("test", cloud.endpoint, pacing=Pacing.fast(0.05))
    key = client.create_key(name, public)
    droplet = client.create_droplet(
        DropletSpec(name=name, region=region, size="s-1vcpu-1gb", image=image, ssh_keys=(key.id,))
    )
    droplet = client.wait_for_droplet_active(droplet.id, 60)
    assert droplet.public_ip and droplet.private_ip
    wait_for_ssh(droplet.public_ip, 22, 60)
    wait_for_first_boot(SshConnection(droplet.public_ip, "root", private), 120)
    return RealDroplet(droplet.id, droplet.public_ip, droplet.private_ip, private)


@pytest.fixture(scope="session")
def real_droplet(real_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> RealDroplet:
    """One running droplet of the base image (debian-12-x64), for tests that only run plays."""
    return boot_real_droplet(
        real_cloud, tmp_path_factory.mktemp("droplet-key"), "shared", "debian-12-x64"
    )


BAKE_SECRET_TOKEN = "dop_v1_f00dfeedc0ffee5ecre7tokenvalue0123456789abcdef0123456789abcd"


@dataclass(frozen=True)
class BakedWordPress:
    """The session's one WordPress bake: the tutorial's files, `scaler bake` as a user runs it."""

    cloud: LocalCloud
    work: Path
    home: Path
    code: int
    out: str
    err: str

    @property
    def result(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.out)
        return value

    @property
    def image_id(self) -> int:
        return int(self.result["id"])

    @property
    def region(self) -> str:
        """Where the snapshot is (the tutorial template's region)."""
        return str(self.result["regions"][0])


@pytest.fixture(scope="session")
def baked_wordpress(
    real_cloud: LocalCloud, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> BakedWordPress:
    """`scaler bake --packer-template wp-node.json --var-file variables.json` in the tutorial's
    layout (the files as given: debian-9-x64, no DB password, no WordPress source), once."""
    import shutil

    base = tmp_path_factory.mktemp("tutorial-bake")
    work = base / "tutorial"
    (work / "config").mkdir(parents=True)
    for name in ("wp-node.json", "variables.json"):
        shutil.copy(shared_data / "packer" / name, work / name)
    shutil.copy(ROOT / "packer-build.yml", work)
    shutil.copy(ROOT / "config" / "cloud-config.yaml", work / "config")
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "TF_"))}
    env.update(
        DIGITALOCEAN_API_URL=real_cloud.url,
        DIGITALOCEAN_TOKEN=BAKE_SECRET_TOKEN,
        HOME=str(home),
        PYTHONPATH=str(ROOT),
    )
    scaler = Path(sys.executable).parent / "scaler"
    args = ["--packer-template", "wp-node.json", "--var-file", "variables.json"]
    args += ["--state", str(ROOT / "examples" / "terraform.tfstate"), "--json"]
    done = subprocess.run(
        [str(scaler), "bake", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return BakedWordPress(real_cloud, work, home, done.returncode, done.stdout, done.stderr)
