"""LocalCloud: the local cloud's lifecycle, its HTTP entry point, authentication and rate limits."""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic
from scaler.local.api.base import (
    DEFAULT_MESSAGES,
    HOURLY_LIMIT,
    JSON,
    LOG_LIMIT,
    ApiError,
    Delays,
    LocalCloudError,
    RequestRecord,
    env_for,
    not_found,
)
from scaler.local.api.control import control
from scaler.local.api.faults import Faults
from scaler.local.api.httpd import HTTPHandler, Server, bearer, parse_body, read_body, respond
from scaler.local.api.models.clock import advance
from scaler.local.api.models.lbs import balancer_specs
from scaler.local.api.models.network import droplet_policies
from scaler.local.api.models.state import CloudState, empty_state
from scaler.local.api.routes import ROUTES
from scaler.local.api.routing import Request, Route, match
from scaler.local.api.validation import load_validator
from scaler.local.balancer import Balancers
from scaler.local.balancer import available as balancers_unavailable
from scaler.local.balancer import sweep as balancer_sweep
from scaler.local.droplets import DropletKind, RealMachines
from scaler.local.droplets import unavailable as real_droplets_unavailable
from scaler.local.machines import MachineError, Machines
from scaler.local.netclaim import NetworkClaim, claim_network


