"""Fault injection (/_local/faults): failed requests, latency, errored and stalled actions."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from scaler.local.api.base import DEFAULT_MESSAGES, JSON, ApiError


@dataclass
class _Fault:
    kind: str
    method: str = "*"
    path: str = ""
    status: int = 500
    nth: int = 1
    times: int | None = 1
    message: str | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    droplet_id: int | None = None
    action_type: str | None = None
    name: str | None = None
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.fullmatch(self.path, path) is not None

    def describe(self) -> JSON:
        keep = {
            "fail": ("method", "path", "status", "nth", "times", "message", "retry_after", "seen"),
            "latency": ("method", "path", "seconds", "times"),
            "error_action": ("droplet_id", "action_type", "times"),
            "stall": ("droplet_id", "name", "times"),
            "drop": ("method", "path", "seconds", "times"),
        }[self.kind]
        return {"kind": self.kind, **{k: getattr(self, k) for k in keep}}


class Faults:
    """Fault injection for tests and chaos runs (also reachable as /_local/faults)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._stalled: set[int] = set()

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        nth: int = 1,
        times: int = 1,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Fail `times` requests from the nth one from now whose method and path (regex) match."""
        re.compile(path)
        if nth < 1 or times < 1 or not 400 <= status <= 599:
            raise ValueError("nth and times must be >= 1 and status an HTTP error (400-599)")
        fault = _Fault("fail", method.upper(), path, status, nth, times, message, retry_after)
        self._add(fault)

    def latency(self, method: str, path: str, seconds: float, *, times: int | None = None) -> None:
        """Delay matching requests by `seconds` (every one, or the next `times`)."""
        re.compile(path)
        self._add(_Fault("latency", method.upper(), path, seconds=seconds, times=times))

    def error_action(
        self, *, droplet_id: int | None = None, action_type: str | None = None, times: int = 1
    ) -> None:
        """End the next droplet action(s) matching droplet and/or type as `errored`."""
        self._add(
            _Fault("error_action", droplet_id=droplet_id, action_type=action_type, times=times)
        )

    def stall(
        self, *, droplet_id: int | None = None, name: str | None = None, times: int = 1
    ) -> None:
        """Keep a droplet `new` forever: one by id, or the next created ones by name regex."""
        if (droplet_id is None) == (name is None):
            raise ValueError("stall needs exactly one of droplet_id or name")
        if droplet_id is not None:
            with self._lock:
                self._stalled.add(droplet_id)
            return
        assert name is not None
        re.compile(name)
        self._add(_Fault("stall", name=name, times=times))

    def drop(self, method: str, path: str, seconds: float = 0.0, *, times: int = 1) -> None:
        """Carry out the next `times` matching requests, then close without an answer."""
        re.compile(path)
        if times < 1 or seconds < 0:
            raise ValueError("times must be >= 1 and seconds >= 0")
        self._add(_Fault("drop", method.upper(), path, seconds=seconds, times=times))

    def dropped(self, method: str, path: str) -> float | None:
        """Seconds to wait before closing without an answer, or None to answer."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == "drop" and fault.matches(method, path):
                    self._take(fault)
                    return fault.seconds
        return None

    def clear(self) -> None:
        """Remove every fault (stalled droplets stay as they are)."""
        with self._lock:
            self._faults.clear()

    def describe(self) -> list[JSON]:
        """The faults still armed, as JSON."""
        with self._lock:
            return [f.describe() for f in self._faults]

    def add_json(self, spec: JSON) -> None:
        """Add a fault from its /_local/faults JSON form."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        adders: dict[str, Callable[..., None]] = {
            "fail": self.fail,
            "latency": self.latency,
            "error_action": self.error_action,
            "stall": self.stall,
            "drop": self.drop,
        }
        if kind not in adders:
            raise ValueError(f"unknown fault kind {kind!r} (have: {', '.join(adders)})")
        if kind == "drop":
            spec.setdefault("method", "*")
            adders[kind](**spec)
        elif kind in ("fail", "latency"):
            args = [spec.pop("method", "*"), spec.pop("path")]
            args.append(spec.pop("status") if kind == "fail" else float(spec.pop("seconds")))
            adders[kind](*args, **spec)
        else:
            adders[kind](**spec)

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, fault: _Fault) -> None:
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)

    def failure(self, method: str, path: str) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind != "fail" or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen < fault.nth:
                    continue
                self._take(fault)
                headers = {}
                if fault.status == 429 or fault.retry_after is not None:
                    headers["retry-after"] = str(fault.retry_after or 1)
                message = fault.message or DEFAULT_MESSAGES.get(fault.status, "Injected failure.")
                return ApiError(fault.status, message, headers=headers)
        return None

    def delay(self, method: str, path: str) -> float:
        total = 0.0
        with self._lock:
            for fault in list(self._faults):
                if fault.kind == "latency" and fault.matches(method, path):
                    total += fault.seconds
                    self._take(fault)
        return total

    def action_errors(self, droplet_id: int, action_type: str) -> bool:
        with self._lock:
            for fault in self._faults:
                if fault.kind != "error_action":
                    continue
                if fault.droplet_id not in (None, droplet_id):
                    continue
                if fault.action_type not in (None, action_type):
                    continue
                self._take(fault)
                return True
        return False

    def stalls(self, droplet_id: int, name: str) -> bool:
        with self._lock:
            if droplet_id in self._stalled:
                return True
            for fault in self._faults:
                if fault.kind == "stall" and fault.name is not None and re.search(fault.name, name):
                    self._take(fault)
                    self._stalled.add(droplet_id)
                    return True
        return False

    def is_stalled(self, droplet_id: int) -> bool:
        with self._lock:
            return droplet_id in self._stalled


# --- requests and routing ------------------------------------------------------------------------
