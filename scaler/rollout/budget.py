"""The API budget: pace batches to the token's requests per minute (see the package docstring)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scaler.cloud import (
    Cloud,
    CloudError,
    NoToken,
    Pacing,
    endpoint_from,
    token_from_env,
)
from scaler.events import Clock
from scaler.rollout.plan import RolloutError

DEFAULT_API_BUDGET = 250


@dataclass(frozen=True)
class ApiUse:
    """Requests the token made between two readings of ratelimit-remaining."""

    start: float
    end: float
    requests: int
    droplets: int = 0


class ApiBudget:
    """Paces batches so the token's requests stay under `per_minute` in any `window` seconds."""

    def __init__(
        self,
        read_remaining: Callable[[], int | None],
        per_minute: int = DEFAULT_API_BUDGET,
        *,
        window: float = 60.0,
        per_droplet: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise RolloutError(f"--api-budget {per_minute} is out of range; give 1 or more")
        self.read_remaining = read_remaining
        self.per_minute = per_minute
        self.window = window
        self.prior = per_droplet
        self.clock = clock
        self.uses: list[ApiUse] = []
        self.readings = 0
        self._last: tuple[float, int] | None = None

    def mark(self, droplets: int = 0) -> int | None:
        """Read ratelimit-remaining; `droplets`: the interval since the last mark was a batch."""
        remaining = self.read_remaining()
        now = self.clock()
        self.readings += 1
        if remaining is None:
            return None
        if self._last is not None:
            start, before = self._last
            # The hourly window slides: requests older than an hour give budget back.
            used = max(0, before - remaining)
            self.uses.append(ApiUse(start, now, used, droplets))
        self._last = (now, remaining)
        return remaining

    def per_droplet(self) -> float:
        """The most one replaced droplet has cost so far (the prior before any batch)."""
        seen = [u.requests / u.droplets for u in self.uses if u.droplets]
        return max(seen) if seen else self.prior

    def projected(self, droplets: int) -> int:
        """Requests a batch of `droplets` is expected to make."""
        return math.ceil(self.per_droplet() * droplets)

    def used_in_window(self, at: float | None = None) -> int:
        """Requests in intervals that end within the window before `at` (counted whole)."""
        at = self.clock() if at is None else at
        return sum(u.requests for u in self.uses if u.end > at - self.window)

    def pause_for(self, droplets: int) -> float:
        """Seconds to wait before a batch of `droplets` so it fits the budget."""
        now = self.clock()
        room = self.per_minute - self.projected(droplets)
        if not self.uses:
            return 0.0
        if room < 0:
            # Too big for one window: start on an empty one (Terraform's 429 retries do the rest).
            return max(0.0, max(u.end for u in self.uses) + self.window - now)
        for at in sorted(
            {now, *(u.end + self.window for u in self.uses if u.end + self.window > now)}
        ):
            if self.used_in_window(at) <= room:
                return max(0.0, at - now)
        return 0.0

    @classmethod
    def for_cloud(
        cls, cloud: Cloud, per_minute: int = DEFAULT_API_BUDGET, **options: Any
    ) -> ApiBudget:
        """A budget reading the token's ratelimit-remaining through scaler.cloud."""
        return cls(lambda: remaining_requests(cloud), per_minute, **options)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        per_minute: int = DEFAULT_API_BUDGET,
        **options: Any,
    ) -> ApiBudget:
        """A budget for the token and API end point in `env` (default os.environ)."""
        env = {**os.environ, **(env or {})}
        token = token_from_env(env)
        if not token:
            raise NoToken()
        cloud = Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=2))
        return cls.for_cloud(cloud, per_minute, **options)


def remaining_requests(cloud: Cloud) -> int | None:
    """One GET /v2/account: the token's ratelimit-remaining (None when the API did not say)."""
    try:
        return cloud.remaining_requests()
    except (CloudError, OSError):
        # requests' errors are OSErrors; the budget is advice, never a reason to stop a rollout.
        return None
