"""The stack as Terraform and the API see it: Terraform runs, what the targets run now."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scaler import health
from scaler.balancer import Balancer, find_balancer, member_ips
from scaler.cloud import (
    Cloud,
    CloudError,
    NotFound,
    Pacing,
    endpoint_from,
    token_from_env,
)
from scaler.events import Clock
from scaler.localtarget import detect_local_target
from scaler.rollout.plan import RolloutError, address_key, matches_target, pin_key
from scaler.rollout.record import Node
from scaler.rollout.settings import Settings
from scaler.state import Resource, parse_state
from scaler.terraform import NoState, Result, Terraform, local_provider
from scaler.tfvars import (
    TfvarsNotFound,
)

PROVIDER_ENV = ("SCALER_LOCAL_PROVIDER_POLL", "SCALER_POLL_TIMEOUT")


class Runner(Protocol):
    """What a rollout uses of scaler.terraform.Terraform (a test hands in a fake)."""

    def run(self, command: str, *args: str, ok: Sequence[int] = (0,), **options: Any) -> Result:
        """Run `terraform COMMAND [options] [args]`; TerraformFailed outside `ok`."""
        ...

    def show_plan_json(self, planfile: Path) -> dict[str, Any]:
        """The saved plan as Terraform's JSON plan representation."""
        ...

    def state_pull(self) -> str:
        """The state as JSON text; NoState when there is none."""
        ...


@contextlib.contextmanager
def open_terraform(settings: Settings) -> Iterator[Terraform]:
    """A Terraform for the settings; against the local cloud when the API end point is one.

    Every tfvars file must exist (a missing one is an error naming it, never created) and the one
    that sets image_slug must be known before Terraform runs.
    """
    for path in settings.all_tfvars:
        if not path.is_file():
            raise TfvarsNotFound(path)
    settings.tfvars  # noqa: B018 (which file holds image_slug: an error here when unclear)
    env = {**os.environ, **settings.env}
    local = settings.local
    if local is None:
        # the built-in local cloud, known by what its end point says of itself
        local = detect_local_target(endpoint_from(None, env)) is not None
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


def tf_plan(
    tf: Runner,
    settings: Settings,
    out: Path,
    pins: Mapping[str, str] | None,
    *,
    refresh: bool = True,
    replace: Sequence[str] = (),
    target: Sequence[str] = (),
) -> dict[str, Any]:
    """`terraform plan -out` with the tfvars file (and pins), as plan JSON; `target`: only
    those addresses (and what they depend on)."""
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
    if target:
        options["target"] = list(target)
    tf.run("plan", **options)
    return tf.show_plan_json(out)


# DigitalOcean answers 403 to a load balancer change while it still applies the last one.
LB_BUSY = re.compile(r"load_balancers/\S+\W.{0,40}\b403\b", re.IGNORECASE)


LB_BUSY_WAIT = 5.0


LB_BUSY_TIMEOUT = 180.0


def tf_apply(tf: Runner, settings: Settings, planfile: Path) -> None:
    tf.run(
        "apply",
        str(planfile),
        input=False,
        lock_timeout=settings.lock_timeout,
        parallelism=settings.parallelism,
    )


@dataclass(frozen=True)
class Now:
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
    # the balancer's http_idle_timeout_seconds where the state says (the default drain)
    idle_timeout: float | None = None


def read_now(tf: Runner, settings: Settings) -> Now:
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
    cloud = api_client(settings)
    lb = find_balancer(cloud, state.resources, targets, settings.load_balancer)
    members = member_ips(lb, by_id, cloud)
    if lb.check is not None:
        check = lb.check
    else:
        check = health.healthcheck_from_state(state_json, lb.address)
    idle = next(
        (
            r.attributes.get("http_idle_timeout_seconds")
            for r in state.resources
            if lb.address is not None and r.address == lb.address
        ),
        None,
    )
    return Now(
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
        idle_timeout=float(idle) if isinstance(idle, int | float) and idle > 0 else None,
    )


def api_client(settings: Settings) -> Cloud | None:
    """A client for the token and end point of the rollout's environment; None without a token."""
    env = {**os.environ, **settings.env}
    token = token_from_env(env)
    if not token:
        return None
    return Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=3))


VIEW_PERIOD = 3.0
"""Seconds between reads of the balancer's view: no check runs more often (DigitalOcean's
shortest interval), and every read is an API request the token pays for."""


class BalancerViews:
    """Reads the load balancer's own view of its droplets through scaler.cloud, at most every
    VIEW_PERIOD seconds; after one answer saying the API has no view, it never asks again."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        env = {**os.environ, **settings.env}
        token = token_from_env(env)
        self.cloud = (
            Cloud(token, endpoint_from(None, env), pacing=Pacing(retries=2)) if token else None
        )
        self.clock = clock
        self.offered = self.cloud is not None
        self.read_at = -math.inf
        self.seen: dict[int, bool] | None = None

    def for_now(self, now: Now) -> health.BalancerView | None:
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


def droplet_ids_in_state(tf: Runner) -> set[str]:
    """Every droplet id the state knows, deposed and tainted ones too."""
    state = parse_state(tf.state_pull(), "the Terraform state")
    return {
        str(r.attributes.get("id"))
        for r in state.resources
        if r.type == "digitalocean_droplet" and r.attributes.get("id") is not None
    }


def nodes_of(now: Now) -> tuple[Node, ...]:
    return tuple(
        Node(a, now.ids[a], now.images[a], now.ips.get(a, ""))
        for a in sorted(now.images, key=address_key)
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


def pins_for(now: Now, targets: Sequence[str], rolled: Sequence[str]) -> dict[str, str]:
    """Each target not in `rolled`, pinned to the image it runs now."""
    return {pin_key(a): now.images[a] for a in targets if a not in rolled and a in now.images}


STATE_LOCKED = "Error acquiring the state lock"


def lock_holder(stderr: str) -> str:
    """` by WHO (OPERATION)` from Terraform's lock info, when it printed one."""
    if re.search(r"Workspace is already locked|already locked for workspace creation", stderr):
        # The pg backend keeps no lock info: the "Lock Info" it prints is this run's own.
        return " by another run (the pg backend does not say whose)"
    who = re.search(r"^\s*Who:\s*(\S.*?)\s*$", stderr, re.M)
    operation = re.search(r"^\s*Operation:\s*(\S.*?)\s*$", stderr, re.M)
    if who is None:
        return ""
    return f" by {who.group(1)}" + (f" ({operation.group(1)})" if operation else "")
