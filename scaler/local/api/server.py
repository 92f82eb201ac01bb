"""The server process: `scaler local up/down/status` start, find and stop a background cloud."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from scaler.errors import ScalerError
from scaler.fsutil import write_atomic
from scaler.local.api.base import (
    DEFAULT_PORT,
    DEFAULT_STATE_DIR,
    JSON,
    PACE,
    TIMINGS,
    Delays,
    LocalCloudError,
    ServerInfo,
)
from scaler.local.api.cloud import LocalCloud
from scaler.local.droplets import DropletKind
from scaler.local.netclaim import DEFAULT_NETWORK


def _server_file(state_dir: Path) -> Path:
    return Path(state_dir) / "server.json"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child that ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _health(url: str, timeout: float = 2.0) -> JSON | None:
    try:
        with urllib.request.urlopen(f"{url}/_local/health", timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


def timing_delays(timing: str, delay: float | None) -> Delays | None:
    """The Delays of a --timing profile, with --delay (when given) for its boot and actions."""
    if timing not in TIMINGS:
        raise LocalCloudError(f"unknown timing {timing!r} (have: {', '.join(TIMINGS)})")
    base = Delays.realistic() if timing == "realistic" else None
    if delay is None:
        return base
    paced = Delays.uniform(delay)
    if base is None:
        return paced
    return replace(base, **{k: getattr(paced, k) for k in PACE})


def running(state_dir: Path) -> ServerInfo | None:
    """The server that `scaler local up` started for state_dir, when it still answers."""
    path = _server_file(state_dir)
    try:
        raw = json.loads(path.read_text())
        info = ServerInfo(
            int(raw["pid"]),
            int(raw["port"]),
            int(raw["network"]),
            Path(state_dir),
            int(raw.get("web_port", 80)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(info.pid):
        path.unlink(missing_ok=True)  # left by a server that died without cleaning up
        return None
    health = _health(info.url)
    return info if health is not None and health.get("pid") == info.pid else None


def serve(
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    network: int = DEFAULT_NETWORK,
    verbose: bool = True,
    ready: Callable[[ServerInfo], None] | None = None,
    delays: Delays | None = None,
    rate_limit_per_minute: int = 250,
    droplets: DropletKind = "auto",
    spec: Path | None = None,
) -> None:
    """Run a local cloud in this process until SIGTERM or Ctrl-C (`up --foreground`)."""
    state_dir = Path(state_dir)
    cloud = LocalCloud(
        state_dir,
        port=port,
        network=network,
        verbose=verbose,
        delays=delays,
        rate_limit_per_minute=rate_limit_per_minute,
        droplets=droplets,
        spec=spec,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    cloud.start()
    info = ServerInfo(os.getpid(), cloud.port, network, state_dir, cloud.machines.web_port())
    try:
        payload = {"pid": info.pid, "port": info.port, "network": network, "url": info.url}
        payload["web_port"] = info.web_port
        write_atomic(_server_file(state_dir), json.dumps(payload) + "\n")
        if ready is not None:
            ready(info)
        while not stop.wait(0.5):
            pass
    finally:
        cloud.stop()
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(_server_file(state_dir).read_text())["pid"] == info.pid:
                _server_file(state_dir).unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch(
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    network: int = DEFAULT_NETWORK,
    timeout: float = 30.0,
    delay: float | None = None,
    rate_limit_per_minute: int = 250,
    droplets: DropletKind = "auto",
    timing: str = "default",
    spec: Path | None = None,
) -> tuple[ServerInfo, bool]:
    """Start a background server for state_dir unless one runs; returns it, and if it ran."""
    state_dir = Path(state_dir)
    found = running(state_dir)
    if found is not None:
        return found, True
    state_dir.mkdir(parents=True, exist_ok=True)
    _server_file(state_dir).unlink(missing_ok=True)
    log = state_dir / "server.log"
    argv = [sys.executable, "-m", "scaler.local.api", "--state-dir", str(state_dir)]
    argv += ["--port", str(port), "--network", str(network)]
    argv += ["--rate-limit", str(rate_limit_per_minute), "--droplets", droplets]
    if delay is not None:
        argv += ["--delay", str(delay)]
    if timing != "default":
        argv += ["--timing", timing]
    if spec is not None:
        argv += ["--spec", str(Path(spec).resolve())]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            tail = [line.removeprefix("Error: ") for line in tail]
            raise LocalCloudError(
                f"the local cloud did not start "
                f"({tail[0] if tail else f'exit {proc.returncode}'}); see {log}"
            )
        info = running(state_dir)
        if info is not None and info.pid == proc.pid:
            return info, False
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    raise LocalCloudError(f"the local cloud did not answer within {timeout:.0f} s; see {log}")


def shutdown(state_dir: Path, *, timeout: float = 30.0) -> ServerInfo | None:
    """Stop the background server of state_dir; None when none was running."""
    info = running(Path(state_dir))
    if info is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return info


def health(state_dir: Path) -> JSON | None:
    """What the running server of state_dir reports about itself, or None."""
    info = running(Path(state_dir))
    return _health(info.url) if info is not None else None


def iter_env_lines(env: dict[str, str]) -> Iterator[str]:
    """`export K=V` lines for a shell's eval."""

    for key, value in env.items():
        yield f"export {key}={shlex.quote(value)}"


def main() -> None:
    """`python -m scaler.local.api`: the process `launch` starts."""
    parser = argparse.ArgumentParser(
        prog="python -m scaler.local.api", description="Run a local cloud."
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--network", type=int, default=DEFAULT_NETWORK)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--delay", type=float, default=None, help="every delay, in seconds")
    parser.add_argument("--rate-limit", type=int, default=250, help="requests a minute per token")
    parser.add_argument("--droplets", choices=["auto", "real", "directory"], default="auto")
    parser.add_argument("--timing", choices=TIMINGS, default="default")
    parser.add_argument("--spec", type=Path, default=None, help="the OpenAPI file to check by")
    args = parser.parse_args()
    try:
        serve(
            args.state_dir,
            port=args.port,
            network=args.network,
            verbose=not args.quiet,
            delays=timing_delays(args.timing, args.delay),
            rate_limit_per_minute=args.rate_limit,
            droplets=args.droplets,
            spec=args.spec,
        )
    except ScalerError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
