"""Roll the web droplets onto a new image: guarded, in health-checked batches, resumable.

Shape (as pip-tools' sync): `plan_rollout()` is pure and says what must change; `prepare_rollout()`
sets image_slug, plans with Terraform and runs the guard; `apply_rollout()` does the work.

How a batch is replaced. With image_slug changed Terraform wants to replace every droplet at
once, and `-target` cannot help: targeting the load balancer pulls in all droplets it depends
on, and leaving it out leaves the balancer pointing at destroyed droplets. So the stack gives
each droplet an override (`wp_node_images`, a map from count index to image); per batch scaler
pins the droplets not yet rolled to the image they run, and a plain whole-configuration plan then
replaces exactly the batch and updates the balancer's droplet_ids in place, in one apply
(`for_each` droplets are pinned by key). A stack without the map whose droplets have
`lifecycle { ignore_changes = [image] }` plans no replacement when image_slug changes: each
batch is then named with `-replace`, and tfvars needs no pins.

Who is behind the balancer comes from the API (scaler.balancer), read again before every check:
the state's droplet_ids of a tag-based balancer lags until a refresh, and a balancer made
outside the stack is not in the state at all.

The guard (per plan): the rollout targets (default every `digitalocean_droplet.wp_node`) may be
replaced or updated; an in-place update of a load balancer is allowed, because replacing its
droplets changes its droplet_ids; any other change (create, update, replace or delete of the
database droplets, the floating IP, the balancer itself, ...) refuses the plan before anything
is applied, names those resources and puts terraform.tfvars back.

The API budget. DigitalOcean allows 250 requests a minute per token but reports only what is left
of the hourly 5,000 (`ratelimit-remaining`). So ApiBudget reads that (one GET /v2/account) before
each batch and after its apply: the drop is what the token used meanwhile (Terraform's provider
and anyone else on the token). Before a batch it projects the batch's requests (the most a
droplet has cost so far, else a prior of 10: create, status looks, delete, look again) and pauses
until the requests seen in the last minute (every interval that ends inside it, counted whole)
plus the projection fit the budget. History before the first reading is unknown.

Bookkeeping lives in `.scaler/` in the Terraform directory (with a `.gitignore` of `*`): the
rollout record `rollout.json` (schema in docs/rollout-record.md, written atomically), the lock
`rollout.lock` (scaler.lock) that keeps two rollouts off one state, and the plan files. Before a
batch applies, the record names the droplets it is about to create, so `--resume` after a kill -9
finds (by name and creation time) droplets the dead apply created outside the state and removes
them. The tfvars file always pins the droplets not yet rolled to the image they run (the pin
variable), so a plain `terraform apply` after any interruption changes nothing the rollout did
not. Terraform's state lock waits `lock_timeout` for other tools.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaler import health
from scaler.balancer import Balancer, find_balancer, member_ips
from scaler.cloud import (
    Cloud,
    CloudError,
    NotFound,
    NoToken,
    Pacing,
    created_at_epoch,
    endpoint_from,
    token_from_env,
)
from scaler.errors import ScalerError
from scaler.fsutil import BOOKKEEPING_DIR, bookkeeping_dir, write_atomic
from scaler.state import Resource, parse_state
from scaler.terraform import NoState, Terraform, TerraformFailed, local_provider
from scaler.tfvars import (
    IMAGE_VAR,
    TfvarsNotFound,
    VariableNotFound,
    get_tfvar,
    set_tfvar,
    tfvars_holding,
)

Strategy = Literal["all", "rolling"]
Status = Literal[
    "done", "nothing-to-do", "dry-run", "rolled-back", "failed", "interrupted", "refused"
]

DEFAULT_TARGET = "digitalocean_droplet.wp_node"
PIN_VAR = "wp_node_images"
PROGRESS_NAME = "rollout.json"
LEGACY_PROGRESS_NAME = ".scaler-rollout.json"
RECORD_VERSION = 2
DEFAULT_BATCH = "25%"
DEFAULT_API_BUDGET = 250
PROVIDER_ENV = ("SCALER_LOCAL_PROVIDER_POLL", "SCALER_POLL_TIMEOUT")
_SPEC = re.compile(r"\s*(\d+)\s*(%?)\s*")
_ALLOWED_UPDATES = ("digitalocean_loadbalancer",)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")


class RolloutError(ScalerError):
    """A rollout cannot start or go on."""


class PlanRefused(RolloutError):
    """The guard refused a Terraform plan."""

    def __init__(self, message: str, offending: Sequence[str]) -> None:
        super().__init__(message)
        self.offending = tuple(offending)


# ---------------------------------------------------------------------------------------------
# Pure planning


@dataclass(frozen=True)
class RolloutPlan:
    """What a rollout will do: which droplets go to which image, in which batches."""

    target_image: str
    previous_image: str
    strategy: Strategy
    targets: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    skipped: tuple[str, ...]
    max_unavailable: int
    floor: int
    canary: bool

    @property
    def nothing_to_do(self) -> bool:
        """True when every target already runs the target image."""
        return not self.batches

    @property
    def replacing(self) -> tuple[str, ...]:
        """Every address the rollout replaces, in order."""
        return tuple(a for batch in self.batches for a in batch)


def parse_count(text: str | int, total: int, what: str = "--batch-size") -> int:
    """`N` or `N%` of `total` (rounded up, at least 1) as a count."""
    if isinstance(text, int):
        number, percent = text, False
    else:
        match = _SPEC.fullmatch(text)
        if match is None:
            raise RolloutError(f"{what} {text!r} is not a count; give N (like 2) or N% (like 25%)")
        number, percent = int(match.group(1)), bool(match.group(2))
    if number <= 0 or (percent and number > 100):
        raise RolloutError(f"{what} {text!r} is out of range; give 1 or more, or 1% to 100%")
    if percent:
        return max(1, math.ceil(total * number / 100))
    return number


def parse_duration(text: str) -> float:
    """`30m`, `90s`, `1.5h`, `250ms` or bare seconds as seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise RolloutError(f"{text!r} is not a duration; give e.g. 30m, 90s or 1h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def plan_rollout(
    instances: Mapping[str, str],
    target_image: str,
    previous_image: str,
    *,
    strategy: Strategy | None = None,
    batch_size: str | int = DEFAULT_BATCH,
    max_unavailable: str | int | None = None,
    canary: bool = False,
) -> RolloutPlan:
    """The batches that move `instances` (address -> image it runs) onto `target_image`."""
    targets = tuple(sorted(instances, key=_address_key))
    total = len(targets)
    if total == 0:
        raise RolloutError("no rollout targets in the state; apply the stack first")
    todo = tuple(a for a in targets if instances[a] != target_image)
    skipped = tuple(a for a in targets if instances[a] == target_image)
    chosen: Strategy = strategy or ("rolling" if total > 1 else "all")
    size = parse_count(batch_size, total)
    if max_unavailable is None:
        unavailable = size
    elif str(max_unavailable).strip() in ("0", "0%"):
        raise RolloutError(
            "--max-unavailable 0 would never let a droplet go: a replaced droplet leaves the "
            "load balancer's healthy set until its new droplet passes the check; give 1 or more"
        )
    else:
        unavailable = parse_count(max_unavailable, total, "--max-unavailable")
    batches: tuple[tuple[str, ...], ...]
    if chosen == "all":
        unavailable = total
        batches = (todo,) if todo else ()
    else:
        # A batch never takes out more droplets than may be unavailable at once.
        size = min(size, unavailable)
        rest = list(todo)
        out: list[tuple[str, ...]] = []
        if canary and rest:
            out.append((rest.pop(0),))
        while rest:
            out.append(tuple(rest[:size]))
            del rest[:size]
        batches = tuple(out)
    return RolloutPlan(
        target_image=target_image,
        previous_image=previous_image,
        strategy=chosen,
        targets=targets,
        batches=batches,
        skipped=skipped,
        max_unavailable=min(unavailable, total),
        floor=max(0, total - unavailable),
        canary=canary and chosen == "rolling",
    )


