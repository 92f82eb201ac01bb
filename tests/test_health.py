"""scaler.health: the load balancer's check, read from state and run over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import ROOT, QuietHandler, serve_loopback, stop_loopback

from scaler.health import (
    HealthCheck,
    HealthError,
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
