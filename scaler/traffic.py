"""A bounded load generator: fixed requests per second at a loopback address, then it stops.

For proving a rollout keeps the site up: `run_load(Load(...))` sends GET requests at a fixed rate
(one new connection per request, as independent visitors do, so a connection the balancer closes
between requests is not counted against it) until the duration is over, a stop event is set, or
the total cap is reached, and records every request. It refuses any address outside 127.0.0.0/8
and any duration or rate above hard caps: it is a measuring tool, never a load test of something
real. Requests start on a schedule (start + i/rps) from a small pool of threads; a request still
waiting when the next one is due does not delay it, so a hung target shows as failures and
latency, not as a lower rate (latency counts from when a request was due).
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scaler.errors import ScalerError

MAX_SECONDS = 3600.0
MAX_RPS = 500.0
MAX_REQUESTS = 500_000
WORKERS = 32


class TrafficError(ScalerError):
    """A load that must not be sent (address, rate or duration out of bounds)."""


@dataclass(frozen=True)
class Load:
    """What to send: GET http://host:port/path at `rps` for at most `seconds`."""

    host: str
    rps: float
    seconds: float
    port: int = 80
    path: str = "/"
    timeout: float = 5.0
    max_requests: int = MAX_REQUESTS

    def __post_init__(self) -> None:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or ipaddress.ip_address(self.host).version != 4:
            raise TrafficError(
                f"refusing to send load to {self.host}: only 127.0.0.0/8 addresses are allowed"
            )
        if not 0 < self.rps <= MAX_RPS:
            raise TrafficError(f"rate {self.rps:g}/s is out of bounds (0 < rps <= {MAX_RPS:g})")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise TrafficError(
                f"duration {self.seconds:g}s is out of bounds (0 < seconds <= {MAX_SECONDS:g})"
            )
        if not 0 < self.max_requests <= MAX_REQUESTS:
            raise TrafficError(f"max_requests must be 1..{MAX_REQUESTS}")


@dataclass(frozen=True)
class Sample:
    """One request: when it started (epoch s), its status (None on error), its latency (s)."""

    start: float
    status: int | None
    latency: float
    error: str = ""

    @property
    def failed(self) -> bool:
        """A connection error, a timeout or a non-2xx answer."""
        return self.status is None or not 200 <= self.status < 300


@dataclass(frozen=True)
class Summary:
    """A run's figures."""

    requests: int
    failed: int
    p50: float | None
    p99: float | None
    longest_failure_run: int
    longest_failure_seconds: float
    wall: float

    def line(self) -> str:
        """The figures on one line (latencies in ms)."""
        p50 = "-" if self.p50 is None else f"{self.p50 * 1000:.1f}"
        p99 = "-" if self.p99 is None else f"{self.p99 * 1000:.1f}"
        return (
            f"requests {self.requests} failed {self.failed} p50 {p50}ms p99 {p99}ms "
            f"longest failure run {self.longest_failure_run} "
            f"({self.longest_failure_seconds:.1f}s) wall {self.wall:.1f}s"
        )


@dataclass(frozen=True)
class Run:
    """Every request of a run, in start order, and the run's wall time."""

    load: Load
    samples: tuple[Sample, ...]
    started: float
    wall: float

    def summary(self) -> Summary:
        """requests, failed, p50/p99 latency, the longest run of failures, wall time."""
        return summarise(self.samples, self.wall)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: Sequence[Sample], wall: float) -> Summary:
    """The figures of these samples (in start order); latency over all requests, failed too."""
    ordered = sorted(samples, key=lambda s: s.start)
    latencies = [s.latency for s in ordered]
    best_count, best_seconds = 0, 0.0
    count, first = 0, 0.0
    for sample in ordered:
        if sample.failed:
            if count == 0:
                first = sample.start
            count += 1
            # a run of failures lasts from its first start to its last answer
            seconds = sample.start + sample.latency - first
            if count > best_count or (count == best_count and seconds > best_seconds):
                best_count, best_seconds = count, seconds
        else:
            count = 0
    return Summary(
        requests=len(ordered),
        failed=sum(1 for s in ordered if s.failed),
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        longest_failure_run=best_count,
        longest_failure_seconds=best_seconds,
        wall=wall,
    )


def _one(load: Load, start: float, began: float) -> Sample:
    # latency counts from when the request was due: a wait for a free thread is the user's too
    conn = http.client.HTTPConnection(load.host, load.port, timeout=load.timeout)
    try:
        conn.request("GET", load.path, headers={"Connection": "close"})
        answer = conn.getresponse()
        answer.read()
        return Sample(start, answer.status, time.monotonic() - began)
    except (OSError, http.client.HTTPException) as err:
        return Sample(start, None, time.monotonic() - began, f"{type(err).__name__}: {err}")
    finally:
        conn.close()


def run_load(load: Load, stop: threading.Event | None = None) -> Run:
    """Send `load` until its duration ends, `stop` is set or its cap is reached; every request."""
    stop = stop or threading.Event()
    total = min(load.max_requests, max(1, math.floor(load.rps * load.seconds)))
    started_wall, started = time.time(), time.monotonic()
    futures = []
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="traffic") as pool:
        for index in range(total):
            due = started + index / load.rps
            # waits on the event, so a stop ends the run at once
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            if time.monotonic() - started > load.seconds:
                break
            futures.append(pool.submit(_one, load, started_wall + (due - started), due))
        samples = tuple(f.result() for f in futures)
    return Run(load, samples, started_wall, time.monotonic() - started)


class Background:
    """A load running in a thread while something else happens: `with Background(load) as bg:`
    ... then `bg.run` (stopped on leaving the block, also on an exception)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.stop = threading.Event()
        self._result: Run | None = None
        self._thread = threading.Thread(target=self._work, name="traffic", daemon=True)

    def _work(self) -> None:
        self._result = run_load(self.load, self.stop)

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join()

    @property
    def run(self) -> Run:
        """The finished run (only after the block)."""
        if self._result is None:
            raise TrafficError("the load is still running (or its thread failed)")
        return self._result


@dataclass(frozen=True)
class Capacity:
    """What a target served back to back: answered requests per second, and how many failed."""

    rps: float
    requests: int
    failed: int
    seconds: float


def measure_capacity(
    host: str, port: int = 80, path: str = "/", seconds: float = 10.0, concurrency: int = 8
) -> Capacity:
    """Requests per second `host` answers with a 2xx, `concurrency` clients back to back for
    `seconds` (bounded like a Load: loopback only, at most MAX_SECONDS and MAX_REQUESTS)."""
    load = Load(host, rps=1.0, seconds=seconds, port=port, path=path)  # checks the bounds
    if not 1 <= concurrency <= WORKERS:
        raise TrafficError(f"concurrency must be 1..{WORKERS}")
    started = time.monotonic()
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}

    def client() -> None:
        while time.monotonic() - started < load.seconds:
            with lock:
                if counts["ok"] + counts["failed"] >= load.max_requests:
                    return
            sample = _one(load, 0.0, time.monotonic())
            with lock:
                counts["failed" if sample.failed else "ok"] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    total = counts["ok"] + counts["failed"]
    return Capacity(counts["ok"] / wall, total, counts["failed"], wall)