def _address_key(address: str) -> tuple[str, int, str]:
    base, _, index = address.partition("[")
    index = index.rstrip("]")
    return (base, int(index), "") if index.isdigit() else (base, -1, index)


def matches_target(address: str, targets: Sequence[str]) -> bool:
    """True when `address` is one of `targets` or an instance of a target resource."""
    return any(address == t or address.startswith(t + "[") for t in targets)


@dataclass(frozen=True)
class Change:
    """One resource change in a Terraform plan."""

    address: str
    type: str
    actions: tuple[str, ...]
    deposed: bool = False

    @property
    def kind(self) -> str:
        """create, update, delete, replace, read or no-op."""
        if set(self.actions) == {"create", "delete"}:
            return "replace"
        return self.actions[0] if len(self.actions) == 1 else "+".join(self.actions)


def plan_changes(plan_json: Mapping[str, Any]) -> tuple[Change, ...]:
    """The changes of a plan (`terraform show -json PLAN`), no-ops and reads left out."""
    found = []
    for item in plan_json.get("resource_changes") or ():
        actions = tuple(item["change"]["actions"])
        if actions in (("no-op",), ("read",)):
            continue
        deposed = bool(item.get("deposed"))
        found.append(Change(item["address"], item.get("type", ""), actions, deposed))
    return tuple(found)


def check_plan(
    plan_json: Mapping[str, Any],
    targets: Sequence[str],
    *,
    expect: Sequence[str] | None = None,
) -> tuple[Change, ...]:
    """The guard: the plan's changes, or PlanRefused naming whatever is not allowed.

    Targets may be replaced or updated in place; other resources may only see an in-place update
    of a load balancer. With `expect`, exactly those targets must be replaced.
    """
    changes = plan_changes(plan_json)
    bad: list[Change] = []
    for change in changes:
        if matches_target(change.address, targets):
            # A deposed object is an old droplet a failed create-before-destroy left behind.
            if change.kind not in ("replace", "update") and not (
                change.deposed and change.kind == "delete"
            ):
                bad.append(change)
        elif not (change.kind == "update" and change.type in _ALLOWED_UPDATES):
            bad.append(change)
    if bad:
        named = ", ".join(f"{c.kind} {c.address}" for c in bad)
        raise PlanRefused(
            f"the plan would {named}; a rollout may only replace "
            f"{', '.join(targets)} (and update a load balancer in place)",
            [c.address for c in bad],
        )
    if expect is not None:
        replaced = {c.address for c in changes if c.kind == "replace" or c.kind == "create"}
        if replaced != set(expect):
            extra = sorted(replaced - set(expect), key=_address_key)
            missing = sorted(set(expect) - replaced, key=_address_key)
            parts = []
            if extra:
                parts.append(f"also replace {', '.join(extra)}")
            if missing:
                parts.append(f"not replace {', '.join(missing)}")
            raise PlanRefused(
                f"the batch plan would {' and '.join(parts)}; expected exactly "
                f"{', '.join(sorted(expect, key=_address_key))}",
                extra + missing,
            )
    return changes


# ---------------------------------------------------------------------------------------------
# Settings, progress and results


@dataclass(frozen=True)
class Settings:
    """Where and how a rollout runs (everything but the plan itself)."""

    terraform_dir: Path
    var_file: Path | None = None
    # Every tfvars file Terraform gets (-var-file, in order); the one setting image_var is written.
    var_files: tuple[Path, ...] = ()
    backend_config: tuple[str, ...] = ()
    image_var: str = IMAGE_VAR
    targets: tuple[str, ...] = (DEFAULT_TARGET,)
    pin_var: str = PIN_VAR
    load_balancer: str | None = None
    workspace: str | None = None
    lock_timeout: str = "0s"
    parallelism: int | None = None
    engine: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    local: bool | None = None
    health_interval: float | None = None
    health_timeout: float = 300.0
    health_grace: float = 30.0
    port_map: Mapping[int, int] = field(default_factory=dict)
    deadline: float | None = None
    rollback: bool = True
    # (user, private key): check droplets this machine cannot reach through SSH to them
    probe_ssh: tuple[str, Path] | None = None

    def __post_init__(self) -> None:
        # Terraform runs inside terraform_dir: plan files named under it must not be relative.
        object.__setattr__(self, "terraform_dir", Path(self.terraform_dir).resolve())
        files = tuple(Path(f).resolve() for f in self.var_files)
        object.__setattr__(self, "var_files", files)

    @functools.cached_property
    def tfvars(self) -> Path:
        """The tfvars file holding image_slug: var_file, else the one of var_files setting it."""
        if self.var_file is not None:
            return self.var_file
        if self.var_files:
            return tfvars_holding(self.var_files, self.image_var)
        return self.terraform_dir / "terraform.tfvars"

    @property
    def all_tfvars(self) -> tuple[Path, ...]:
        """Every tfvars file handed to Terraform, in order (-var-file each)."""
        if not self.var_files:
            return (self.tfvars,)
        if self.var_file is not None and self.var_file.resolve() not in self.var_files:
            return (*self.var_files, self.var_file)
        return self.var_files

    @property
    def progress_file(self) -> Path:
        """The rollout record: `.scaler/rollout.json` in the Terraform directory."""
        return self.terraform_dir / BOOKKEEPING_DIR / PROGRESS_NAME

    @property
    def bookkeeping(self) -> Path:
        """`.scaler/` in the Terraform directory, created with its .gitignore."""
        return bookkeeping_dir(self.terraform_dir)


@dataclass(frozen=True)
class Creating:
    """A droplet a batch is about to replace: its address, the droplet it replaces, the name
    the new one gets and when the apply started (to find it if the state never learns it)."""

    address: str
    old_id: str
    name: str
    since: float


@dataclass(frozen=True)
class Progress:
    """What the rollout record holds (docs/rollout-record.md; version RECORD_VERSION)."""

    target_image: str
    previous_image: str
    strategy: Strategy
    batches: tuple[tuple[str, ...], ...]
    done: tuple[str, ...]
    status: str
    started: float
    updated: float
    creating: tuple[Creating, ...] = ()
    healthy: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """True when there is nothing left to resume."""
        return self.status in ("done", "rolled-back")


def read_progress(path: Path) -> Progress | None:
    """The rollout record, or None when there is none (a version-1 `.scaler-rollout.json`
    beside the Terraform files is read too)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        legacy = path.parent.parent / LEGACY_PROGRESS_NAME
        if path.parent.name != BOOKKEEPING_DIR or not legacy.is_file():
            return None
        return read_progress_file(legacy)
    except (OSError, json.JSONDecodeError) as err:
        raise RolloutError(f"cannot read {path} ({err}); move it away to start afresh") from err
    return _progress(raw, path)


def read_progress_file(path: Path) -> Progress:
    """One record file (no fallback)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RolloutError(f"cannot read {path} ({err}); move it away to start afresh") from err
    return _progress(raw, path)


