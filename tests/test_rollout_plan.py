"""plan_rollout and the guard, pure: no Terraform, no cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaler.rollout import (
    ApiBudget,
    PlanRefused,
    RolloutError,
    RolloutRecord,
    check_plan,
    parse_count,
    parse_duration,
    plan_rollout,
    read_record,
    write_record,
)
from scaler.rollout.plan import FAILED, RETIRING, aside, held_by_scaler
from scaler.rollout.surge import original

WEB = "digitalocean_droplet.wp_node"


def nodes(count: int, image: str = "old") -> dict[str, str]:
    return {f"{WEB}[{i}]": image for i in range(count)}


def sizes(plan: Any) -> list[int]:
    return [len(batch) for batch in plan.batches]


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [("25%", 3, 1), ("25%", 20, 5), ("25%", 60, 15), ("50%", 3, 2), ("100%", 7, 7), ("2", 9, 2)],
)
def test_parse_count(text: str, total: int, expected: int) -> None:
    assert parse_count(text, total) == expected


@pytest.mark.parametrize("text", ["0", "0%", "101%", "x", "-1", "2.5"])
def test_parse_count_refuses(text: str) -> None:
    with pytest.raises(RolloutError) as err:
        parse_count(text, 10)
    assert str(err.value).startswith(f"--batch-size {text!r} is ")


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("30m", "90s", "1.5h", "250ms", "7")] == [
        1800,
        90,
        5400,
        0.25,
        7,
    ]
    with pytest.raises(RolloutError) as err:
        parse_duration("soon")
    assert str(err.value) == "'soon' is not a duration; give e.g. 30m, 90s or 1h"


def test_rolling_batches_of_a_quarter() -> None:
    plan = plan_rollout(nodes(20), "new", "old")
    assert plan.strategy == "rolling"
    assert sizes(plan) == [5, 5, 5, 5]
    assert (plan.max_unavailable, plan.floor) == (5, 15)
    # Numeric order, not text order: [10] comes after [9].
    assert plan.batches[1] == tuple(f"{WEB}[{i}]" for i in range(5, 10))
    assert plan.replacing == tuple(f"{WEB}[{i}]" for i in range(20))


def test_canary_goes_first_alone() -> None:
    plan = plan_rollout(nodes(10), "new", "old", canary=True, batch_size="4")
    assert sizes(plan) == [1, 4, 4, 1]
    assert plan.batches[0] == (f"{WEB}[0]",)
    assert plan.canary


def test_max_unavailable_caps_the_batch() -> None:
    plan = plan_rollout(nodes(10), "new", "old", batch_size="50%", max_unavailable="2")
    assert sizes(plan) == [2, 2, 2, 2, 2]
    assert (plan.max_unavailable, plan.floor) == (2, 8)
    plan = plan_rollout(nodes(10), "new", "old", batch_size="1", max_unavailable="30%")
    assert sizes(plan) == [1] * 10
    assert plan.floor == 7


def test_one_node_defaults_to_all() -> None:
    plan = plan_rollout(nodes(1), "new", "old")
    assert (plan.strategy, sizes(plan), plan.floor) == ("all", [1], 0)


def test_strategy_all_is_one_batch() -> None:
    plan = plan_rollout(nodes(3), "new", "old", strategy="all", canary=True)
    assert (sizes(plan), plan.floor, plan.canary) == ([3], 0, False)


def test_droplets_already_on_the_image_are_skipped() -> None:
    instances = nodes(4) | {f"{WEB}[1]": "new", f"{WEB}[3]": "new"}
    plan = plan_rollout(instances, "new", "old", batch_size="1")
    assert plan.batches == ((f"{WEB}[0]",), (f"{WEB}[2]",))
    assert plan.skipped == (f"{WEB}[1]", f"{WEB}[3]")
    assert plan_rollout(nodes(3, "new"), "new", "old").nothing_to_do


def test_no_targets() -> None:
    with pytest.raises(RolloutError) as err:
        plan_rollout({}, "new", "old")
    assert str(err.value) == "no rollout targets in the state; apply the stack first"


def change(address: str, actions: list[str], type_: str | None = None) -> dict[str, Any]:
    rtype = type_ or address.split(".")[-2].split("[")[0]
    return {"address": address, "type": rtype, "change": {"actions": actions}}


def test_guard_allows_targets_and_lb_update() -> None:
    plan = {
        "resource_changes": [
            change(f"{WEB}[0]", ["create", "delete"]),
            change(f"{WEB}[1]", ["update"]),
            change("digitalocean_loadbalancer.wp_lb", ["update"]),
            change("module.galera.digitalocean_droplet.db_node[0]", ["no-op"]),
        ]
    }
    kinds = [(c.address, c.kind) for c in check_plan(plan, [WEB])]
    assert kinds == [
        (f"{WEB}[0]", "replace"),
        (f"{WEB}[1]", "update"),
        ("digitalocean_loadbalancer.wp_lb", "update"),
    ]


def test_guard_names_everything_it_refuses() -> None:
    plan = {
        "resource_changes": [
            change(f"{WEB}[0]", ["delete", "create"]),
            change(f"{WEB}[1]", ["delete"]),
            change("digitalocean_loadbalancer.wp_lb", ["create", "delete"]),
            change("module.galera.digitalocean_floating_ip.ha_db_fip", ["update"]),
            change("digitalocean_tag.extra", ["create"]),
        ]
    }
    with pytest.raises(PlanRefused) as err:
        check_plan(plan, [WEB])
    assert str(err.value) == (
        f"the plan would delete {WEB}[1], replace digitalocean_loadbalancer.wp_lb, "
        "update module.galera.digitalocean_floating_ip.ha_db_fip, create digitalocean_tag.extra; "
        f"a rollout may only replace {WEB} (and update a load balancer in place)"
    )
    assert err.value.offending == (
        f"{WEB}[1]",
        "digitalocean_loadbalancer.wp_lb",
        "module.galera.digitalocean_floating_ip.ha_db_fip",
        "digitalocean_tag.extra",
    )


def test_guard_per_batch_wants_exactly_the_batch() -> None:
    plan = {
        "resource_changes": [
            change(f"{WEB}[0]", ["create", "delete"]),
            change(f"{WEB}[2]", ["create", "delete"]),
        ]
    }
    assert len(check_plan(plan, [WEB], expect=[f"{WEB}[0]", f"{WEB}[2]"])) == 2
    with pytest.raises(PlanRefused) as err:
        check_plan(plan, [WEB], expect=[f"{WEB}[0]", f"{WEB}[1]"])
    assert str(err.value) == (
        f"the batch plan would also replace {WEB}[2] and not replace {WEB}[1]; "
        f"expected exactly {WEB}[0], {WEB}[1]"
    )


def test_guard_lets_a_surge_create_targets_and_delete_only_what_it_moved_aside() -> None:
    created = {
        "resource_changes": [change(f"{WEB}[0]", ["create"]), change(f"{WEB}[1]", ["create"])]
    }
    with pytest.raises(PlanRefused):
        check_plan(created, [WEB])  # a rollout adds no droplet ...
    # ... but a surge, whose old droplets were moved aside, creates exactly its batch
    assert len(check_plan(created, [WEB], expect=[f"{WEB}[0]", f"{WEB}[1]"], create=True)) == 2
    retire = {
        "resource_changes": [
            change(f"{WEB}_scaler_retiring[0]", ["delete"], "digitalocean_droplet"),
            change(f'module.m.{WEB}_scaler_failed["a"]', ["delete"], "digitalocean_droplet"),
            change("digitalocean_loadbalancer.wp_lb", ["update"]),
        ]
    }
    assert [c.kind for c in check_plan(retire, [WEB])] == ["delete", "delete", "update"]
    other = {"resource_changes": [change("digitalocean_droplet.db_scaler", ["delete"])]}
    with pytest.raises(PlanRefused):
        check_plan(other, [WEB])


def test_aside_names_and_what_scaler_holds() -> None:
    assert aside(f"{WEB}[3]", RETIRING) == f"{WEB}_scaler_retiring[3]"
    assert aside('module.web.digitalocean_droplet.www["b"]', FAILED) == (
        'module.web.digitalocean_droplet.www_scaler_failed["b"]'
    )
    assert aside("digitalocean_droplet.one", RETIRING) == "digitalocean_droplet.one_scaler_retiring"
    assert held_by_scaler(f"{WEB}_scaler_retiring[0]") and held_by_scaler(f"{WEB}_scaler_failed")
    assert not held_by_scaler(f"{WEB}[0]") and not held_by_scaler("digitalocean_droplet.x_scaler")
    assert original(f"{WEB}_scaler_retiring[2]") == f"{WEB}[2]"


def test_instance_targets_only_allow_those_instances() -> None:
    plan = {"resource_changes": [change(f"{WEB}[0]", ["create", "delete"])]}
    with pytest.raises(PlanRefused):
        check_plan(plan, [f"{WEB}[1]"])
    assert check_plan(plan, [f"{WEB}[0]"])[0].kind == "replace"


def test_progress_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ".scaler-rollout.json"
    assert read_record(path) is None
    progress = RolloutRecord(
        "new", "old", "rolling", ((f"{WEB}[0]",),), (f"{WEB}[0]",), "done", 1, 2
    )
    write_record(path, progress)
    assert read_record(path) == progress
    path.write_text("{}")
    with pytest.raises(RolloutError) as err:
        read_record(path)
    assert str(err.value) == f"{path} is not a rollout record ('target_image'); move it away"


@pytest.mark.parametrize("zero", ["0", "0%", 0])
def test_max_unavailable_zero_is_refused(zero: str | int) -> None:
    with pytest.raises(RolloutError) as err:
        plan_rollout(nodes(3), "new", "old", max_unavailable=zero)
    assert str(err.value).startswith("--max-unavailable 0 would never let a droplet go: ")


class Ledger:
    """What GET /v2/account would say: ratelimit-remaining, and a clock we move by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.remaining = 5000

    def use(self, requests: int, seconds: float) -> None:
        self.remaining -= requests
        self.now += seconds

    def read(self) -> int:
        self.remaining -= 1  # the reading is a request too
        return self.remaining


