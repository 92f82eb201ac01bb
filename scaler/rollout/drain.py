"""Draining: a batch's old droplets leave the balancer's targets before its apply destroys them.

DigitalOcean's balancers have no drain setting, so scaler takes the old droplets out itself,
through the API: a `droplet_ids` balancer loses them (DELETE /v2/load_balancers/{id}/droplets),
a `droplet_tag` balancer stops selecting them when they lose its tag (DELETE
/v2/tags/{tag}/resources). The balancer sends no new request to them; a request in flight
finishes (DigitalOcean's balancer, and the local cloud's HAProxy, which reloads softly: the old
process keeps its connections until they end). After `--drain` seconds (default: the balancer's
`http_idle_timeout_seconds`, the longest a request through it can last) the batch's apply
replaces them. Terraform stays the source of truth: the apply's own update of the balancer's
droplet_ids (or the new droplets' tags) is what the balancer ends with, and the old droplets are
destroyed by that apply, so a plan afterwards shows no changes.

Rolling batches drain, and so does --strategy all behind a balancer once its new droplets serve
beside the old ones (scaler.rollout.surge); only through the API (without a token the apply takes
the old droplets out and destroys them at once). The rollback of a failed batch does not drain (it
puts the old image back as fast as it can); an --abort does, as it runs the same batches. Untagging
takes a droplet out of whatever else selects that tag too (a firewall admitting the web droplets by
tag, say): a stack whose balancer uses droplet_ids is not affected.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaler.balancer import Balancer
from scaler.cloud import Cloud, endpoint_from
from scaler.localtarget import detect_local_target

DEFAULT_IDLE_TIMEOUT = 60.0
"""DigitalOcean's http_idle_timeout_seconds when the balancer does not say."""

LOCAL_DRAIN = 5.0
"""The default drain on scaler's local cloud: its balancers run on this machine, requests through
them are short, and a demo should not wait a minute a batch (--drain 60s waits as DigitalOcean)."""


def take_out(cloud: Cloud, balancer: Balancer, droplet_ids: Sequence[str]) -> str:
    """Take the droplets out of the balancer's targets through the API; how, in words."""
    ids = [int(i) for i in droplet_ids if i.isdigit()]
    if balancer.tag:
        resources = [{"resource_id": str(i), "resource_type": "droplet"} for i in ids]
        cloud.request("DELETE", f"tags/{balancer.tag}/resources", {"resources": resources})
        return f"removed its tag {balancer.tag!r} from them"
    cloud.request("DELETE", f"load_balancers/{balancer.id}/droplets", {"droplet_ids": ids})
    return "removed them from its droplet_ids"


def put_back(cloud: Cloud, balancer: Balancer, droplet_ids: Sequence[str]) -> None:
    """Undo take_out: the droplets are the balancer's targets again."""
    ids = [int(i) for i in droplet_ids if i.isdigit()]
    if balancer.tag:
        resources = [{"resource_id": str(i), "resource_type": "droplet"} for i in ids]
        cloud.request("POST", f"tags/{balancer.tag}/resources", {"resources": resources})
    else:
        cloud.request("POST", f"load_balancers/{balancer.id}/droplets", {"droplet_ids": ids})


def default_drain(env: dict[str, str], idle_timeout: float | None) -> float | None:
    """The drain when --drain is not given: the balancer's idle timeout on DigitalOcean,
    LOCAL_DRAIN on a local cloud of real droplets, None (no drain) on one of directory
    droplets, whose balancers are API records that carry no request."""
    local = detect_local_target(endpoint_from(None, env))
    if local is None:
        return idle_timeout or DEFAULT_IDLE_TIMEOUT
    return LOCAL_DRAIN if local.droplet_kind == "real" else None
