"""Which droplets are behind the load balancer, read from the cloud rather than Terraform's state.

A stack attaches its web droplets to the balancer in one of three ways: `droplet_ids` (the
droplets' ids, in the configuration), `droplet_tag` (the balancer takes every droplet carrying
the tag), or not at all (the balancer is made outside the stack and selects the droplets by
tag). Terraform's state only learns the balancer's droplet list on a refresh, so after a batch
it still names deleted droplets for a tag-based balancer, and it knows nothing of a balancer
outside the stack. DigitalOcean's API fills in `droplet_ids` for every balancer, tag-based ones
included: scaler asks it, every time it needs the membership. Without a token (or when the API
does not answer) the state's view is used, and said to be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scaler.cloud import Cloud, CloudError, NotFound
from scaler.errors import ScalerError
from scaler.health import LB_TYPE, HealthCheck, check_from_fields
from scaler.state import Resource

Source = Literal["api", "state"]


class BalancerError(ScalerError):
    """The load balancer in front of the rollout targets cannot be found or read."""


@dataclass(frozen=True)
class Balancer:
    """The load balancer in front of the targets and the droplets it has now."""

    id: str
    name: str
    # its Terraform address; None for a balancer made outside the stack
    address: str | None
    # the tag it selects droplets by ("" when it lists droplet ids)
    tag: str
    droplet_ids: tuple[str, ...]
    source: Source
    # its health check as the API has it (None: read it from the state)
    check: HealthCheck | None = None

    def describe(self) -> str:
        """`load balancer wordpress-lb (digitalocean_loadbalancer.wp_lb, tag wp_node)`."""
        parts = [self.address or "outside the Terraform stack"]
        if self.tag:
            parts.append(f"droplet_tag {self.tag}")
        return f"load balancer {self.name or self.id} ({', '.join(parts)})"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def check_from_api(raw: Mapping[str, Any]) -> HealthCheck:
    """A balancer's `health_check` as the API gives it, as a HealthCheck."""
    return check_from_fields(
        raw,
        lambda protocol: BalancerError(
            f"the balancer's health check protocol {protocol!r} is not known"
        ),
    )


def _from_api(raw: Mapping[str, Any], address: str | None) -> Balancer:
    return Balancer(
        id=_text(raw.get("id")),
        name=_text(raw.get("name")),
        address=address,
        tag=_text(raw.get("tag")),
        droplet_ids=tuple(_text(i) for i in raw.get("droplet_ids") or ()),
        source="api",
        check=None if address else check_from_api(raw.get("health_check") or {}),
    )


def _from_state(lb: Resource) -> Balancer:
    attributes = lb.attributes
    return Balancer(
        id=_text(attributes.get("id")),
        name=_text(attributes.get("name")),
        address=lb.address,
        tag=_text(attributes.get("droplet_tag")),
        droplet_ids=tuple(_text(i) for i in attributes.get("droplet_ids") or ()),
        source="state",
    )


def find_balancer(
    cloud: Cloud | None,
    resources: Iterable[Resource],
    targets: Sequence[Resource],
    address: str | None = None,
) -> Balancer:
    """The balancer in front of `targets` with its droplets now: the stack's (by `address` when
    given, else its only one), else the API's balancer selecting the targets' tag or ids."""
    in_state = [r for r in resources if r.type == LB_TYPE and r.status == "live"]
    have = [r.address for r in in_state]
    if address is not None:
        in_state = [r for r in in_state if r.address == address]
        if not in_state:
            raise BalancerError(
                f"no load balancer {address} in the Terraform state (have: "
                f"{', '.join(have) or 'none'}); pass --load-balancer with one of them"
            )
    if len(in_state) > 1:
        raise BalancerError(
            f"the Terraform state has {len(in_state)} load balancers ({', '.join(have)}); "
            "pass --load-balancer ADDRESS for the one in front of the rollout targets"
        )
    if in_state:
        lb = in_state[0]
        known = _from_state(lb)
        if cloud is None or not known.id:
            return known
        try:
            raw = cloud.request("GET", f"load_balancers/{known.id}")["load_balancer"]
        except NotFound:
            raise BalancerError(
                f"{lb.address} (id {known.id}) is in the Terraform state but not in the API; "
                "run terraform apply to make it again, then the rollout"
            ) from None
        except (CloudError, KeyError, TypeError):
            return known  # the state's view; the API is only asked for a fresher one
        return _from_api(raw, lb.address)
    return _outside_the_stack(cloud, targets)


def _outside_the_stack(cloud: Cloud | None, targets: Sequence[Resource]) -> Balancer:
    ids = {_text(t.attributes.get("id")) for t in targets}
    tags = {str(tag) for t in targets for tag in t.attributes.get("tags") or ()}
    if cloud is None:
        raise BalancerError(
            "the Terraform state has no load balancer, and without an API token scaler cannot "
            "find one that selects the droplets by tag: set DIGITALOCEAN_TOKEN"
        )
    try:
        raws = cloud.request("GET", "load_balancers?per_page=200").get("load_balancers") or []
    except CloudError as err:
        raise BalancerError(
            f"cannot list the load balancers to find the one in front: {err}"
        ) from None
    found = [
        raw
        for raw in raws
        if (raw.get("tag") and str(raw["tag"]) in tags)
        or ids & {_text(i) for i in raw.get("droplet_ids") or ()}
    ]
    if len(found) != 1:
        named = ", ".join(sorted(str(r.get("name")) for r in found))
        which = f"{len(found)} ({named})" if found else "none"
        raise BalancerError(
            f"the Terraform state has no load balancer, and {which} of the API's "
            f"{len(raws)} load balancers select the rollout targets (by their tags "
            f"{', '.join(sorted(tags)) or '(none)'} or ids); a rolling rollout needs the one "
            "in front of them: add it to the stack (droplet_ids or droplet_tag), or give the "
            "droplets the tag its droplet_tag names"
        )
    return _from_api(found[0], None)


def member_ips(
    balancer: Balancer, known: Mapping[str, str], cloud: Cloud | None
) -> tuple[tuple[str, str], ...]:
    """(droplet id, public address) of each droplet behind the balancer; `known` maps the
    state's droplet ids to their addresses, the API answers for the others (gone: left out)."""
    out: list[tuple[str, str]] = []
    for droplet_id in balancer.droplet_ids:
        if droplet_id in known:
            out.append((droplet_id, known[droplet_id]))
        elif cloud is not None and balancer.source == "api" and droplet_id.isdigit():
            try:
                ip = cloud.get_droplet(int(droplet_id)).public_ip
            except CloudError:
                continue  # deleted meanwhile: behind nothing
            if ip:
                out.append((droplet_id, ip))
    return tuple(out)