def _progress(raw: Any, path: Path) -> Progress:
    try:
        if not isinstance(raw, dict) or int(raw.get("version", 1)) > RECORD_VERSION:
            raise ValueError(f"version {raw.get('version') if isinstance(raw, dict) else '?'}")
        return Progress(
            target_image=str(raw["target_image"]),
            previous_image=str(raw["previous_image"]),
            strategy=raw["strategy"],
            batches=tuple(tuple(b) for b in raw["batches"]),
            done=tuple(raw["done"]),
            status=str(raw["status"]),
            started=float(raw["started"]),
            updated=float(raw["updated"]),
            creating=tuple(
                Creating(str(c["address"]), str(c["old_id"]), str(c["name"]), float(c["since"]))
                for c in raw.get("creating") or ()
            ),
            healthy=tuple(str(h) for h in raw.get("healthy") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RolloutError(f"{path} is not a rollout record ({err}); move it away") from err


def write_progress(path: Path, progress: Progress) -> None:
    """Record progress atomically (a version-1 file beside it goes: this one replaces it)."""
    path = Path(path)
    if path.parent.name == BOOKKEEPING_DIR:
        bookkeeping_dir(path.parent.parent)
    data = {"version": RECORD_VERSION, **asdict(progress)}
    write_atomic(path, json.dumps(data, indent=1) + "\n")
    legacy = path.parent.parent / LEGACY_PROGRESS_NAME
    if path.parent.name == BOOKKEEPING_DIR and legacy.is_file():
        legacy.unlink()


@dataclass(frozen=True)
class BatchResult:
    """One batch as it went."""

    addresses: tuple[str, ...]
    droplet_ids: tuple[str, ...]
    healthy: bool
    seconds: float


@dataclass(frozen=True)
class Node:
    """One rollout target as the state has it: droplet id, image and address."""

    address: str
    droplet_id: str
    image: str
    ip: str


@dataclass(frozen=True)
class RolloutResult:
    """How a rollout ended."""

    status: Status
    target_image: str
    previous_image: str
    strategy: Strategy
    batches: tuple[BatchResult, ...]
    replaced: tuple[str, ...]
    rolled_back: tuple[str, ...]
    min_healthy: int | None
    floor: int
    elapsed: float
    message: str
    before: tuple[Node, ...] = ()
    after: tuple[Node, ...] = ()
    api_requests: int | None = None
    # Only for status "rolled-back": did the droplets put back pass the health check?
    rollback_healthy: bool | None = None

    @property
    def ok(self) -> bool:
        """True when the rollout did what was asked (or there was nothing to do)."""
        return self.status in ("done", "nothing-to-do", "dry-run")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# API budget


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
        clock: Callable[[], float] = time.monotonic,
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
    reader = getattr(cloud, "rate_limit", None)
    try:
        if reader is not None:
            return int(reader().remaining)
        # TODO(P1): Cloud.rate_limit() is asked of scaler/cloud.py's owner; until it lands the
        # headers come from its transport (request() keeps only the body).
        response = cloud._transport().send("GET", "account", None)
    except (CloudError, OSError, ValueError):
        # requests' errors are OSErrors; the budget is advice, never a reason to stop a rollout.
        return None
    value = response.headers.get("ratelimit-remaining")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Terraform plumbing


@contextlib.contextmanager
def open_terraform(settings: Settings) -> Iterator[Terraform]:
    """A Terraform for the settings; against the local cloud when SCALER_LOCAL_URL is set.

    Every tfvars file must exist (a missing one is an error naming it, never created) and the one
    that sets image_slug must be known before Terraform runs.
    """
    for path in settings.all_tfvars:
        if not path.is_file():
            raise TfvarsNotFound(path)
    settings.tfvars  # noqa: B018 (which file holds image_slug: an error here when unclear)
    env = {**os.environ, **settings.env}
    local = settings.local if settings.local is not None else bool(env.get("SCALER_LOCAL_URL"))
    extra = dict(settings.env)
    if settings.workspace:
        extra["TF_WORKSPACE"] = settings.workspace
    with contextlib.ExitStack() as stack:
        if local:
            keys = (
                "DIGITALOCEAN_TOKEN",
                "DIGITALOCEAN_ACCESS_TOKEN",
                "DIGITALOCEAN_API_URL",
                "DIGITALOCEAN_END_POINT",
                "SCALER_LOCAL_URL",
            )
            cloud_env = {k: env[k] for k in (*keys, *PROVIDER_ENV) if env.get(k)}
            extra.update(stack.enter_context(local_provider(cloud_env)))
        tf = Terraform(
            settings.terraform_dir,
            env=extra,
            engine=settings.engine,
            parallelism=settings.parallelism,
            backend_config=settings.backend_config,
        )
        tf.ensure_init()
        yield tf


def _plan(
    tf: Terraform,
    settings: Settings,
    out: Path,
    pins: Mapping[str, str] | None,
    *,
    refresh: bool = True,
    replace: Sequence[str] = (),
) -> dict[str, Any]:
    """`terraform plan -out` with the tfvars file (and pins), as plan JSON."""
    options: dict[str, Any] = {
        "input": False,
        # Batch plans skip the refresh: this rollout's first plan refreshed everything and each
        # apply records what it changed; a refresh per batch costs one API read per resource.
        "refresh": None if refresh else False,
        "out": str(out),
        "lock_timeout": settings.lock_timeout,
        "var_file": [str(f.resolve()) for f in settings.all_tfvars],
        "parallelism": settings.parallelism,
    }
    if pins is not None:
        options["var"] = {settings.pin_var: dict(pins)}
    if replace:
        options["replace"] = list(replace)
    tf.run("plan", **options)
    return tf.show_plan_json(out)


# DigitalOcean answers 403 to a load balancer change while it still applies the last one.
_LB_BUSY = re.compile(r"load_balancers/\S+\W.{0,40}\b403\b", re.IGNORECASE)
LB_BUSY_WAIT = 5.0
LB_BUSY_TIMEOUT = 180.0


def _apply(tf: Terraform, settings: Settings, planfile: Path) -> None:
    tf.run(
        "apply",
        str(planfile),
        input=False,
        lock_timeout=settings.lock_timeout,
        parallelism=settings.parallelism,
    )


@dataclass(frozen=True)
class _Now:
    """What the state says right now about targets and the load balancer."""

    images: dict[str, str]
    ids: dict[str, str]
    ips: dict[str, str]
    lb_ips: tuple[str, ...]
    check: health.HealthCheck
    names: dict[str, str] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)
    balancer: Balancer | None = None
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    disks: dict[str, int] = field(default_factory=dict)
    # for the health gate: every droplet's private address and id by public address, and the
    # balancer's id (its own view of its droplets is read by id)
    private: dict[str, str] = field(default_factory=dict)
    droplet_by_ip: dict[str, str] = field(default_factory=dict)
    lb_id: str | None = None


def _read_now(tf: Terraform, settings: Settings) -> _Now:
    try:
        state_json = json.loads(tf.state_pull())
    except NoState:
        if not settings.workspace:
            raise
        raise RolloutError(
            f"no Terraform state in workspace {settings.workspace!r} of {settings.terraform_dir}; "
            "apply the stack in that workspace first, or pass the --workspace that holds it"
        ) from None
    state = parse_state(json.dumps(state_json), "the Terraform state")
    droplets: list[Resource] = [
        r for r in state.resources if r.type == "digitalocean_droplet" and r.status == "live"
    ]
    targets = [r for r in droplets if matches_target(r.address, settings.targets)]
    by_id = {str(r.attributes.get("id")): str(r.attributes.get("ipv4_address")) for r in droplets}
    # Who is behind the balancer comes from the API (the state's droplet_ids of a tag-based
    # balancer is as old as its last refresh); the state's view only without a token.
    cloud = _api_client(settings)
    lb = find_balancer(cloud, state.resources, targets, settings.load_balancer)
    members = member_ips(lb, by_id, cloud)
    if lb.check is not None:
        check = lb.check
    else:
        check = health.healthcheck_from_state(state_json, lb.address)
    return _Now(
        images={r.address: str(r.attributes.get("image")) for r in targets},
        ids={r.address: str(r.attributes.get("id")) for r in targets},
        ips={r.address: str(r.attributes.get("ipv4_address")) for r in targets},
        lb_ips=tuple(ip for _, ip in members),
        check=check.scaled(settings.health_interval),
        names={r.address: str(r.attributes.get("name") or "") for r in targets},
        regions={r.address: str(r.attributes.get("region") or "") for r in targets},
        balancer=lb,
        tags={r.address: tuple(str(t) for t in r.attributes.get("tags") or ()) for r in targets},
        disks={
            r.address: int(r.attributes["disk"])
            for r in targets
            if isinstance(r.attributes.get("disk"), int | float)
        },
        private={
            str(r.attributes.get("ipv4_address")): str(r.attributes.get("ipv4_address_private"))
            for r in droplets
            if r.attributes.get("ipv4_address_private")
        },
        droplet_by_ip={ip: droplet_id for droplet_id, ip in by_id.items()},
        lb_id=lb.id or None,
    )


def _api_client(settings: Settings) -> Cloud | None:
    """A client for the token and end point of the rollout's environment; None without a token."""
    env = {**os.environ, **settings.env}
    token = token_from_env(env)
    if not token:
        return None
    return Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=3))