class LocalCloud(CloudState):
    """A DigitalOcean API v2 stand-in on 127.0.0.1, its state in state_dir (see the module doc)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 0,
        network: int | None = None,
        delays: Delays | None = None,
        rate_limit_per_minute: int = 250,
        web_port: int | None = None,
        verbose: bool = False,
        droplets: DropletKind = "directory",
        spec: Path | None = None,
    ) -> None:
        if network is not None and not 1 <= network <= 254:
            raise LocalCloudError(f"network must be 1-254 (droplets get 127.N.1.k), got {network}")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # No number given: the one this state folder used last, if free, else any free one.
        self._claim: NetworkClaim | None = claim_network(network, prefer=self._last_network())
        self.network = self._claim.number
        write_atomic(self.state_dir / "network", f"{self.network}\n")
        self.rate_limit_per_minute = rate_limit_per_minute
        self.verbose = verbose
        self.faults = Faults()
        # Requests are checked against DigitalOcean's OpenAPI spec (this or $SCALER_LOCAL_SPEC).
        self.validator = load_validator(spec)
        self._delays = delays or Delays()
        self._port = port
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=LOG_LIMIT)
        self._counters: collections.Counter[str] = collections.Counter()
        self._minute: dict[str, collections.deque[float]] = {}
        self._hour: dict[str, collections.deque[float]] = {}
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._dirty = False
        self.droplets_note = ""
        if droplets == "auto":
            why = real_droplets_unavailable()
            droplets = "directory" if why else "real"
            self.droplets_note = why or ""
        elif droplets == "real" and (why := real_droplets_unavailable()):
            raise LocalCloudError(f"{why}; or start the local cloud with directory droplets")
        self.balancers = None
        if droplets == "real":
            self.machines = RealMachines(self.state_dir, self.network, warn=self._warn)
            if why := balancers_unavailable():
                self._warn(f"load balancers carry no traffic: {why}")
            else:
                self.balancers = Balancers(self.network, warn=self._warn)
        else:
            self.machines = Machines(self.state_dir, web_port=web_port)
            # a killed real-droplet cloud of this number may have left its balancers running
            for pid in balancer_sweep(self.network):
                self._warn(f"stopped haproxy {pid}, left by a local cloud that was killed")
        self._state = self._load()

    # -- lifecycle

    def _last_network(self) -> int | None:
        try:
            number = int((self.state_dir / "network").read_text().strip())
        except (OSError, ValueError):
            return None
        return number if 1 <= number <= 254 else None

    def start(self) -> None:
        """Serve HTTP on 127.0.0.1:port in a thread, and boot the active droplets' listeners."""
        if self._server is not None:
            return
        if self._claim is None:
            self._claim = claim_network(self.network)
        try:
            self._server = Server(("127.0.0.1", self._port), self)
        except OSError as err:
            raise LocalCloudError(
                f"cannot listen on 127.0.0.1:{self._port} ({err.strerror}); "
                "pick another port with --port"
            ) from err
        self._port = self._server.server_address[1]
        try:
            self.machines.prepare()
        except ScalerError:
            self._server.server_close()
            self._server = None
            raise
        with self._lock:
            advance(self)
            for droplet in self._state["droplets"].values():
                if droplet["status"] == "active" and droplet["machine"]:
                    try:
                        self.machines.boot(droplet["id"])
                    except (MachineError, OSError) as err:
                        self._warn(f"droplet {droplet['id']} did not boot: {err}")
            self._sync_network()
            self._sync_balancers()
            self._save()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="local-cloud",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop HTTP and every droplet listener; the state stays on disk."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            self._save()
        if self.balancers is not None:
            self.balancers.close()
        self.machines.close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (Packer's api_url, the provider's DIGITALOCEAN_API_URL)."""
        if self._port == 0:
            raise LocalCloudError("the local cloud has no port yet; start() it first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT/v2/ (python-digitalocean's DIGITALOCEAN_END_POINT)."""
        return f"{self.url}/v2/"

    def env(self) -> dict[str, str]:
        """The variables DigitalOcean clients read: token, end point, API URL, SCALER_LOCAL_*."""
        return env_for(self.url, self.machines.web_port())

    # -- control (Python side of /_local/)

    def requests(self) -> list[RequestRecord]:
        """The request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    def counters(self) -> dict[str, int]:
        """Requests per endpoint, e.g. {"GET /v2/droplets/{id}": 3}."""
        with self._log_lock:
            return dict(self._counters)

    def reset_log(self) -> None:
        """Empty the request log and the counters."""
        with self._log_lock:
            self._log.clear()
            self._counters.clear()

    def reset(self) -> None:
        """Forget every resource, fault, log entry and counter (removing roots and images)."""
        with self._lock:
            for droplet_id in list(self._state["droplets"]):
                self.machines.destroy(droplet_id)
            for image_id in list(self._state["images"]):
                self.machines.delete_image(image_id)
            self._state = empty_state()
            self._sync_balancers()
            self.faults = Faults()
            self._minute.clear()
            self._hour.clear()
            self._save()
        self.reset_log()

    def settle(self) -> None:
        """Apply whatever is due by now (requests do this themselves)."""
        with self._lock:
            advance(self)
            self._sync_network()
            self._sync_balancers()
            self._save_if_dirty()

    def _sync_network(self) -> None:
        # Real droplets' reserved IPs and firewalls follow the state (the lock is held).
        if isinstance(self.machines, RealMachines):
            self.machines.set_policies(droplet_policies(self._state))

    def _sync_balancers(self) -> None:
        # Called under the lock after anything that may change a balancer, its droplets
        # (created, deleted, tagged) or their addresses; a no-op when nothing changed.
        if self.balancers is not None:
            self.balancers.sync(balancer_specs(self))

    # -- HTTP

    def _handle(self, h: HTTPHandler) -> None:
        started = time.time()
        split = urllib.parse.urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        method = h.command
        try:
            raw = read_body(h)
        except (ValueError, OSError):
            raw = b""
        if path.startswith("/_local"):
            status, payload, headers = control(self, method, path, raw)
            respond(h, status, payload, headers)
            return
        route, params, other = match(ROUTES, method, path)
        template = route.template if route else path
        token = bearer(h.headers.get("Authorization", ""))
        status, payload, headers = self._api(
            method, path, split.query, raw, route, params, other, token, h
        )
        # Logged before the answer goes out: a client that has its answer sees it in the log.
        record = RequestRecord(
            method,
            path,
            split.query,
            status,
            started,
            f"{method} {template}",
            time.time() - started,
        )
        with self._log_lock:
            self._log.append(record)
            self._counters[record.template] += 1
        lost = self.faults.dropped(method, path)
        if lost is not None:
            # done, but the client never hears: the case a create call must survive
            time.sleep(lost)
            h.close_connection = True
            return
        respond(h, status, None if method == "HEAD" else payload, headers)
        if self.verbose:
            query = f"?{split.query}" if split.query else ""
            print(f"{method} {path}{query} -> {status}", file=sys.stderr, flush=True)

    def _api(
        self,
        method: str,
        path: str,
        raw_query: str,
        raw: bytes,
        route: Route | None,
        params: dict[str, str],
        other: bool,
        token: str,
        h: HTTPHandler,
    ) -> tuple[int, JSON | None, dict[str, str]]:
        headers: dict[str, str] = {}
        try:
            if not token:
                reset = str(int(time.time()) + 3600)
                headers.update({"ratelimit-limit": str(HOURLY_LIMIT), "ratelimit-reset": reset})
                headers["ratelimit-remaining"] = str(HOURLY_LIMIT)
                raise ApiError(401, DEFAULT_MESSAGES[401])
            headers.update(self._rate_limit(token))
            pause = self.faults.delay(method, path)
            if pause > 0:
                time.sleep(pause)
            injected = self.faults.failure(method, path)
            if injected is not None:
                raise injected
            if route is None:
                if other:
                    raise ApiError(405, f"Method {method} is not allowed on {path}.")
                raise not_found()
            body = parse_body(raw) if method in ("POST", "PUT", "PATCH", "DELETE") else {}
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query).items()}
            host = h.headers.get("Host") or f"127.0.0.1:{self._port}"
            if self.validator is not None:
                self.validator.check(route.method, route.spec_path, query, body)
            req = Request(method, path, query, raw_query, body, params, f"http://{host}")
            with self._lock:
                advance(self)
                try:
                    status, payload = route.handler(self, req)
                finally:
                    # before the answer goes out: a client that sees an IP assigned or a
                    # firewall saved finds the droplets' network already changed
                    self._sync_network()
                    self._sync_balancers()
                    self._save_if_dirty()
            return status, payload, headers
        except ApiError as err:
            headers.update(err.headers)
            error = {"id": err.error_id, "message": err.message, "request_id": str(uuid.uuid4())}
            return err.status, error, headers

    def _rate_limit(self, token: str) -> dict[str, str]:
        now = time.time()
        with self._log_lock:
            minute = self._minute.setdefault(token, collections.deque())
            hour = self._hour.setdefault(token, collections.deque())
            while minute and minute[0] <= now - 60:
                minute.popleft()
            while hour and hour[0] <= now - 3600:
                hour.popleft()
            reset = int(hour[0] + 3600) if hour else int(now + 3600)
            headers = {
                "ratelimit-limit": str(HOURLY_LIMIT),
                "ratelimit-remaining": str(max(HOURLY_LIMIT - len(hour), 0)),
                "ratelimit-reset": str(reset),
            }
            if len(minute) >= self.rate_limit_per_minute or len(hour) >= HOURLY_LIMIT:
                window = minute if len(minute) >= self.rate_limit_per_minute else hour
                span = 60 if window is minute else 3600
                wait = max(math.ceil(window[0] + span - now), 1)
                raise ApiError(
                    429, DEFAULT_MESSAGES[429], headers={**headers, "retry-after": str(wait)}
                )
            minute.append(now)
            hour.append(now)
            headers["ratelimit-remaining"] = str(max(HOURLY_LIMIT - len(hour), 0))
            return headers
