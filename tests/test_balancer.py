"""Local load balancers: HAProxy carrying real requests to real droplets, judged as DigitalOcean's.

The real-droplet tests share two droplets of the session's real cloud, each running a small
HTTP server (its own python3, inside its own namespaces) whose answer to /health is set from the
test: 200, 301, 500 or a hang.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RealDroplet, boot_real_droplet, need, wait_for
from test_local_api import Client, conforms, spec  # noqa: F401 (spec is a fixture)

from scaler.health import HealthCheck, check_droplet, ssh_prober, wait_healthy
from scaler.local import balancer
from scaler.local.api import LocalCloud
from scaler.local.balancer import Check, Rule, Spec, Target
from scaler.local.netclaim import claim_network

WEB = r"""
import http.server, socket, time
from pathlib import Path
NAME = socket.gethostname().encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/health":
            code = Path("/root/code").read_text().strip() if Path("/root/code").exists() else "200"
            if code == "hang":
                time.sleep(30)
                code = "200"
            self.send_response(int(code))
            if code.startswith("3"):
                self.send_header("Location", "http://example.invalid/")
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"health")
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "20")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"s")
                self.wfile.flush()
                time.sleep(0.3)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(NAME)))
            self.end_headers()
            self.wfile.write(NAME)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""

CHECK = {
    "protocol": "http",
    "port": 80,
    "path": "/health",
    "check_interval_seconds": 3,
    "response_timeout_seconds": 3,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}
