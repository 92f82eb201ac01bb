"""scaler.health: the load balancer's check, read from state and run over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import ROOT, QuietHandler, serve_loopback, stop_loopback

from scaler.health import (
    HealthCheck,
    HealthError,
    ProbeResult,
    check_droplet,
    count_healthy,
    healthcheck_from_state,
    parse_port_map,
    port_map_from,
    port_map_from_env,
    probe,
    wait_healthy,
)


class Site:
    """A web server on 127.0.0.1 whose answers a test scripts: a list of statuses, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.paths: list[str] = []
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                site.paths.append(self.path)
                status = site.statuses.pop(0) if site.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = serve_loopback(Handler)
        self.port = self.server.server_address[1]

    def close(self) -> None:
        stop_loopback(self.server)


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.close()


def check(**changes: object) -> HealthCheck:
    base = HealthCheck(interval=0.01, response_timeout=1.0, healthy_threshold=2)
    return HealthCheck(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_read_from_the_example_state() -> None:
    state = json.loads((ROOT / "examples" / "terraform.tfstate").read_text())
    assert healthcheck_from_state(state) == HealthCheck(
        protocol="http",
        port=80,
        path="/",
        interval=10,
        response_timeout=5,
        healthy_threshold=5,
        unhealthy_threshold=3,
    )
    assert healthcheck_from_state(state, "digitalocean_loadbalancer.www").healthy_threshold == 5
    with pytest.raises(HealthError) as err:
        healthcheck_from_state(state, "digitalocean_loadbalancer.nope")
    assert str(err.value) == (
        "need load balancer digitalocean_loadbalancer.nope in the Terraform state for its "
        "health check (have: digitalocean_loadbalancer.www)"
    )


def test_no_load_balancer() -> None:
    with pytest.raises(HealthError) as err:
        healthcheck_from_state({"resources": []})
    assert str(err.value) == (
        "need exactly one load balancer in the Terraform state for its health check (have: none)"
    )


def test_scaled_interval_caps_the_timeout() -> None:
    scaled = HealthCheck().scaled(0.5)
    assert (scaled.interval, scaled.response_timeout, scaled.healthy_threshold) == (0.5, 0.5, 3)
    assert HealthCheck().scaled(None) == HealthCheck()


def test_port_maps() -> None:
    assert parse_port_map("80=8080, 443=8443") == {80: 8080, 443: 8443}
    assert parse_port_map("18080") == {80: 18080}
    assert port_map_from_env({"SCALER_LOCAL_WEB_PORT": "8080"}) == {80: 8080}
    assert port_map_from_env({"SCALER_PORT_MAP": "80=81", "SCALER_LOCAL_WEB_PORT": "8080"}) == {
        80: 81
    }
    assert port_map_from_env({}) == {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCALER_LOCAL_WEB_PORT", "8080")
        patch.delenv("SCALER_PORT_MAP", raising=False)
        assert port_map_from("80=9090") == {80: 9090}  # the option wins over the environment
        assert port_map_from(None) == {80: 8080}
    with pytest.raises(HealthError) as err:
        parse_port_map("80:8080")
    assert str(err.value) == (
        "bad port map '80:8080'; give PORT=LOCALPORT pairs like 80=8080,443=8443"
    )


def test_probe_uses_path_and_port_map(site: Site) -> None:
    assert probe("127.0.0.1", check(path="/wp-login.php"), {80: site.port})
    assert site.paths == ["/wp-login.php"]
    site.statuses = [404, 500, 302, 204]
    assert [probe("127.0.0.1", check(), {80: site.port}) for _ in range(4)] == [
        False,
        False,
        False,  # only 2xx passes DigitalOcean's check: a redirect fails it
        True,
    ]
    assert probe("127.0.0.1", check(protocol="tcp", port=site.port))
    # Without the map the check dials port 80, where nothing listens.
    assert not probe("127.0.0.1", check(protocol="tcp", port=1))


def test_healthy_after_threshold_passes_in_a_row(site: Site) -> None:
    site.statuses = [200, 404, 200]  # the 404 resets the count
    report = wait_healthy(["127.0.0.1"], check(), port_map={80: site.port}, timeout=5)
    assert report.ok and report.healthy == ("127.0.0.1",)
    assert report.rounds == 4


def test_unhealthy_after_threshold_failures_past_the_grace(site: Site) -> None:
    site.statuses = [404] * 50
    report = wait_healthy(["127.0.0.1"], check(), port_map={80: site.port}, timeout=5)
    assert (report.ok, report.unhealthy, report.rounds) == (False, ("127.0.0.1",), 3)


def test_timeout_leaves_droplets_pending(site: Site) -> None:
    site.statuses = [404] * 1000
    report = wait_healthy(
        ["127.0.0.1"], check(interval=0.05), port_map={80: site.port}, timeout=0.3, grace=60
    )
    assert (report.ok, report.unhealthy, report.pending) == (False, (), ("127.0.0.1",))


def test_count_healthy(site: Site) -> None:
    site.statuses = [200, 503]
    assert count_healthy(["127.0.0.1", "127.0.0.1"], check(), {80: site.port}) == 1


class Answers:
    """A web server on 127.0.0.1 answering every request with one status and body (or hanging)."""

    def __init__(self, status: int, body: bytes = b"", hang: float = 0.0) -> None:
        import threading

        self.release = threading.Event()
        answers = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if hang:
                    answers.release.wait(hang)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "https://example.invalid/")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = serve_loopback(Handler)
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.release.set()
        stop_loopback(self.server)


@pytest.mark.parametrize(
    ("status", "body", "passes", "shown"),
    [
        (200, b"ok", True, ""),
        (204, b"", True, ""),
        (301, b"Moved", False, "301, body 'Moved'"),
        (404, b"<h1>Not Found</h1>", False, "404, body '<h1>Not Found</h1>'"),
        (
            500,
            b"Error establishing a database connection",
            False,
            "500, body 'Error establishing a database connection'",
        ),
    ],
)
def test_only_2xx_passes_as_on_digitalocean(
    status: int, body: bytes, passes: bool, shown: str
) -> None:
    site = Answers(status, body)
    try:
        result = check_droplet("127.0.0.1", check(path="/health"), {80: site.port})
    finally:
        site.close()
    assert result.ok is passes
    if not passes:
        assert result.describe() == f"http://127.0.0.1:{site.port}/health -> {shown}"


def test_a_long_body_is_cut_in_the_failure() -> None:
    site = Answers(500, b"x" * 500)
    try:
        result = check_droplet("127.0.0.1", check(), {80: site.port})
    finally:
        site.close()
    assert result.describe() == f"http://127.0.0.1:{site.port}/ -> 500, body '{'x' * 80}...'"


def test_no_answer_within_the_response_timeout_fails() -> None:
    site = Answers(200, b"late", hang=10)
    try:
        result = check_droplet("127.0.0.1", check(response_timeout=0.3), {80: site.port})
    finally:
        site.close()
    assert not result.ok
    assert result.describe() == f"http://127.0.0.1:{site.port}/ -> no answer within 0.3s"


def test_the_probe_dials_the_private_address() -> None:
    # The public address (127.0.0.2) has nothing listening; the private one answers 200.
    site = Answers(200, b"ok")
    try:
        port = {80: site.port}
        assert not probe("127.0.0.2", check(), port)
        report = wait_healthy(
            ["127.0.0.2"], check(), port_map=port, timeout=5, private={"127.0.0.2": "127.0.0.1"}
        )
    finally:
        site.close()
    assert report.ok and report.healthy == ("127.0.0.2",)


def test_a_failure_names_the_droplet_the_url_and_what_came_back() -> None:
    site = Answers(301, b"Moved Permanently")
    try:
        report = wait_healthy(["127.0.0.1"], check(), port_map={80: site.port}, timeout=5)
    finally:
        site.close()
    assert report.unhealthy == ("127.0.0.1",)
    assert report.why("127.0.0.1", "digitalocean_droplet.wp_node[0]") == (
        f"digitalocean_droplet.wp_node[0] (127.0.0.1): http://127.0.0.1:{site.port}/ -> 301, "
        "body 'Moved Permanently'"
    )


def test_the_balancers_view_decides_for_a_droplet_only_it_can_reach() -> None:
    # A firewall admits only the balancer: the own probe is refused, the balancer has it UP.
    views = iter([{"127.0.0.2": False}, {"127.0.0.2": True}])
    report = wait_healthy(
        ["127.0.0.2"], check(), port_map={80: 9}, timeout=5, balancer=lambda: next(views)
    )
    assert report.ok and report.by_balancer and report.rounds == 2


def test_with_the_balancers_view_a_bad_answer_still_fails_fast() -> None:
    site = Answers(301, b"Moved")
    try:
        report = wait_healthy(
            ["127.0.0.1"],
            check(unhealthy_threshold=2),
            port_map={80: site.port},
            timeout=5,
            balancer=lambda: {"127.0.0.1": False},
        )
    finally:
        site.close()
    assert (report.unhealthy, report.rounds) == (("127.0.0.1",), 2)


def test_a_balancer_that_keeps_a_droplet_down_leaves_it_pending() -> None:
    report = wait_healthy(
        ["127.0.0.2"],
        check(interval=0.05),
        port_map={80: 9},
        timeout=0.3,
        balancer=lambda: {"127.0.0.2": False},
    )
    assert (report.unhealthy, report.pending) == ((), ("127.0.0.2",))
    assert report.why("127.0.0.2").startswith(
        "127.0.0.2: the load balancer has it DOWN; own probe: http://127.0.0.2:9/ -> "
    )


def test_count_healthy_reads_the_balancers_view() -> None:
    view = {"127.0.0.1": True, "127.0.0.2": False}
    assert (
        count_healthy(["127.0.0.1", "127.0.0.2", "127.0.0.3"], check(), balancer=lambda: view) == 1
    )


def test_with_the_balancers_view_a_refused_droplet_fails_when_the_path_is_open() -> None:
    # A droplet the balancer has UP answers this machine: the network path is open, so a new
    # droplet that refuses the connection has no web server, not a firewall in front of it.
    site = Answers(200, b"ok")
    try:
        report = wait_healthy(
            ["127.0.0.2"],
            check(unhealthy_threshold=2),
            port_map={80: site.port},
            timeout=5,
            balancer=lambda: {"127.0.0.1": True, "127.0.0.2": False},
        )
    finally:
        site.close()
    assert (report.unhealthy, report.rounds) == (("127.0.0.2",), 2)
    assert (
        report.why("127.0.0.2") == f"127.0.0.2: http://127.0.0.2:{site.port}/ -> connection refused"
    )


def test_a_droplet_this_machine_cannot_reach_is_checked_through_via() -> None:
    asked: list[tuple[str, str]] = []

    def via(address: str, dial: str, check: HealthCheck) -> ProbeResult:
        asked.append((address, dial))
        return ProbeResult(True, f"http://{dial}:80/ (through SSH to {address})")

    # nothing listens on 127.0.0.3:9 here: refused, so the check goes through `via`
    report = wait_healthy(
        ["127.0.0.2"],
        check(),
        port_map={80: 9},
        timeout=5,
        private={"127.0.0.2": "127.0.0.3"},
        via=via,
    )
    assert report.ok and asked == [("127.0.0.2", "127.0.0.3")] * 2
    assert count_healthy(["127.0.0.2"], check(), {80: 9}, via=via) == 1