VIEW_PERIOD = 3.0
"""Seconds between reads of the balancer's view: no check runs more often (DigitalOcean's
shortest interval), and every read is an API request the token pays for."""


class _BalancerView:
    """Reads the load balancer's own view of its droplets through scaler.cloud, at most every
    VIEW_PERIOD seconds; after one answer saying the API has no view, it never asks again."""

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        env = {**os.environ, **settings.env}
        token = token_from_env(env)
        self.cloud = (
            Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=2)) if token else None
        )
        self.clock = clock
        self.offered = self.cloud is not None
        self.read_at = -math.inf
        self.seen: dict[int, bool] | None = None

    def for_now(self, now: _Now) -> health.BalancerView | None:
        """The view by public address of the droplets `now` knows; None where there is none."""
        if not self.offered or now.lb_id is None:
            return None
        lb_id, by_ip = now.lb_id, dict(now.droplet_by_ip)

        def view() -> dict[str, bool] | None:
            if self.cloud is None or not self.offered:
                return None
            if self.clock() - self.read_at >= VIEW_PERIOD:
                self.read_at = self.clock()
                try:
                    self.seen = self.cloud.lb_droplet_health(lb_id)
                except CloudError:
                    self.seen = {}
                if self.seen is None:
                    self.offered = False
            if not self.seen:
                return None  # a view naming none of the droplets is no view
            seen = self.seen
            return {ip: seen.get(int(i), False) for ip, i in by_ip.items() if i.isdigit()}

        return view


def _droplet_ids_in_state(tf: Terraform) -> set[str]:
    """Every droplet id the state knows, deposed and tainted ones too."""
    state = parse_state(tf.state_pull(), "the Terraform state")
    return {
        str(r.attributes.get("id"))
        for r in state.resources
        if r.type == "digitalocean_droplet" and r.attributes.get("id") is not None
    }


def _nodes(now: _Now) -> tuple[Node, ...]:
    return tuple(
        Node(a, now.ids[a], now.images[a], now.ips.get(a, ""))
        for a in sorted(now.images, key=_address_key)
    )


_IMAGE_REF = re.compile(r"[0-9]{1,19}|[a-z0-9][a-z0-9._-]{0,63}")


def check_image(
    settings: Settings, image: str, regions: Sequence[str], disk: int | None = None
) -> None:
    """Before any plan: the image exists, is available, is in every region the droplets run in,
    and fits their disks (`disk`: the smallest, in GB)."""
    if not _IMAGE_REF.fullmatch(image) or (image.isdigit() and int(image) <= 0):
        raise RolloutError(
            f"--image {image!r} is not an image id (a positive number) or slug; pass the "
            "snapshot id from manifest.json or `scaler snapshots list`"
        )
    env = {**os.environ, **settings.env}
    token = token_from_env(env)
    if not token:
        return  # Terraform's own provider says what is wrong with the token
    cloud = Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=3))
    try:
        found = cloud.get_image(image)
    except NotFound:
        raise RolloutError(
            f"image {image} does not exist (the API has no image {image}); nothing was "
            "planned: pass a snapshot id from manifest.json or `scaler snapshots list`"
        ) from None
    missing = [r for r in regions if r and r not in found.regions]
    if missing:
        raise RolloutError(
            f"image {image} ({found.name}) is not in {', '.join(missing)}, where the droplets "
            f"run (it is in {', '.join(found.regions) or 'no region'}); nothing was planned: "
            "transfer it there first (scaler bake --snapshot-region)"
        )
    if found.status != "available":
        raise RolloutError(
            f"image {image} ({found.name}) is {found.status}, not available; nothing was "
            "planned: wait for it, or pass another snapshot id"
        )
    if disk and found.min_disk_size > disk:
        raise RolloutError(
            f"image {image} ({found.name}) needs a disk of {found.min_disk_size} GB and the "
            f"droplets have {disk} GB; nothing was planned: bake it on a size no larger than "
            "the droplets' (scaler bake --size), or give the droplets a larger size"
        )


def declares_variable(terraform_dir: Path, name: str) -> bool:
    """True when a *.tf file of the directory declares `variable "name"`."""
    pattern = re.compile(r'^\s*variable\s+"' + re.escape(name) + r'"', re.M)
    for path in sorted(Path(terraform_dir).glob("*.tf")):
        with contextlib.suppress(OSError):
            if pattern.search(path.read_text(errors="replace")):
                return True
    return False


def _pins(now: _Now, targets: Sequence[str], rolled: Sequence[str]) -> dict[str, str]:
    """Each target not in `rolled`, pinned to the image it runs now."""
    return {_index(a): now.images[a] for a in targets if a not in rolled and a in now.images}


def pin_lookup(pin_var: str, image_var: str = IMAGE_VAR, *, for_each: bool = False) -> str:
    """The droplets' `image = ...` line that honours the pin variable."""
    key = "each.key" if for_each else "tostring(count.index)"
    return f"image = lookup(var.{pin_var}, {key}, var.{image_var})"


def pin_var_missing(pin_var: str, image_var: str = IMAGE_VAR, *, for_each: bool = False) -> str:
    """The one-line error for a stack without the per-droplet image variable rolling needs."""
    what = "for_each key" if for_each else "count index"
    return (
        f"rolling batches need the variable {pin_var!r} in the Terraform configuration, a map "
        f"from {what} to image that overrides {image_var} per droplet: add "
        f'variable "{pin_var}" (type map(string), default {{}}) and set the droplets\' '
        f"{pin_lookup(pin_var, image_var, for_each=for_each)} "
        "(as scaler's terraform/ does), or add lifecycle { ignore_changes = [image] } to the "
        "droplets (scaler then replaces each batch with -replace), or use --strategy all"
    )


_STATE_LOCKED = "Error acquiring the state lock"


