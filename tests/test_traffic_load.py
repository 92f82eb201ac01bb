"""The bounded load generator (scaler.traffic) against a real local http.server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from conftest import QuietHandler, serve_loopback, stop_loopback

from scaler.traffic import (
    MAX_REQUESTS,
    Background,
    Load,
    Sample,
    TrafficError,
    measure_capacity,
    run_load,
    summarise,
)


class Site(QuietHandler):
    """200 on /, 503 on /down, a slow 200 on /slow, and a dropped connection on /drop."""

    def do_GET(self) -> None:
        if self.path == "/drop":
            self.connection.close()
            return
        if self.path == "/slow":
            time.sleep(0.3)
        status = 503 if self.path == "/down" else 200
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[ThreadingHTTPServer]:
    server = serve_loopback(Site)
    yield server
    stop_loopback(server)


def _port(server: ThreadingHTTPServer) -> int:
    return int(server.server_address[1])


def test_a_fixed_rate_for_a_duration_then_it_stops(site: ThreadingHTTPServer) -> None:
    run = run_load(Load("127.0.0.1", rps=40, seconds=1.0, port=_port(site)))
    summary = run.summary()
    assert summary.requests == 40
    assert summary.failed == 0
    assert summary.longest_failure_run == 0
    assert all(s.status == 200 for s in run.samples)
    # the schedule: request i starts i/40 s after the first
    starts = [s.start - run.samples[0].start for s in run.samples]
    assert starts[-1] == pytest.approx(39 / 40, abs=0.2)
    assert summary.p50 is not None and summary.p99 is not None
    assert 0 < summary.p50 <= summary.p99 < 1.0
    assert 0.9 < summary.wall < 5


def test_non_2xx_and_dropped_connections_count_as_failed(site: ThreadingHTTPServer) -> None:
    down = run_load(Load("127.0.0.1", rps=20, seconds=0.5, port=_port(site), path="/down"))
    assert {s.status for s in down.samples} == {503}
    assert down.summary().failed == down.summary().requests == 10
    assert down.summary().longest_failure_run == 10
    dropped = run_load(Load("127.0.0.1", rps=20, seconds=0.25, port=_port(site), path="/drop"))
    assert dropped.summary().failed == 5
    assert all(s.status is None and s.error for s in dropped.samples)


def test_a_refused_port_fails_every_request(site: ThreadingHTTPServer) -> None:
    port = _port(site)
    stop_loopback(site)  # nothing listens there any more (the fixture stops it again: harmless)
    run = run_load(Load("127.0.0.1", rps=20, seconds=0.25, port=port, timeout=1))
    assert run.summary().failed == 5
    assert all("ConnectionRefusedError" in s.error for s in run.samples)


def test_a_stop_event_ends_the_run_early(site: ThreadingHTTPServer) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    run = run_load(Load("127.0.0.1", rps=20, seconds=60, port=_port(site)), stop)
    assert time.monotonic() - began < 5
    assert 5 <= run.summary().requests <= 15


def test_background_runs_beside_work_and_stops_on_leaving(site: ThreadingHTTPServer) -> None:
    with Background(Load("127.0.0.1", rps=20, seconds=60, port=_port(site), path="/slow")) as bg:
        time.sleep(0.5)
    summary = bg.run.summary()
    assert summary.failed == 0 and summary.requests >= 5
    # latency counts the slow answer (0.3 s)
    assert summary.p50 is not None and summary.p50 >= 0.3


def test_the_total_cap_stops_it(site: ThreadingHTTPServer) -> None:
    run = run_load(Load("127.0.0.1", rps=100, seconds=60, port=_port(site), max_requests=7))
    assert run.summary().requests == 7


@pytest.mark.parametrize(
    ("host", "options", "message"),
    [
        (
            "10.0.0.1",
            {},
            "refusing to send load to 10.0.0.1: only 127.0.0.0/8 addresses are allowed",
        ),
        (
            "example.com",
            {},
            "refusing to send load to example.com: only 127.0.0.0/8 addresses are allowed",
        ),
        ("::1", {}, "refusing to send load to ::1: only 127.0.0.0/8 addresses are allowed"),
        ("127.0.0.1", {"rps": 501}, "rate 501/s is out of bounds (0 < rps <= 500)"),
        ("127.0.0.1", {"rps": 0}, "rate 0/s is out of bounds (0 < rps <= 500)"),
        (
            "127.0.0.1",
            {"seconds": 3601},
            "duration 3601s is out of bounds (0 < seconds <= 3600)",
        ),
        ("127.0.0.1", {"max_requests": MAX_REQUESTS + 1}, "max_requests must be 1..500000"),
    ],
)
def test_out_of_bounds_loads_are_refused(
    host: str, options: dict[str, float], message: str
) -> None:
    values = {"rps": 10.0, "seconds": 1.0, **options}
    with pytest.raises(TrafficError) as err:
        Load(host, **values)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_the_longest_failure_run_in_count_and_seconds() -> None:
    ok, bad = 200, 502
    statuses = [ok, bad, bad, ok, bad, None, bad, bad, ok, bad]
    samples = [Sample(100.0 + i * 0.5, s, 0.1) for i, s in enumerate(statuses)]
    summary = summarise(samples, wall=5.0)
    assert summary.requests == 10
    assert summary.failed == 7
    assert summary.longest_failure_run == 4
    # from the run's first start (102.0) to its last answer (103.5 + 0.1)
    assert summary.longest_failure_seconds == pytest.approx(1.6)
    assert summary.p50 == pytest.approx(0.1)
    assert "failed 7" in summary.line() and "longest failure run 4 (1.6s)" in summary.line()


def test_capacity_is_what_the_target_answers_back_to_back(site: ThreadingHTTPServer) -> None:
    capacity = measure_capacity("127.0.0.1", _port(site), seconds=0.5, concurrency=2)
    assert capacity.failed == 0 and capacity.requests > 10
    assert capacity.rps == pytest.approx(capacity.requests / capacity.seconds)
    slow = measure_capacity("127.0.0.1", _port(site), "/slow", seconds=1.0, concurrency=2)
    # two clients, 0.3 s an answer: about 6 a second, never more
    assert 2 <= slow.rps <= 7
    with pytest.raises(TrafficError):
        measure_capacity("192.168.1.1")