RULE = {"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}


def need_haproxy() -> None:
    why = balancer.available()
    need(why is None, f"local load balancers cannot run here: {why}")


# --- fast: configuration, state file, view -----------------------------------------------------


def _spec(*targets: Target, check: Check | None = None) -> Spec:
    return Spec(
        lb_id="0b0e7c5e-0000-4000-8000-000000000001",
        address="127.250.4.1",
        rules=(Rule("http", 80, "http", 80), Rule("tcp", 3306, "tcp", 3306)),
        check=check or Check(path="/health", interval=3, timeout=3, healthy_threshold=2),
        targets=targets,
    )


def test_configuration_is_one_haproxy_accepts(tmp_path: Path) -> None:
    need(shutil.which("haproxy") is not None, "haproxy (Debian package haproxy) is not installed")
    spec_ = _spec(Target(100000001, "127.250.2.1"), Target(100000002, "127.250.2.2"))
    config = tmp_path / "haproxy.cfg"
    config.write_text(balancer.render_config(spec_, tmp_path))
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = config.read_text()
    assert "  source 127.250.4.1" in text
    assert "  bind 127.250.4.1:80" in text and "  bind 127.250.4.1:3306" in text
    assert "  http-check expect rstatus '^2[0-9][0-9]$'" in text
    assert "rise 2 fall 3" in text and "inter 3s" in text and "timeout check 3s" in text
    assert "  server d100000001 127.250.2.1:3306 track health/d100000001" in text


def test_state_file_keeps_counters_and_starts_new_targets_down() -> None:
    old, new = Target(100000001, "127.250.2.1"), Target(100000002, "127.250.2.2")
    running = (
        "1\n# be_id be_name ...\n"
        "5 health 1 d100000001 127.250.2.1 2 0 1 1 40 15 3 4 6 0 0 0 - 80 - 0 0 - - 0\n"
        "3 rule0-80 1 d100000001 127.250.2.1 2 0 1 1 40 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n"
    )
    lines = balancer.server_state(_spec(old, new), running).splitlines()
    assert lines[0] == "1"
    assert lines[2:] == [
        "5 health 1 d100000001 127.250.2.1 2 0 1 1 40 15 3 4 6 0 0 0 - 80 - 0 0 - - 0",
        "1 health 2 d100000002 127.250.2.2 0 0 1 1 0 1 0 0 6 0 0 0 - 80 - 0 0 - - 0",
    ]


def test_view_reads_the_health_backend() -> None:
    stat = (
        "# pxname,svname,status,check_status,check_code\n"
        "rule0-80,d1,UP,,\n"
        "health,d1,UP 1/2,L7OK,200\n"
        "health,d2,DOWN 1/2,L7STS,301\n"
        "health,BACKEND,UP,,\n"
    )
    assert balancer.parse_stat(stat) == [
        balancer.TargetHealth(1, True, "UP 1/2", "L7OK 200"),
        balancer.TargetHealth(2, False, "DOWN 1/2", "L7STS 301"),
    ]


def test_a_killed_clouds_haproxy_is_swept(tmp_path: Path) -> None:
    need_haproxy()
    with claim_network() as claim:
        folder = balancer.RUNTIME / str(claim.number) / "left-behind"
        folder.mkdir(parents=True)
        try:
            config = folder / "haproxy.cfg"
            spec_ = Spec("left-behind", f"127.{claim.number}.4.1", (), Check(), ())
            config.write_text(balancer.render_config(spec_, folder))
            subprocess.run(
                ["haproxy", "-D", "-f", str(config), "-p", str(folder / "haproxy.pid")],
                check=True,
                capture_output=True,
            )
            pid = int((folder / "haproxy.pid").read_text())
            assert balancer.leftovers(claim.number) == [pid]
            said: list[str] = []
            balancer.Balancers(claim.number, warn=said.append)
            assert said == [f"stopped haproxy {pid}, left by a local cloud that was killed"]
            assert balancer.leftovers(claim.number) == []
            assert not folder.exists()
        finally:
            balancer.sweep(claim.number)


# --- real droplets behind a real balancer ------------------------------------------------------


def _start_web(droplet: RealDroplet) -> None:
    script = WEB.replace("'", "'\"'\"'")
    done = droplet.ssh(
        f"printf '%s' '{script}' > /root/web.py && rm -f /root/code && "
        "systemd-run --unit scaler-test-web python3 /root/web.py"
    )
    assert done.returncode == 0, done.stderr
    listening = "ss -ltn | grep -q ':80 '"
    wait_for("the droplet's web server", lambda: droplet.ssh(listening).returncode == 0, 90)


def _set_health(droplet: RealDroplet, code: str) -> None:
    done = droplet.ssh(f"echo {code} > /root/code")
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def webs(
    real_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RealDroplet, RealDroplet]:
    need_haproxy()
    pair = tuple(
        boot_real_droplet(real_cloud, tmp_path_factory.mktemp(name), name, "debian-12-x64")
        for name in ("lb-web-1", "lb-web-2")
    )
    for droplet in pair:
        _start_web(droplet)
    return pair[0], pair[1]


@pytest.fixture
def lb(real_cloud: LocalCloud, webs: tuple[RealDroplet, RealDroplet]) -> Iterator[dict[str, Any]]:
    """A balancer in front of the first droplet; deleted (its HAProxy stopped) afterwards."""
    for droplet in webs:
        _set_health(droplet, "200")
    client = Client(real_cloud)
    body = {
        "name": "lb-test",
        "region": "nyc3",
        "forwarding_rules": [RULE],
        "health_check": CHECK,
        "droplet_ids": [webs[0].id],
    }
    created: dict[str, Any] = client.ok("POST", "/v2/load_balancers", body)["load_balancer"]
    created["created"] = time.monotonic()
    try:
        yield created
    finally:
        client.ok("DELETE", f"/v2/load_balancers/{created['id']}")
        assert balancer.leftovers(real_cloud.network) == []


def _health(cloud: LocalCloud, lb_id: str) -> dict[int, str]:
    answer = Client(cloud).ok(
        "GET",
        "/v2/monitoring/metrics/load_balancer/droplets_health_checks",
        lb_id=lb_id,
        start=int(time.time()) - 60,
        end=int(time.time()),
    )
    return {int(r["metric"]["droplet_id"]): r["values"][-1][1] for r in answer["data"]["result"]}


def _get(address: str, path: str = "/", timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _update(cloud: LocalCloud, lb: dict[str, Any], **changes: Any) -> None:
    body = {
        "name": lb["name"],
        "region": "nyc3",
        "forwarding_rules": [RULE],
        "health_check": CHECK,
        **changes,
    }
    Client(cloud).ok("PUT", f"/v2/load_balancers/{lb['id']}", body)


def test_a_new_target_is_down_until_healthy_threshold_checks_pass(
    real_cloud: LocalCloud, webs: tuple[RealDroplet, RealDroplet], lb: dict[str, Any]
) -> None:
    first = webs[0]
    assert _health(real_cloud, lb["id"]) == {first.id: "0"}
    status, _ = _get(lb["ip"])
    assert status == 503  # DOWN: no traffic, though the droplet answers 200 already
    wait_for("the first target UP", lambda: _health(real_cloud, lb["id"]) == {first.id: "1"})
    # two checks 3 s apart: never sooner than one interval after the balancer started
    assert time.monotonic() - lb["created"] >= 2.5
    assert _get(lb["ip"]) == (200, b"lb-web-1")


def test_traffic_spreads_over_healthy_targets_and_a_failing_one_is_taken_out(
    real_cloud: LocalCloud, webs: tuple[RealDroplet, RealDroplet], lb: dict[str, Any]
) -> None:
    first, second = webs
    wait_for("the first target UP", lambda: _health(real_cloud, lb["id"]) == {first.id: "1"})
    Client(real_cloud).ok(
        "POST", f"/v2/load_balancers/{lb['id']}/droplets", {"droplet_ids": [second.id]}
    )
    # the reload kept the first target's counters; the new one starts DOWN
    assert _health(real_cloud, lb["id"]) == {first.id: "1", second.id: "0"}
    wait_for("both UP", lambda: set(_health(real_cloud, lb["id"]).values()) == {"1"})
    seen = {_get(lb["ip"])[1] for _ in range(6)}
    assert seen == {b"lb-web-1", b"lb-web-2"}
    # a redirect fails DigitalOcean's check (only 2xx passes): out after unhealthy_threshold
    _set_health(second, "301")
    wait_for(
        "the redirecting target DOWN",
        lambda: _health(real_cloud, lb["id"]) == {first.id: "1", second.id: "0"},
        timeout=30,
    )
    assert {_get(lb["ip"])[1] for _ in range(6)} == {b"lb-web-1"}


def test_an_established_connection_survives_target_rule_and_check_changes(
    real_cloud: LocalCloud, webs: tuple[RealDroplet, RealDroplet], lb: dict[str, Any]
) -> None:
    first, second = webs
    wait_for("the first target UP", lambda: _health(real_cloud, lb["id"]) == {first.id: "1"})
    got: dict[str, Any] = {}

    def slow() -> None:
        try:
            got["answer"] = _get(lb["ip"], "/slow", timeout=30)
        except OSError as err:
            got["error"] = err

    reader = threading.Thread(target=slow)
    reader.start()
    try:
        time.sleep(1)  # the download is under way (it takes 6 s)
        _update(real_cloud, lb, droplet_ids=[first.id, second.id])
        _update(
            real_cloud,
            lb,
            droplet_ids=[first.id, second.id],
            health_check={**CHECK, "check_interval_seconds": 4},
        )
        Client(real_cloud).ok(
            "POST",
            f"/v2/load_balancers/{lb['id']}/forwarding_rules",
            {"forwarding_rules": [{**RULE, "entry_port": 8080}]},
        )
    finally:
        reader.join(timeout=40)
    assert got == {"answer": (200, b"s" * 20)}
    assert _health(real_cloud, lb["id"])[first.id] == "1"  # still in rotation after 3 reloads


def test_the_monitoring_answer_has_the_specs_shape(
    real_cloud: LocalCloud,
    lb: dict[str, Any],
    spec: dict[str, Any],  # noqa: F811
) -> None:
    client = Client(real_cloud)
    template = "/v2/monitoring/metrics/load_balancer/droplets_health_checks"
    now = int(time.time())
    resp = client("GET", template, lb_id=lb["id"], start=now - 60, end=now)
    assert resp.status_code == 200
    conforms(spec, "GET", template, resp)
    missing = client("GET", template, lb_id="no-such-lb", start=now - 60, end=now)
    assert missing.status_code == 404


def test_scaler_judges_each_answer_as_the_balancer_does(
    real_cloud: LocalCloud, webs: tuple[RealDroplet, RealDroplet], lb: dict[str, Any]
) -> None:
    first, second = webs
    Client(real_cloud).ok(
        "POST", f"/v2/load_balancers/{lb['id']}/droplets", {"droplet_ids": [second.id]}
    )
    wait_for("both UP", lambda: set(_health(real_cloud, lb["id"]).values()) == {"1"})
    assert real_cloud.balancers is not None
    check = HealthCheck(port=80, path="/health", response_timeout=3)

    def balancers_check() -> str:
        assert real_cloud.balancers is not None
        seen = real_cloud.balancers.view(lb["id"]) or []
        return next((t.check for t in seen if t.droplet_id == second.id and not t.healthy), "")

    assert check_droplet(second.private_ip, check).ok
    for code, haproxy_says, scaler_says in (
        ("301", "L7STS 301", "301, body 'health'"),
        ("404", "L7STS 404", "404, body 'health'"),
        ("500", "L7STS 500", "500, body 'health'"),
        ("hang", "L7TOUT", "no answer within 3s"),
    ):
        _set_health(second, code)
        wait_for(
            f"the balancer's check to see {code}",
            lambda says=haproxy_says: balancers_check() == says,
            40,
        )
        result = check_droplet(second.private_ip, check)
        url = f"http://{second.private_ip}:80/health"
        assert (result.ok, result.describe()) == (False, f"{url} -> {scaler_says}")
    assert check_droplet(first.private_ip, check).ok
    assert _health(real_cloud, lb["id"]) == {first.id: "1", second.id: "0"}


def test_a_droplet_reachable_only_over_the_private_network_is_healthy(
    webs: tuple[RealDroplet, RealDroplet],
) -> None:
    droplet = webs[0]
    done = droplet.ssh(
        "systemd-run --unit scaler-test-private python3 -m http.server 8081 "
        f"--bind {droplet.private_ip}"
    )
    assert done.returncode == 0, done.stderr
    try:
        check = HealthCheck(port=8081, path="/", interval=0.2, healthy_threshold=2)
        wait_for("the private server", lambda: check_droplet(droplet.private_ip, check).ok, 90)
        public = check_droplet(droplet.public_ip, check)
        assert (public.ok, public.error) == (False, "connection refused")
        report = wait_healthy(
            [droplet.public_ip], check, timeout=10, private={droplet.public_ip: droplet.private_ip}
        )
        assert report.ok
    finally:
        droplet.ssh("systemctl stop scaler-test-private")


def test_the_probe_through_ssh_runs_the_check_on_the_droplet(
    webs: tuple[RealDroplet, RealDroplet],
) -> None:
    droplet = webs[1]
    via = ssh_prober("root", droplet.key)
    check = HealthCheck(port=80, path="/health", response_timeout=3)
    _set_health(droplet, "200")
    seen = via(droplet.public_ip, droplet.private_ip, check)
    assert seen.ok and seen.status == 200
    _set_health(droplet, "301")
    seen = via(droplet.public_ip, droplet.private_ip, check)
    assert (seen.ok, seen.describe()) == (
        False,
        f"http://{droplet.private_ip}:80/health (through SSH to {droplet.public_ip}) -> 301, "
        "body 'health'",
    )
    closed = via(droplet.public_ip, droplet.private_ip, HealthCheck(port=81, protocol="tcp"))
    assert (closed.ok, closed.error) == (False, "connection refused")