def _lock_holder(stderr: str) -> str:
    """` by WHO (OPERATION)` from Terraform's lock info, when it printed one."""
    if re.search(r"Workspace is already locked|already locked for workspace creation", stderr):
        # The pg backend keeps no lock info: the "Lock Info" it prints is this run's own.
        return " by another run (the pg backend does not say whose)"
    who = re.search(r"^\s*Who:\s*(\S.*?)\s*$", stderr, re.M)
    operation = re.search(r"^\s*Operation:\s*(\S.*?)\s*$", stderr, re.M)
    if who is None:
        return ""
    return f" by {who.group(1)}" + (f" ({operation.group(1)})" if operation else "")


def _index(address: str) -> str:
    """The pin key of a target: its count index ("0") or its for_each key."""
    base, bracket, inside = address.partition("[")
    inside = inside[:-1] if inside.endswith("]") else inside
    if bracket and inside.isdigit():
        return inside
    if bracket and inside.startswith('"'):
        with contextlib.suppress(ValueError):
            key = json.loads(inside)
            if isinstance(key, str):
                return key
    raise RolloutError(
        f"{address} is a single droplet, not an instance of `count` or `for_each`; rolling "
        f'batches need several droplets of one resource ({base}[0], ... or {base}["key"])'
    )


def _for_each(targets: Sequence[str]) -> bool:
    return any(a.endswith('"]') for a in targets)


# ---------------------------------------------------------------------------------------------
# Prepare: set the image, plan, guard


@dataclass(frozen=True)
class Prepared:
    """A rollout ready to apply: its plan, the whole-change plan's changes, and tfvars backup."""

    plan: RolloutPlan
    changes: tuple[Change, ...]
    planfile: Path
    tfvars_before: bytes | None
    resumed: bool
    # the droplets ignore image changes: each batch is replaced with `-replace=ADDRESS`
    replace_each: bool = False


def _previous_image(settings: Settings, now: _Now) -> str:
    try:
        return str(get_tfvar(settings.tfvars, settings.image_var))
    except (TfvarsNotFound, VariableNotFound):
        running = set(now.images.values())
        if len(running) == 1:
            return running.pop()
        raise RolloutError(
            f"no {settings.image_var} in {settings.tfvars} and the targets run "
            f"different images ({', '.join(sorted(running))}); set it first"
        ) from None


def restore_tfvars(settings: Settings, before: bytes | None) -> None:
    """Put the tfvars file back as it was before prepare_rollout (then forget its record)."""
    if before is None:
        with contextlib.suppress(FileNotFoundError):
            settings.tfvars.unlink()
    elif not settings.tfvars.exists() or settings.tfvars.read_bytes() != before:
        write_atomic(settings.tfvars, before)
    with contextlib.suppress(RolloutError):
        progress = read_progress(settings.progress_file)
        if progress is not None and progress.status == "planning":
            settings.progress_file.unlink(missing_ok=True)


def prepare_rollout(
    tf: Terraform,
    settings: Settings,
    image: str | None,
    *,
    resume: bool = False,
    strategy: Strategy | None = None,
    batch_size: str | int = DEFAULT_BATCH,
    max_unavailable: str | int | None = None,
    canary: bool = False,
    report: Report = _quiet,
) -> Prepared:
    """Set image_slug, plan the whole change and guard it; on refusal tfvars are put back."""
    progress = read_progress(settings.progress_file)
    if resume:
        if progress is None or progress.finished:
            raise RolloutError(
                f"nothing to resume: no unfinished rollout in {settings.progress_file}"
            )
        if image is not None and image != progress.target_image:
            raise RolloutError(
                f"the unfinished rollout is to image {progress.target_image}, not {image}; "
                "drop --image to resume it"
            )
        image = progress.target_image
        strategy = progress.strategy
    elif progress is not None and not progress.finished:
        raise RolloutError(
            f"an unfinished rollout to image {progress.target_image} ({progress.status}, "
            f"{len(progress.done)} droplets done) is recorded in {settings.progress_file}; "
            "pass --resume to continue it, or remove that file to start over"
        )
    if image is None:
        raise RolloutError("no image to roll out; pass --image ID or --from-manifest PATH")
    now = _read_now(tf, settings)
    if resume:
        assert progress is not None
        previous = progress.previous_image
    else:
        previous = _previous_image(settings, now)
        check_image(
            settings, image, sorted(set(now.regions.values())), min(now.disks.values(), default=0)
        )
    plan = plan_rollout(
        now.images,
        image,
        previous,
        strategy=strategy,
        batch_size=batch_size,
        max_unavailable=max_unavailable,
        canary=canary,
    )
    before = settings.tfvars.read_bytes() if settings.tfvars.exists() else None
    planfile = settings.bookkeeping / "rollout.tfplan"
    if plan.nothing_to_do and not resume:
        return Prepared(plan, (), planfile, before, resume)
    pinned = plan.strategy == "rolling" and declares_variable(
        settings.terraform_dir, settings.pin_var
    )
    if not resume:
        # recorded before tfvars is touched: from here on a kill -9 is resumable
        now_time = time.time()
        write_progress(
            settings.progress_file,
            Progress(
                plan.target_image,
                plan.previous_image,
                plan.strategy,
                plan.batches,
                (),
                "planning",
                now_time,
                now_time,
            ),
        )
    if pinned and not resume:
        # Pins before the image: from the first byte written, a plain `terraform apply`
        # changes nothing the rollout has not (each droplet pinned to what it runs).
        set_tfvar(settings.tfvars, settings.pin_var, _pins(now, plan.targets, ()))
    set_tfvar(settings.tfvars, settings.image_var, image)
    try:
        report(f"planning the rollout of image {image} ({len(plan.replacing)} droplets)")
        now_is = f"stays {image!r}" if resume else f"is back to {previous!r}"
        try:
            plan_json = _plan(tf, settings, planfile, {} if pinned else None)
        except TerraformFailed as err:
            if _STATE_LOCKED not in err.stderr:
                raise
            raise RolloutError(
                f"Terraform's state lock is held{_lock_holder(err.stderr)} and was not released "
                f"within --lock-timeout {settings.lock_timeout}; wait for that run to finish or "
                f"raise --lock-timeout; nothing was applied and {settings.image_var} in "
                f"{settings.tfvars} {now_is}"
            ) from None
        try:
            changes = check_plan(plan_json, settings.targets)
        except PlanRefused as err:
            raise PlanRefused(
                f"refusing to roll out: {err}; nothing was applied and {settings.image_var} "
                f"in {settings.tfvars} {now_is}",
                err.offending,
            ) from None
        replace_each = ignores_image(plan, changes)
        if replace_each:
            report(
                "the droplets ignore image changes (lifecycle ignore_changes): each batch is "
                "replaced with terraform's -replace"
            )
        elif plan.strategy == "rolling" and settings.pin_var not in plan_json.get("variables", {}):
            raise RolloutError(
                pin_var_missing(
                    settings.pin_var, settings.image_var, for_each=_for_each(plan.targets)
                )
            )
    except BaseException:
        if not resume:
            restore_tfvars(settings, before)
        raise
    return Prepared(plan, changes, planfile, before, resume, replace_each)


def ignores_image(plan: RolloutPlan, changes: Sequence[Change]) -> bool:
    """True when the whole-change plan replaces none of the droplets that run another image:
    the stack's droplets have `lifecycle { ignore_changes = [image] }`."""
    replaced = {c.address for c in changes if c.kind in ("replace", "create")}
    return bool(plan.replacing) and not replaced & set(plan.replacing)


