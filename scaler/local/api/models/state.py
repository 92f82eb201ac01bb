"""The state every resource family lives in, its persistence (state.json), ids and addresses."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from scaler.fsutil import write_atomic
from scaler.local.api.base import JSON, Delays, LocalCloudError, unprocessable
from scaler.local.api.faults import Faults
from scaler.local.balancer import Balancers
from scaler.local.droplets import RealMachines
from scaler.local.machines import Machines

# The families of state.json, and the key each one's objects are filed under.
FAMILIES = (
    "droplets",
    "actions",
    "images",
    "keys",
    "lbs",
    "ips",
    "tags",
    "vpcs",
    "projects",
    "firewalls",
)


def empty_state() -> JSON:
    """A cloud that holds nothing yet."""
    return {
        "next": {
            "droplet": 100000001,
            "action": 900000001,
            "image": 170000001,
            "key": 41000001,
            "droplet_addr": 0,
            "ip_addr": 0,
            "lb_addr": 0,
        },
        "droplets": {},
        "actions": {},
        "images": {},
        "keys": {},
        "lbs": {},
        "ips": {},
        "tags": {},
        "vpcs": {},
        "projects": {},
        "firewalls": {},
    }


class CloudState:
    """What handlers and models work on: the state document, its machines, faults and delays."""

    state_dir: Path
    network: int
    faults: Faults
    machines: Machines | RealMachines
    # the balancers' HAProxy processes: only clouds of real droplets run them
    balancers: Balancers | None
    _state: JSON
    _dirty: bool
    _delays: Delays
    _lock: threading.RLock

    @property
    def delays(self) -> Delays:
        return self._delays

    @delays.setter
    def delays(self, value: Delays) -> None:
        self._delays = value

    def summary(self) -> JSON:
        """Counts of what the cloud holds."""
        with self._lock:
            s = self._state
            return {
                "droplets": len(s["droplets"]),
                "images": len(s["images"]),
                "ssh_keys": len(s["keys"]),
                "load_balancers": len(s["lbs"]),
                "floating_ips": len(s["ips"]),
                "tags": len(s["tags"]),
            }

    # -- persistence

    def _load(self) -> JSON:
        path = self.state_dir / "state.json"
        if not path.is_file():
            return empty_state()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LocalCloudError(
                f"cannot read {path} ({err}); move it away to start afresh"
            ) from err
        state = empty_state()
        state["next"].update(raw.get("next", {}))
        for key, id_key in (
            ("droplets", "id"),
            ("actions", "id"),
            ("images", "id"),
            ("keys", "id"),
        ):
            state[key] = {int(o[id_key]): o for o in raw.get(key, [])}
        state["lbs"] = {o["id"]: o for o in raw.get("lbs", [])}
        state["ips"] = {o["ip"]: o for o in raw.get("ips", [])}
        state["tags"] = {o["name"]: o for o in raw.get("tags", [])}
        state["vpcs"] = {o["id"]: o for o in raw.get("vpcs", [])}
        state["projects"] = {o["id"]: o for o in raw.get("projects", [])}
        state["firewalls"] = {o["id"]: o for o in raw.get("firewalls", [])}
        return state

    def _save(self) -> None:
        s = self._state
        raw = {"version": 1, "next": s["next"]}
        for key in FAMILIES:
            raw[key] = list(s[key].values())
        write_atomic(
            self.state_dir / "state.json", json.dumps(raw, indent=1, sort_keys=True) + "\n"
        )
        self._dirty = False

    def _save_if_dirty(self) -> None:
        if self._dirty:
            self._save()

    # -- ids and addresses

    def _next(self, kind: str) -> int:
        value = int(self._state["next"][kind])
        self._state["next"][kind] = value + 1
        return value

    def _address(self, kind: str, octet: int, used: set[str]) -> tuple[int, str]:
        start = int(self._state["next"][kind])
        for step in range(1, 254):
            k = (start + step - 1) % 253 + 1
            ip = f"127.{self.network}.{octet}.{k}"
            if ip not in used:
                self._state["next"][kind] = k
                return k, ip
        raise unprocessable(
            "The local cloud has no free addresses left in that range (253 at most)."
        )

    def _warn(self, message: str) -> None:
        print(f"scaler local: {message}", file=sys.stderr, flush=True)
