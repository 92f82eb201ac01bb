"""--strategy all behind a balancer: the new droplets come up beside the old ones.

One whole-configuration apply swaps the balancer from the old droplets to the new ones at once,
and a balancer (DigitalOcean's, the local cloud's HAProxy) sends a new droplet nothing until it
has passed its check healthy_threshold times: the site would serve nothing for that long. So
with a balancer, --strategy all replaces every droplet at once in three Terraform steps:

1. aside: each old droplet's state moves to a name no configuration has (`terraform state mv`
   web[0] web_scaler_retiring[0]). The droplets themselves keep running and serving;
2. surge: a plan targeted at the droplets' own addresses creates every new droplet (nothing else:
   the balancer's update is not targeted); scaler adds them to the balancer through the API (a
   `droplet_tag` balancer takes them by their tag), waits until the balancer has every one in
   rotation, then drains the old ones (scaler.rollout.drain);
3. retire: a plan of the whole configuration, which the guard allows to delete only the moved
   droplets and to update the balancer in place: Terraform itself destroys the old droplets and
   sets the balancer's droplet_ids. A plan afterwards shows no changes.

Undone (a new droplet unhealthy, a stop, a failed apply): the new droplets leave the balancer
and their state moves aside (web_scaler_failed[0]), the old ones' state moves back, and a plan
targeted at the moved-aside new ones destroys them. The old droplets served throughout, and the
state is what it was. A rollout killed in the middle is undone the same way by its --resume,
which then starts the surge again.

A resource listing the droplets by id other than the balancer (a firewall's droplet_ids, a
database firewall's source_droplet_ids) learns the new droplets only in step 3; until then
they miss what it gives them, and a health check that needs it fails: the surge is undone,
and the site stays up on the old droplets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scaler.cloud import CloudError
from scaler.events import Say
from scaler.rollout.drain import put_back, take_out
from scaler.rollout.plan import FAILED, RETIRING, aside, check_plan
from scaler.rollout.settings import Settings
from scaler.rollout.stack import Runner, api_client, read_now, tf_apply, tf_plan
from scaler.state import parse_state


def state_addresses(tf: Runner) -> set[str]:
    """Every live resource instance's address in the state."""
    state = parse_state(tf.state_pull(), "the Terraform state")
    return {r.address for r in state.resources if r.status == "live"}


def move(tf: Runner, settings: Settings, source: str, destination: str) -> None:
    """`terraform state mv SOURCE DESTINATION`: the resource itself is not touched. With the
    local backend the backup Terraform insists on goes to the bookkeeping folder (one file),
    not beside the state."""
    options: dict[str, Any] = {"lock_timeout": settings.lock_timeout}
    if local_backend(settings.terraform_dir):
        options["backup"] = str(settings.bookkeeping / "state-mv.backup")
    tf.run("state mv", source, destination, **options)


def local_backend(terraform_dir: Path) -> bool:
    """True when the directory's initialised backend is the local one (or none is set)."""
    try:
        saved = json.loads((Path(terraform_dir) / ".terraform" / "terraform.tfstate").read_text())
    except (OSError, ValueError):
        return True
    backend = saved.get("backend") if isinstance(saved, dict) else None
    return not isinstance(backend, dict) or backend.get("type") in (None, "local")


def original(address: str) -> str:
    """The address a RETIRING (or FAILED) one was moved from."""
    base, bracket, rest = address.partition("[")
    for suffix in (RETIRING, FAILED):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}{bracket}{rest}"


def swap_back(tf: Runner, settings: Settings) -> list[str]:
    """Undo every aside the state holds: a new droplet at the address moves to its FAILED name,
    the old one back from its RETIRING name. The FAILED addresses now in the state."""
    held = state_addresses(tf)
    for old in sorted(a for a in held if a.partition("[")[0].endswith(RETIRING)):
        address = original(old)
        if address in held:
            move(tf, settings, address, aside(address, FAILED))
        move(tf, settings, old, address)
    return sorted(a for a in state_addresses(tf) if a.partition("[")[0].endswith(FAILED))


def undo(tf: Runner, settings: Settings, report: Say) -> int:
    """Undo a surge (module doc): the old droplets' state back at their addresses, the new ones
    out of the balancer and destroyed; how many new droplets were destroyed."""
    failed = swap_back(tf, settings)
    if not failed:
        return 0
    state = parse_state(tf.state_pull(), "the Terraform state")
    failed_ips = {
        str(r.attributes.get("ipv4_address")): str(r.attributes.get("id"))
        for r in state.resources
        if r.address in failed
    }
    now = read_now(tf, settings)
    lb, cloud = now.balancer, api_client(settings)
    if lb is not None and lb.id and cloud is not None:
        try:
            if not lb.tag:
                leaving = [i for ip, i in failed_ips.items() if ip in now.lb_ips]
                if leaving:
                    take_out(cloud, lb, leaving)
            back = [now.ids[a] for a in now.ids if now.ips.get(a) not in now.lb_ips]
            if back:
                put_back(cloud, lb, back)
        except CloudError as err:
            report(f"undoing the surge: the {lb.describe()} did not take the change: {err}")
    planfile = settings.bookkeeping / "unsurge.tfplan"
    plan_json = tf_plan(tf, settings, planfile, None, refresh=False, target=failed)
    check_plan(plan_json, settings.targets)
    report(f"undoing the surge: destroying the {len(failed)} new droplets; the old ones serve")
    tf_apply(tf, settings, planfile)
    return len(failed)