def plan_batches(
    tf: Terraform, settings: Settings, prepared: Prepared, report: Report = _quiet
) -> list[tuple[tuple[str, ...], tuple[Change, ...]]]:
    """Each batch's own plan, as if the batches before it were done (for --dry-run)."""
    plan = prepared.plan
    now = _read_now(tf, settings)
    out = []
    rolled: list[str] = []
    for number, batch in enumerate(plan.batches, 1):
        rolled.extend(batch)
        planfile = settings.bookkeeping / "batch.tfplan"
        if prepared.replace_each:
            # nothing pins the others: each batch's plan names its droplets alone
            plan_json = _plan(tf, settings, planfile, None, refresh=False, replace=batch)
            changes = check_plan(plan_json, settings.targets, expect=batch)
        else:
            pins = {_index(a): now.images[a] for a in plan.targets if a not in rolled}
            plan_json = _plan(tf, settings, planfile, pins, refresh=False)
            changes = check_plan(plan_json, settings.targets, expect=rolled)
        report(f"batch {number}/{len(plan.batches)}: plan replaces {', '.join(batch)}")
        out.append((batch, changes))
    return out


# ---------------------------------------------------------------------------------------------
# Apply


class _Run:
    """The state of one apply_rollout call."""

    def __init__(
        self,
        tf: Terraform,
        settings: Settings,
        prepared: Prepared,
        report: Report,
        should_stop: Callable[[], bool],
        clock: Callable[[], float],
        budget: ApiBudget | None = None,
    ) -> None:
        self.tf = tf
        self.budget = budget
        self.before: tuple[Node, ...] = ()
        self.settings = settings
        self.plan = prepared.plan
        self.prepared = prepared
        self.report = report
        self.should_stop = should_stop
        self.clock = clock
        self.start = clock()
        self.batches: list[BatchResult] = []
        self.replaced: list[str] = []
        self.min_healthy: int | None = None
        old = read_progress(settings.progress_file) if prepared.resumed else None
        self.old = old
        self.done: list[str] = list(old.done) if old else []
        self.started = old.started if old else time.time()
        self.creating: tuple[Creating, ...] = old.creating if old else ()
        # droplet ids seen passing the health check: a resume checks every other one
        self.healthy: set[str] = set(old.healthy) if old else set()
        self.replace_each = prepared.replace_each
        self.pinned = (
            self.plan.strategy == "rolling"
            and not self.replace_each
            and declares_variable(settings.terraform_dir, settings.pin_var)
        )
        self.views = _BalancerView(settings, clock)
        self.via = health.ssh_prober(*settings.probe_ssh) if settings.probe_ssh else None

    def remaining(self) -> float:
        if self.settings.deadline is None:
            return math.inf
        return self.settings.deadline - (self.clock() - self.start)

    def save(self, status: str) -> None:
        write_progress(
            self.settings.progress_file,
            Progress(
                target_image=self.plan.target_image,
                previous_image=self.plan.previous_image,
                strategy=self.plan.strategy,
                batches=self.plan.batches,
                done=tuple(self.done),
                status=status,
                started=self.started,
                updated=time.time(),
                creating=self.creating,
                healthy=tuple(sorted(self.healthy)),
            ),
        )

    def left_in_tfvars(self) -> str:
        """What terraform.tfvars holds now, for a rollout that stops before it is done."""
        settings = self.settings
        try:
            image = get_tfvar(settings.tfvars, settings.image_var)
            pins = get_tfvar(settings.tfvars, settings.pin_var) if self.pinned else {}
        except ScalerError:
            return ""
        text = f"{settings.tfvars} holds {settings.image_var} = {image}"
        if isinstance(pins, dict) and pins:
            pinned = ", ".join(f"[{k}] {v}" for k, v in sorted(pins.items()))
            text += f" and {settings.pin_var} pins {pinned}"
        if self.replace_each:
            text += " and the droplets ignore image changes"
        return text + ": a plain terraform apply changes nothing this rollout has not changed"

    def pin_what_runs(self) -> str:
        """After a failed rollback: pin every droplet to the image it runs, so a plain
        terraform apply changes nothing; what tfvars holds now ("" when that is unknown)."""
        if not self.pinned:
            return self.left_in_tfvars()
        try:
            now = _read_now(self.tf, self.settings)
            pins = {
                _index(a): now.images[a]
                for a in self.plan.targets
                if now.images.get(a) not in (None, self.plan.previous_image)
            }
            set_tfvar(self.settings.tfvars, self.settings.pin_var, pins)
        except (ScalerError, OSError):
            return ""
        return self.left_in_tfvars()

    def reconcile(self) -> None:
        """After a kill: remove droplets an interrupted batch created outside the state."""
        if not self.creating:
            return
        env = {**os.environ, **self.settings.env}
        token = token_from_env(env)
        if not token:
            self.report("cannot look for droplets the interrupted batch created: no API token")
            return
        cloud = Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=3))
        in_state = _droplet_ids_in_state(self.tf)
        names = {c.name: c for c in self.creating}
        for droplet in cloud.droplets():
            entry = names.get(droplet.name)
            if entry is None or str(droplet.id) in in_state:
                continue
            created = created_at_epoch(droplet.created_at)
            # created by the dead apply (not before it started): scaler's to remove
            if created is None or created < entry.since - 5:
                continue
            self.report(
                f"removing droplet {droplet.id} ({droplet.name}): the interrupted apply of "
                f"{entry.address} created it, but the Terraform state never recorded it"
            )
            cloud.delete_droplet(droplet.id)
        self.creating = ()
        self.save("running")

    def droplet_tags(self, droplet_id: str) -> tuple[str, ...] | None:
        """A droplet's tags as the API has them now (the state's are as old as its refresh)."""
        cloud = _api_client(self.settings)
        if cloud is None or not droplet_id.isdigit():
            return None
        try:
            return cloud.get_droplet(int(droplet_id)).tags
        except CloudError:
            return None

    def observe(self, count: int) -> None:
        self.min_healthy = count if self.min_healthy is None else min(self.min_healthy, count)

    def result(
        self,
        status: Status,
        message: str,
        rolled_back: Sequence[str] = (),
        rollback_healthy: bool | None = None,
    ) -> RolloutResult:
        after: tuple[Node, ...] = ()
        if self.before:
            with contextlib.suppress(ScalerError):
                after = _nodes(_read_now(self.tf, self.settings))
        budget = self.budget
        used = sum(u.requests for u in budget.uses) if budget and budget.uses else None
        return RolloutResult(
            status=status,
            target_image=self.plan.target_image,
            previous_image=self.plan.previous_image,
            strategy=self.plan.strategy,
            batches=tuple(self.batches),
            replaced=tuple(self.replaced),
            rolled_back=tuple(rolled_back),
            min_healthy=self.min_healthy,
            floor=self.plan.floor,
            elapsed=round(self.clock() - self.start, 3),
            message=message,
            before=self.before,
            after=after,
            api_requests=used,
            rollback_healthy=rollback_healthy,
        )

    def pace(self, number: int, batch: Sequence[str]) -> None:
        """Wait until the batch's projected API requests fit the budget."""
        budget = self.budget
        if budget is None:
            return
        budget.mark()
        wait = min(budget.pause_for(len(batch)), max(0.0, self.remaining()))
        if wait <= 0:
            return
        self.report(
            f"batch {number}/{len(self.plan.batches)}: pausing {wait:.0f}s for the API budget "
            f"({budget.used_in_window()} requests in the last {budget.window:g}s, this batch "
            f"about {budget.projected(len(batch))}, budget {budget.per_minute})"
        )
        until = self.clock() + wait
        while not self.should_stop() and (left := until - self.clock()) > 0:
            time.sleep(min(left, 0.5))

    def wait_capacity(self, label: str, batch: Sequence[str]) -> None:
        """Wait until the droplets outside the batch keep the floor; _CapacityLow if never."""
        settings = self.settings
        limit = self.clock() + min(settings.health_timeout, max(0.0, self.remaining()))
        said = False
        while True:
            now = _read_now(self.tf, settings)
            leaving = {now.ips[a] for a in batch if a in now.ips}
            behind = [ip for ip in now.lb_ips if ip not in leaving]
            view = self.views.for_now(now)
            seen = view() if view is not None else None
            passing = [
                ip
                for ip in behind
                if (
                    seen.get(ip, False)
                    if seen is not None
                    else health.count_healthy(
                        [ip], now.check, settings.port_map, private=now.private, via=self.via
                    )
                )
            ]
            healthy = len(passing)
            self.observe(
                healthy
                + health.count_healthy(
                    sorted(leaving),
                    now.check,
                    settings.port_map,
                    private=now.private,
                    balancer=view,
                    via=self.via,
                )
            )
            if healthy >= self.plan.floor:
                return
            low = _short_of_floor(
                label, batch, healthy, self.plan, now, behind, passing, self.droplet_tags
            )
            if self.should_stop():
                raise _Stopped()
            if self.clock() >= limit:
                raise _CapacityLow(
                    f"{low}; nothing of this batch was changed: fix that and run "
                    "scaler rollout --resume"
                )
            if not said:
                self.report(f"{low}; waiting up to {max(0.0, limit - self.clock()):.0f}s")
                said = True
            time.sleep(now.check.interval)

    def run_batch(self, number: int, batch: tuple[str, ...]) -> BatchResult:
        settings, tf = self.settings, self.tf
        began = self.clock()
        label = f"batch {number}/{len(self.plan.batches)}"
        planfile = settings.bookkeeping / "batch.tfplan"
        pins: dict[str, str] | None = None
        if self.plan.strategy == "all" and not self.replace_each:
            planfile = self.prepared.planfile
            self.report(f"{label}: applying the plan (create before destroy)")
        else:
            if self.plan.strategy != "all":
                self.wait_capacity(label, batch)
            now = _read_now(tf, settings)
            replace: list[str] = []
            if self.replace_each:
                # lifecycle ignore_changes = [image]: nothing to pin, the batch is named
                replace = [a for a in batch if now.images.get(a) != self.plan.target_image]
            else:
                keep = [a for a in self.plan.targets if a not in batch and a not in self.done]
                pins = {_index(a): now.images[a] for a in keep if a in now.images}
            if self.pinned and pins is not None:
                # tfvars says what this batch applies: a plain apply would do the same
                set_tfvar(settings.tfvars, settings.pin_var, pins)
            self.report(f"{label}: planning {', '.join(batch)}")
            plan_json = _plan(tf, settings, planfile, pins, refresh=False, replace=replace)
            expect = [a for a in batch if now.images.get(a) != self.plan.target_image]
            check_plan(plan_json, settings.targets, expect=expect)
            self.report(f"{label}: applying")
        self.replaced.extend(batch)
        before = _read_now(tf, settings)
        since = time.time()
        self.creating = tuple(
            Creating(a, before.ids.get(a, ""), before.names.get(a, ""), since) for a in batch
        )
        self.save("running")  # written before the apply: a kill -9 during it is found later
        try:
            self.apply_batch(label, planfile, pins)
        finally:
            if self.budget is not None:
                self.budget.mark(len(batch))
        self.creating = ()
        now = _read_now(tf, settings)
        ips = [now.ips[a] for a in batch]
        self.report(
            f"{label}: waiting for {len(ips)} droplets to pass {now.check.protocol}:"
            f"{now.check.port}{now.check.path if now.check.protocol != 'tcp' else ''} "
            f"{now.check.healthy_threshold} times, every {now.check.interval:g}s"
        )
        view = self.views.for_now(now)
        outcome = health.wait_healthy(
            ips,
            now.check,
            port_map=settings.port_map,
            timeout=max(0.0, min(settings.health_timeout, self.remaining())),
            grace=settings.health_grace,
            private=now.private,
            balancer=view,
            via=self.via,
        )
        self.observe(
            health.count_healthy(
                list(now.lb_ips),
                now.check,
                settings.port_map,
                private=now.private,
                balancer=view,
                via=self.via,
            )
        )
        ids = tuple(now.ids[a] for a in batch)
        self.healthy.update(now.ids[a] for a in batch if now.ips[a] in outcome.healthy)
        result = BatchResult(batch, ids, outcome.ok, round(self.clock() - began, 3))
        self.batches.append(result)
        if not outcome.ok:
            sick = [a for a in batch if now.ips[a] in outcome.unhealthy + outcome.pending]
            how = "failed its health check" if outcome.unhealthy else "did not become healthy"
            details = "; ".join(outcome.why(now.ips[a], a) for a in sick)
            raise _BatchFailed(f"{label}: {', '.join(sick)} {how} ({details})")
        self.report(f"{label}: healthy ({result.seconds:.1f}s)")
        return result

    def apply_batch(self, label: str, planfile: Path, pins: dict[str, str] | None) -> None:
        """Apply; while the load balancer refuses the change because it is still applying the
        previous one (DigitalOcean's 403), wait, plan what is left and apply that (the batches
        and the rollback alike)."""
        settings, tf = self.settings, self.tf
        deadline = self.clock() + LB_BUSY_TIMEOUT
        while True:
            try:
                _apply(tf, settings, planfile)
                return
            except TerraformFailed as err:
                if not _LB_BUSY.search(err.stderr) or self.clock() >= deadline:
                    raise
            self.report(f"{label}: the load balancer is still applying its last change; waiting")
            time.sleep(LB_BUSY_WAIT)
            # The droplets were made; what is left is the balancer's update and the old ones.
            plan_json = _plan(tf, settings, planfile, pins)
            check_plan(plan_json, settings.targets)

    def rollback(self, reason: str) -> RolloutResult:
        settings = self.settings
        if not settings.rollback:
            self.save("failed")
            left = self.left_in_tfvars()
            return self.result(
                "failed",
                f"{reason}; left as it is (--no-rollback): image_slug stays "
                f"{self.plan.target_image}, run scaler rollout --resume to retry"
                + (f"; {left}" if left else ""),
            )
        self.report(f"{reason}; rolling back to image {self.plan.previous_image}")
        set_tfvar(settings.tfvars, settings.image_var, self.plan.previous_image)
        if self.pinned:
            set_tfvar(settings.tfvars, settings.pin_var, {})
        planfile = settings.bookkeeping / "rollback.tfplan"
        try:
            now = _read_now(self.tf, settings)
            back = [a for a in self.plan.targets if now.images.get(a) != self.plan.previous_image]
            replace = back if self.replace_each else []
            plan_json = _plan(self.tf, settings, planfile, None, replace=replace)
            check_plan(plan_json, settings.targets, expect=back)
            if back:
                self.apply_batch("rollback", planfile, None)
            now = _read_now(self.tf, settings)
            outcome = health.wait_healthy(
                [now.ips[a] for a in back],
                now.check,
                port_map=settings.port_map,
                timeout=settings.health_timeout,
                grace=settings.health_grace,
                private=now.private,
                balancer=self.views.for_now(now),
                via=self.via,
            )
        except (ScalerError, OSError) as err:
            self.save("failed")
            left = self.pin_what_runs()
            return self.result(
                "failed",
                f"{reason}; the rollback failed too: {err}; "
                + (left or f"image_slug is back to {self.plan.previous_image}")
                + "; fix it and run scaler rollout --resume",
            )
        self.done = []
        self.save("rolled-back")
        state = "healthy" if outcome.ok else "NOT healthy"
        return self.result(
            "rolled-back",
            f"{reason}; rolled back {len(back)} droplets to image "
            f"{self.plan.previous_image} ({state})",
            back,
            rollback_healthy=outcome.ok,
        )