def test_budget_learns_the_cost_per_droplet_and_waits_for_room() -> None:
    ledger = Ledger()
    budget = ApiBudget(ledger.read, 100, clock=lambda: ledger.now)
    assert budget.mark() == 4999
    assert budget.pause_for(5) == 0  # nothing seen yet
    assert budget.projected(5) == 50  # the prior: 10 a droplet
    ledger.use(30, 20)  # the whole-change plan refreshes 30 resources
    budget.mark()
    assert budget.pause_for(5) == 0  # 31 seen + 50 projected <= 100
    ledger.use(60, 40)  # batch 1: 5 droplets cost 60
    budget.mark(5)
    assert budget.per_droplet() == 61 / 5 and budget.projected(5) == 61
    assert budget.used_in_window() == 31 + 61
    # 3 more droplets (37) fit once the plan's interval (ended at t=20) leaves at t=80;
    # 5 more (61) only once batch 1's interval (ended at t=60) has left too.
    assert budget.used_in_window(80) == 61
    assert budget.pause_for(3) == 20
    assert budget.pause_for(5) == 60
    ledger.now = 120  # the batch's interval ended 60 s ago: out of the window
    assert budget.pause_for(5) == 0


def test_budget_too_small_for_a_batch_waits_for_an_empty_window() -> None:
    ledger = Ledger()
    budget = ApiBudget(ledger.read, 40, clock=lambda: ledger.now)
    budget.mark()
    ledger.use(10, 5)
    budget.mark()
    assert budget.pause_for(5) == 60  # 50 projected > 40: start on an empty window
    with pytest.raises(RolloutError) as err:
        ApiBudget(ledger.read, 0)
    assert str(err.value) == "--api-budget 0 is out of range; give 1 or more"


def test_budget_without_headers_records_nothing() -> None:
    budget = ApiBudget(lambda: None, 100, clock=lambda: 0.0)
    assert budget.mark() is None and budget.mark(3) is None
    assert budget.uses == [] and budget.readings == 2 and budget.pause_for(50) == 0