def _short_of_floor(
    label: str,
    batch: Sequence[str],
    healthy: int,
    plan: RolloutPlan,
    now: _Now,
    behind: Sequence[str],
    passing: Sequence[str],
    tags_of: Callable[[str], tuple[str, ...] | None] = lambda _: None,
) -> str:
    """Why fewer than the floor would stay healthy behind the balancer, and what fixes it;
    `tags_of(droplet id)` gives a droplet's tags as the API has them now (None: unknown)."""
    lb = now.balancer
    text = (
        f"{label}: only {healthy} healthy droplets would stay behind the "
        f"{lb.describe() if lb else 'load balancer'} while {', '.join(batch)} is replaced, "
        f"under the floor of {plan.floor} (--max-unavailable {plan.max_unavailable})"
    )
    by_ip = {ip: a for a, ip in now.ips.items()}
    sick = [by_ip.get(ip, ip) for ip in behind if ip not in passing]
    if sick:
        check = now.check
        where = f"{check.protocol}:{check.port}{check.path if check.protocol != 'tcp' else ''}"
        text += f"; not healthy: {', '.join(sick)} (the balancer's check {where})"
    lb_ips = set(now.lb_ips)

    def _tags(address: str) -> tuple[str, ...]:
        live = tags_of(now.ids.get(address, ""))
        return now.tags.get(address, ()) if live is None else live

    outside = [
        a for a in plan.targets if a not in batch and a in now.ips and now.ips[a] not in lb_ips
    ]
    if outside and lb is not None and lb.tag:
        carry = "; ".join(f"{a} has {', '.join(_tags(a)) or 'no tags'}" for a in outside)
        text += (
            f"; not behind it: {', '.join(outside)}: the balancer takes the droplets tagged "
            f"{lb.tag!r} ({carry}): add {lb.tag!r} to the droplets' tags"
        )
    elif outside:
        text += (
            f"; not behind it: {', '.join(outside)}: add them to the balancer's droplet_ids "
            "(or give it a droplet_tag the droplets carry)"
        )
    if not sick and not outside:
        text += (
            f"; it has {len(behind)} droplets besides this batch: raise --max-unavailable or "
            "run more droplets"
        )
    if lb is not None and lb.source == "state":
        text += " (who is behind it is the Terraform state's view: no API token to ask)"
    return text


class _BatchFailed(Exception):
    pass


class _CapacityLow(Exception):
    pass


class _Stopped(Exception):
    pass


def apply_rollout(
    tf: Terraform,
    settings: Settings,
    prepared: Prepared,
    *,
    report: Report = _quiet,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    budget: ApiBudget | None = None,
) -> RolloutResult:
    """Replace the planned batches, each checked healthy; roll back on failure.

    With `budget`, each batch first waits until its projected API requests fit the budget.
    """
    run = _Run(tf, settings, prepared, report, should_stop, clock, budget)
    plan = prepared.plan
    if plan.nothing_to_do and not prepared.resumed:
        return run.result(
            "nothing-to-do",
            f"every target already runs image {plan.target_image}; nothing changed",
        )
    if prepared.resumed:
        run.reconcile()
    run.before = _nodes(_read_now(tf, settings))
    run.save("running")
    if plan.nothing_to_do and prepared.changes:
        # a resume after the last batch: what the dead apply left (a deposed droplet, the
        # balancer's list) is finished by the whole plan the guard has passed
        report("finishing what the interrupted apply left: " + _describe(prepared.changes))
        try:
            run.apply_batch("finishing", prepared.planfile, None)
        except TerraformFailed as err:
            run.save("failed")
            return run.result("failed", f"finishing the interrupted apply failed: {err}")
    for number, batch in enumerate(plan.batches, 1):
        if all(a in run.done for a in batch):
            continue
        if should_stop():
            run.save("interrupted")
            return run.result("interrupted", _interrupted(run))
        if run.remaining() <= 0:
            return run.rollback(f"the deadline passed before batch {number}")
        run.pace(number, batch)
        if should_stop():
            run.save("interrupted")
            return run.result("interrupted", _interrupted(run))
        try:
            run.run_batch(number, batch)
        except _BatchFailed as failed:
            return run.rollback(str(failed))
        except _Stopped:
            run.save("interrupted")
            return run.result("interrupted", _interrupted(run))
        except _CapacityLow as low:
            # Nothing of this batch was touched and the batches before it are healthy: no
            # rollback; the record stays resumable.
            run.save("waiting-for-capacity")
            left = run.left_in_tfvars()
            return run.result("failed", str(low) + (f"; {left}" if left else ""))
        except TerraformFailed as err:
            if should_stop():
                run.save("interrupted")
                return run.result("interrupted", _interrupted(run))
            return run.rollback(f"batch {number}: {err}")
        except PlanRefused as err:
            return run.rollback(f"batch {number}: {err}")
        run.done.extend(batch)
        run.save("running")
    # Verify: every target runs the image and passes the check, and nothing is left to do.
    now = _read_now(tf, settings)
    wrong = [a for a in plan.targets if now.images.get(a) != plan.target_image]
    final = health.wait_healthy(
        [now.ips[a] for a in plan.targets],
        now.check,
        port_map=settings.port_map,
        timeout=settings.health_timeout,
        grace=settings.health_grace,
        private=now.private,
        balancer=run.views.for_now(now),
        via=run.via,
    )
    run.observe(len(final.healthy))
    if wrong or not final.ok:
        sick = [a for a in plan.targets if now.ips[a] in final.unhealthy + final.pending]
        problem = (
            f"not on image: {', '.join(wrong)}"
            if wrong
            else "not every droplet is healthy: "
            + "; ".join(final.why(now.ips[a], a) for a in sick)
        )
        return run.rollback(f"verification failed ({problem})")
    run.healthy.update(now.ids[a] for a in plan.targets)
    if run.pinned:
        set_tfvar(settings.tfvars, settings.pin_var, {})  # every droplet runs image_slug now
    run.save("done")
    return run.result(
        "done",
        f"{len(run.replaced)} droplets now run image {plan.target_image}, all healthy",
    )


def _interrupted(run: _Run) -> str:
    left = run.left_in_tfvars()
    return (
        f"interrupted after {len(run.done)} of {len(run.plan.replacing)} droplets; "
        "run scaler rollout --resume to continue" + (f"; {left}" if left else "")
    )


def _describe(changes: Sequence[Change]) -> str:
    return ", ".join(f"{c.kind} {c.address}" + (" (deposed)" if c.deposed else "") for c in changes)


def stale_rollout_files(directory: Path) -> list[tuple[Path, str, bool]]:
    """Rollout bookkeeping a dead run left in a Terraform directory: (path, why, removable)."""
    from scaler import lock

    found: list[tuple[Path, str, bool]] = []
    if lock.holder(Path(directory)) is not None:
        return found  # a rollout is at work there
    folder = Path(directory) / BOOKKEEPING_DIR
    for plan in [
        *sorted(folder.glob("*.tfplan")),
        *sorted(Path(directory).glob("scaler-roll*.tfplan")),
    ]:
        found.append((plan, "plan file of a dead rollout", True))
    record = folder / PROGRESS_NAME
    progress = read_progress(record)
    if progress is not None and not progress.finished:
        found.append(
            (
                record,
                f"unfinished rollout to image {progress.target_image} ({progress.status}); "
                f"run scaler rollout --resume -C {directory}",
                False,
            )
        )
    return found
