"""Apply a prepared rollout: batch by batch, each checked healthy; roll back on failure."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from scaler import health
from scaler.balancer import Balancer
from scaler.cloud import (
    Cloud,
    CloudError,
    Pacing,
    created_at_epoch,
    endpoint_from,
    token_from_env,
)
from scaler.errors import ScalerError
from scaler.events import Clock, Say
from scaler.rollout import surge
from scaler.rollout.budget import ApiBudget
from scaler.rollout.drain import default_drain, put_back, take_out
from scaler.rollout.plan import (
    RETIRING,
    PlanRefused,
    RolloutPlan,
    aside,
    check_plan,
    describe_changes,
    pause_batch,
    pin_key,
)
from scaler.rollout.prepare import Prepared
from scaler.rollout.record import (
    BatchResult,
    Creating,
    HistoryEntry,
    Node,
    RolloutRecord,
    RolloutResult,
    Status,
    append_history,
    read_record,
    write_record,
)
from scaler.rollout.settings import Settings, quiet
from scaler.rollout.stack import (
    LB_BUSY,
    LB_BUSY_TIMEOUT,
    LB_BUSY_WAIT,
    BalancerViews,
    Now,
    Runner,
    api_client,
    declares_variable,
    droplet_ids_in_state,
    nodes_of,
    read_now,
    tf_apply,
    tf_plan,
)
from scaler.terraform import TerraformFailed
from scaler.tfvars import (
    get_tfvar,
    set_tfvar,
)


class _Run:
    """The state of one apply_rollout call."""

    def __init__(
        self,
        tf: Runner,
        settings: Settings,
        prepared: Prepared,
        report: Say,
        should_stop: Callable[[], bool],
        clock: Clock,
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
        old = read_record(settings.record_file) if prepared.resumed else None
        self.old = old
        self.done: list[str] = list(old.done) if old else []
        self.started = old.started if old else time.time()
        self.creating: tuple[Creating, ...] = old.creating if old else prepared.creating
        self.kind = prepared.kind
        self.capacity: list[tuple[float, int]] = []
        self.drain_note = False
        # droplet ids seen passing the health check: a resume checks every other one
        self.healthy: set[str] = set(old.healthy) if old else set()
        self.replace_each = prepared.replace_each
        self.pinned = (
            self.plan.strategy == "rolling"
            and not self.replace_each
            and declares_variable(settings.terraform_dir, settings.pin_var)
        )
        # the addresses whose old droplets a surge moved aside (surge.py); () outside one
        self.retiring: tuple[str, ...] = ()
        self.views = BalancerViews(settings, clock)
        self.via = health.ssh_prober(*settings.probe_ssh) if settings.probe_ssh else None

    def remaining(self) -> float:
        if self.settings.deadline is None:
            return math.inf
        return self.settings.deadline - (self.clock() - self.start)

    def save(self, status: str) -> None:
        write_record(
            self.settings.record_file,
            RolloutRecord(
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
                kind=self.kind,
                retiring=self.retiring,
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
            now = read_now(self.tf, self.settings)
            pins = {
                pin_key(a): now.images[a]
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
        in_state = droplet_ids_in_state(self.tf)
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
        cloud = api_client(self.settings)
        if cloud is None or not droplet_id.isdigit():
            return None
        try:
            return cloud.get_droplet(int(droplet_id)).tags
        except CloudError:
            return None

    def offset(self) -> float:
        """Seconds since this run began (the timeline's x)."""
        return round(self.clock() - self.start, 3)

    def observe(self, count: int) -> None:
        self.min_healthy = count if self.min_healthy is None else min(self.min_healthy, count)
        self.capacity.append((self.offset(), count))

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
                after = nodes_of(read_now(self.tf, self.settings))
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
            kind=self.kind,
            capacity=tuple(self.capacity),
            api_used=tuple(
                (round(u.end - self.start, 3), u.requests)
                for u in budget.uses
                if u.end >= self.start
            )
            if budget
            else (),
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
            now = read_now(self.tf, settings)
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

    def wait_healthy(
        self, ips: Sequence[str], now: Now, *, timeout: float | None = None
    ) -> health.HealthReport:
        """health.wait_healthy for `ips` as the rollout checks them: the balancer's check and
        view, the port map, the grace, private addresses, SSH where asked; `timeout` defaults
        to --health-timeout."""
        settings = self.settings
        return health.wait_healthy(
            ips,
            now.check,
            port_map=settings.port_map,
            timeout=settings.health_timeout if timeout is None else timeout,
            grace=settings.health_grace,
            private=now.private,
            balancer=self.views.for_now(now),
            via=self.via,
        )

    def run_batch(self, number: int, batch: tuple[str, ...]) -> BatchResult:
        settings, tf = self.settings, self.tf
        began = self.clock()
        began_at = self.offset()
        label = f"batch {number}/{len(self.plan.batches)}"
        planfile = settings.bookkeeping / "batch.tfplan"
        pins: dict[str, str] | None = None
        if self.plan.strategy == "all":
            ready = self.surge_ready()
            if ready is not None:
                return self.run_surge(label, batch, *ready)
        if self.plan.strategy == "all" and not self.replace_each:
            planfile = self.prepared.planfile
            self.report(f"{label}: applying the plan (create before destroy)")
        else:
            if self.plan.strategy != "all":
                self.wait_capacity(label, batch)
            now = read_now(tf, settings)
            replace: list[str] = []
            if self.replace_each:
                # lifecycle ignore_changes = [image]: nothing to pin, the batch is named
                replace = [a for a in batch if now.images.get(a) != self.plan.target_image]
            else:
                keep = [a for a in self.plan.targets if a not in batch and a not in self.done]
                pins = {pin_key(a): now.images[a] for a in keep if a in now.images}
            if self.pinned and pins is not None:
                # tfvars says what this batch applies: a plain apply would do the same
                set_tfvar(settings.tfvars, settings.pin_var, pins)
            self.report(f"{label}: planning {', '.join(batch)}")
            plan_json = tf_plan(tf, settings, planfile, pins, refresh=False, replace=replace)
            expect = [a for a in batch if now.images.get(a) != self.plan.target_image]
            check_plan(plan_json, settings.targets, expect=expect)
            self.report(f"{label}: applying")
        before = read_now(tf, settings)
        self.drain(label, batch, before)
        self.replaced.extend(batch)
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
        return self.settle(label, batch, began, began_at)

    def surge_ready(self) -> tuple[Now, Balancer, Cloud] | None:
        """What a surge needs (surge.py): droplets behind a balancer, and a token to add the new
        ones to it; None without."""
        now = read_now(self.tf, self.settings)
        lb, cloud = now.balancer, api_client(self.settings)
        if lb is None or not lb.id or cloud is None or not now.lb_ips:
            return None
        return now, lb, cloud

    def run_surge(
        self, label: str, batch: Sequence[str], before: Now, lb: Balancer, cloud: Cloud
    ) -> BatchResult:
        """--strategy all behind a balancer: the new droplets beside the old ones (surge.py)."""
        settings, tf = self.settings, self.tf
        began, began_at = self.clock(), self.offset()
        self.retiring = tuple(batch)
        self.save("running")  # before the state moves: a kill -9 after them is undone later
        self.report(
            f"{label}: every droplet at once, the new ones beside the old: moving the "
            f"{len(batch)} old droplets aside in the Terraform state (they keep serving)"
        )
        held = surge.state_addresses(tf)
        for address in batch:
            if address in held and aside(address, RETIRING) not in held:
                surge.move(tf, settings, address, aside(address, RETIRING))
        planfile = settings.bookkeeping / "surge.tfplan"
        plan_json = tf_plan(tf, settings, planfile, None, refresh=False, target=batch)
        check_plan(plan_json, settings.targets, expect=batch, create=True)
        self.replaced.extend(batch)
        since = time.time()
        self.creating = tuple(
            Creating(a, before.ids.get(a, ""), before.names.get(a, ""), since) for a in batch
        )
        self.save("running")
        self.report(f"{label}: applying a plan targeted at the {len(batch)} new droplets")
        try:
            tf_apply(tf, settings, planfile)
        finally:
            if self.budget is not None:
                self.budget.mark(len(batch))
        self.creating = ()
        made = read_now(tf, settings)
        if lb.tag:
            how = f"it takes them by their tag {lb.tag!r}"
        else:
            try:
                put_back(cloud, lb, [made.ids[a] for a in batch])
            except CloudError as err:
                raise _BatchFailed(
                    f"{label}: the {lb.describe()} did not take the new droplets: {err}"
                ) from None
            how = "added to its droplet_ids through the API"
        self.report(f"{label}: the new droplets are behind the {lb.describe()} ({how})")
        result = self.settle(label, batch, began, began_at)
        if self.should_stop():
            raise _Stopped()
        self.drain(label, batch, before, surging=True)
        planfile = settings.bookkeeping / "retire.tfplan"
        plan_json = tf_plan(tf, settings, planfile, None, refresh=False)
        check_plan(plan_json, settings.targets)
        self.report(f"{label}: destroying the old droplets (the whole configuration's plan)")
        self.apply_batch(label, planfile, None)
        self.retiring = ()
        return replace(result, seconds=round(self.clock() - began, 3), end=self.offset())

    def unsurge(self) -> int:
        """Undo this run's surge, if one is under way; how many new droplets went."""
        if not self.retiring:
            return 0
        gone = surge.undo(self.tf, self.settings, self.report)
        self.retiring = ()
        return gone

    def settle(
        self, label: str, batch: Sequence[str], began: float, began_at: float
    ) -> BatchResult:
        """After a batch's apply: its new droplets pass the check, the warm-up and the gates;
        the batch's result, or _BatchFailed / _GatePause."""
        settings, tf = self.settings, self.tf
        now = read_now(tf, settings)
        ips = [now.ips[a] for a in batch]
        self.report(
            f"{label}: waiting for {len(ips)} droplets to pass {now.check.protocol}:"
            f"{now.check.port}{now.check.path if now.check.protocol != 'tcp' else ''} "
            f"{now.check.healthy_threshold} times, every {now.check.interval:g}s"
        )
        view = self.views.for_now(now)
        outcome = self.wait_healthy(
            ips, now, timeout=max(0.0, min(settings.health_timeout, self.remaining()))
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
        failure = ""
        if not outcome.ok:
            sick = [a for a in batch if now.ips[a] in outcome.unhealthy + outcome.pending]
            how = "failed its health check" if outcome.unhealthy else "did not become healthy"
            details = "; ".join(outcome.why(now.ips[a], a) for a in sick)
            failure = f"{label}: {', '.join(sick)} {how} ({details})"
        else:
            failure = self.warm_up(label, batch, now)
        if not failure:
            self.healthy.update(now.ids[a] for a in batch)
        result = BatchResult(
            tuple(batch),
            ids,
            not failure,
            round(self.clock() - began, 3),
            start=began_at,
            end=self.offset(),
        )
        self.batches.append(result)
        if failure:
            raise _BatchFailed(failure)
        gates = self.run_gates(label, batch, now)
        if gates:
            if settings.on_gate_failure == "pause":
                raise _GatePause(gates)
            raise _BatchFailed(gates)
        self.report(f"{label}: healthy ({result.seconds:.1f}s)")
        return result

    def drain_time(self, now: Now) -> float | None:
        """Seconds the batch's old droplets drain; None: no drain (nothing to drain)."""
        settings = self.settings
        if settings.drain is not None:
            return settings.drain
        return default_drain({**os.environ, **settings.env}, now.idle_timeout)

    def drain(self, label: str, batch: Sequence[str], now: Now, *, surging: bool = False) -> None:
        """Take the batch's old droplets out of the balancer, then wait for their requests
        (`surging`: the new droplets serve beside them already, surge.py)."""
        if self.plan.strategy == "all" and not surging:
            return  # every droplet goes at once: no one would serve the drained requests
        seconds = self.drain_time(now)
        lb = now.balancer
        ids = [now.ids[a] for a in batch if a in now.ids and now.ips.get(a) in now.lb_ips]
        if seconds is None or lb is None or not ids:
            return
        cloud = api_client(self.settings)
        if cloud is None or not lb.id:
            if not self.drain_note:
                self.report(
                    "no API token: old droplets leave the balancer in the batch's apply, undrained"
                )
                self.drain_note = True
            return
        try:
            how = take_out(cloud, lb, ids)
        except CloudError as err:
            self.report(f"{label}: could not take the old droplets out of the balancer: {err}")
            return
        self.report(
            f"{label}: took {', '.join(a for a in batch if a in now.ids)} out of the "
            f"{lb.describe()} ({how}); draining {seconds:g}s before the apply destroys them"
        )
        until = self.clock() + seconds
        while (left := until - self.clock()) > 0:
            if self.should_stop():
                # stopped before the apply: the droplets serve again, nothing changed
                try:
                    put_back(cloud, lb, ids)
                except CloudError as err:
                    self.report(f"{label}: could not put the droplets back: {err}")
                self.report(f"{label}: stopped while draining; the droplets are back in it")
                if self.pinned:
                    # tfvars pinned only the other droplets for this batch's apply: pin every
                    # droplet not done again, so a plain apply changes nothing
                    pins = {
                        pin_key(a): now.images[a]
                        for a in self.plan.targets
                        if a not in self.done and a in now.images
                    }
                    set_tfvar(self.settings.tfvars, self.settings.pin_var, pins)
                raise _Stopped()
            time.sleep(min(left, 0.5))

    def probe(self, ip: str, now: Now, check: health.HealthCheck) -> health.ProbeResult:
        """One check of the droplet at `ip` over its private address (through SSH if need be)."""
        dial = now.private.get(ip) or ip
        result = health.check_droplet(dial, check, self.settings.port_map)
        if result.status is None and not result.ok and self.via is not None:
            return self.via(ip, dial, check)
        return result

    def warm_up(self, label: str, batch: Sequence[str], now: Now) -> str:
        """Every new droplet stays healthy --min-healthy-time in a row; the failure, or ""."""
        settings = self.settings
        wanted = settings.min_healthy_time
        if wanted <= 0:
            return ""
        check = now.check
        self.report(f"{label}: warming up: each new droplet must pass every check for {wanted:g}s")
        start = self.clock()
        limit = start + wanted + max(0.0, min(settings.health_timeout, self.remaining()))
        since: dict[str, float | None] = {a: start for a in batch}
        fails = dict.fromkeys(batch, 0)
        while True:
            for address in batch:
                seen = self.probe(now.ips[address], now, check)
                if seen.ok:
                    fails[address] = 0
                    if since[address] is None:
                        since[address] = self.clock()
                    continue
                fails[address] += 1
                since[address] = None
                if fails[address] >= check.unhealthy_threshold:
                    return (
                        f"{label}: {address} failed its health check during the warm-up "
                        f"(--min-healthy-time {wanted:g}s): {seen.describe()}"
                    )
            at = self.clock()
            if all(t is not None and at - t >= wanted for t in since.values()):
                self.observe(
                    health.count_healthy(
                        list(now.lb_ips),
                        check,
                        settings.port_map,
                        private=now.private,
                        via=self.via,
                    )
                )
                return ""
            if at >= limit:
                short = [a for a, t in since.items() if t is None or at - t < wanted]
                return (
                    f"{label}: {', '.join(short)} did not stay healthy for "
                    f"--min-healthy-time {wanted:g}s in a row"
                )
            time.sleep(check.interval)

    def run_gates(self, label: str, batch: Sequence[str], now: Now) -> str:
        """Each new droplet passes every --gate (a few tries, the check's interval apart);
        the failures in one line, or ""."""
        gates = self.settings.gates
        if not gates:
            return ""
        protocol = "http" if now.check.protocol == "tcp" else now.check.protocol
        failed: list[str] = []
        for address in batch:
            ip = now.ips[address]
            for gate in gates:
                check = replace(now.check, protocol=protocol, path=gate.path)
                for attempt in range(max(1, check.unhealthy_threshold)):
                    if attempt:
                        time.sleep(check.interval)
                    seen = self.probe(ip, now, check)
                    if gate.passes(seen.status):
                        break
                else:
                    failed.append(f"{address} ({ip}): {seen.describe()}")
        if not failed:
            self.report(f"{label}: gates passed ({', '.join(g.describe() for g in gates)})")
            return ""
        wants = ", ".join(g.describe() for g in gates)
        return f"{label}: gate failed (want {wants}): {'; '.join(failed)}"

    def apply_batch(self, label: str, planfile: Path, pins: dict[str, str] | None) -> None:
        """Apply; while the load balancer refuses the change because it is still applying the
        previous one (DigitalOcean's 403), wait, plan what is left and apply that (the batches
        and the rollback alike)."""
        settings, tf = self.settings, self.tf
        deadline = self.clock() + LB_BUSY_TIMEOUT
        while True:
            try:
                tf_apply(tf, settings, planfile)
                return
            except TerraformFailed as err:
                if not LB_BUSY.search(err.stderr) or self.clock() >= deadline:
                    raise
            self.report(f"{label}: the load balancer is still applying its last change; waiting")
            time.sleep(LB_BUSY_WAIT)
            # The droplets were made; what is left is the balancer's update and the old ones.
            plan_json = tf_plan(tf, settings, planfile, pins)
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
        if self.retiring:
            return self.rollback_surge(reason)
        self.report(f"{reason}; rolling back to image {self.plan.previous_image}")
        set_tfvar(settings.tfvars, settings.image_var, self.plan.previous_image)
        if self.pinned:
            set_tfvar(settings.tfvars, settings.pin_var, {})
        planfile = settings.bookkeeping / "rollback.tfplan"
        try:
            now = read_now(self.tf, settings)
            back = [a for a in self.plan.targets if now.images.get(a) != self.plan.previous_image]
            replace = back if self.replace_each else []
            plan_json = tf_plan(self.tf, settings, planfile, None, replace=replace)
            check_plan(plan_json, settings.targets, expect=back)
            if back:
                self.apply_batch("rollback", planfile, None)
            now = read_now(self.tf, settings)
            outcome = self.wait_healthy([now.ips[a] for a in back], now)
        except (ScalerError, OSError) as err:
            self.save("failed")
            left = self.pin_what_runs()
            return self.result(
                "failed",
                f"{reason}; the rollback failed too: {err}; "
                + (left or f"image_slug is back to {self.plan.previous_image}")
                + "; fix it and run scaler rollout --resume",
            )
        return self.rolled_back(
            f"{reason}; rolled back {len(back)} droplets to image {self.plan.previous_image}",
            back,
            outcome,
        )

    def rollback_surge(self, reason: str) -> RolloutResult:
        """Roll back a surge: the old droplets served throughout; the new ones go."""
        settings, batch = self.settings, self.retiring
        self.report(f"{reason}; undoing the surge (the old droplets kept serving)")
        try:
            gone = self.unsurge()
            set_tfvar(settings.tfvars, settings.image_var, self.plan.previous_image)
            # the whole configuration's plan changes no resource now; its apply brings the
            # outputs up to date (the targeted applies left them as they were)
            planfile = settings.bookkeeping / "rollback.tfplan"
            check_plan(
                tf_plan(self.tf, settings, planfile, None, refresh=False),
                settings.targets,
                expect=[],
            )
            tf_apply(self.tf, settings, planfile)
            now = read_now(self.tf, settings)
            outcome = self.wait_healthy([now.ips[a] for a in batch if a in now.ips], now)
        except (ScalerError, OSError) as err:
            self.save("failed")
            return self.result(
                "failed",
                f"{reason}; undoing the surge failed too: {err}; fix it and run scaler rollout "
                "--resume (it undoes the surge first)",
            )
        return self.rolled_back(
            f"{reason}; rolled back: the {gone} new droplets were destroyed, and the old ones "
            f"on image {self.plan.previous_image} served throughout",
            batch,
            outcome,
        )

    def rolled_back(
        self, message: str, back: Sequence[str], outcome: health.HealthReport
    ) -> RolloutResult:
        """A finished rollback: recorded, and its result saying whether `back` is healthy."""
        self.done = []
        self.save("rolled-back")
        state = "healthy" if outcome.ok else "NOT healthy"
        return self.result("rolled-back", f"{message} ({state})", back, rollback_healthy=outcome.ok)


def _short_of_floor(
    label: str,
    batch: Sequence[str],
    healthy: int,
    plan: RolloutPlan,
    now: Now,
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


class _GatePause(Exception):
    pass


def apply_rollout(
    tf: Runner,
    settings: Settings,
    prepared: Prepared,
    *,
    report: Say = quiet,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Clock = time.monotonic,
    budget: ApiBudget | None = None,
) -> RolloutResult:
    """Replace the planned batches, each checked healthy; roll back on failure.

    With `budget`, each batch first waits until its projected API requests fit the budget.
    Every run that changed something is added to the history (`.scaler/history.json`).
    """
    started = time.time()
    run = _Run(tf, settings, prepared, report, should_stop, clock, budget)
    result = _apply(run)
    if result.status not in ("nothing-to-do", "dry-run"):
        append_history(
            settings.history_file,
            HistoryEntry(
                started=started,
                ended=time.time(),
                kind=result.kind,
                from_image=result.previous_image,
                to_image=result.target_image,
                status=result.status,
                strategy=result.strategy,
                replaced=len(result.replaced),
                message=result.message,
            ),
        )
    return result


def _apply(run: _Run) -> RolloutResult:
    tf, settings, prepared, report = run.tf, run.settings, run.prepared, run.report
    should_stop = run.should_stop
    plan = prepared.plan
    if plan.nothing_to_do and not prepared.resumed and prepared.kind != "abort":
        return run.result(
            "nothing-to-do",
            f"every target already runs image {plan.target_image}; nothing changed",
        )
    pause_at = (
        pause_batch(plan, settings.pause_after)
        if settings.pause_after is not None and plan.batches
        else None
    )
    if prepared.resumed or run.creating:
        run.reconcile()
    run.before = nodes_of(read_now(tf, settings))
    run.save("running")
    if plan.nothing_to_do and prepared.changes:
        # a resume after the last batch: what the dead apply left (a deposed droplet, the
        # balancer's list) is finished by the whole plan the guard has passed
        report("finishing what the interrupted apply left: " + describe_changes(prepared.changes))
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
            return _stopped(run)
        except _GatePause as gate:
            run.save("paused")
            return run.result(
                "paused",
                f"{gate}; paused (--on-gate-failure pause): look at the new droplets, then "
                "run scaler rollout --resume to check them again and go on, or "
                "scaler rollout --abort to roll back",
            )
        except _CapacityLow as low:
            # Nothing of this batch was touched and the batches before it are healthy: no
            # rollback; the record stays resumable.
            run.save("waiting-for-capacity")
            left = run.left_in_tfvars()
            return run.result("failed", str(low) + (f"; {left}" if left else ""))
        except TerraformFailed as err:
            if should_stop():
                return _stopped(run)
            return run.rollback(f"batch {number}: {err}")
        except PlanRefused as err:
            return run.rollback(f"batch {number}: {err}")
        run.done.extend(batch)
        run.save("running")
        if pause_at == number and number < len(plan.batches):
            run.save("paused")
            left = run.left_in_tfvars()
            return run.result(
                "paused",
                f"paused after batch {number}/{len(plan.batches)} (--pause-after "
                f"{settings.pause_after}): {len(run.done)} of {len(plan.replacing)} droplets run "
                f"image {plan.target_image}; look, then run scaler rollout --resume to go on "
                "or scaler rollout --abort to roll back" + (f"; {left}" if left else ""),
            )
    # Verify: every target runs the image and passes the check, and nothing is left to do.
    now = read_now(tf, settings)
    wrong = [a for a in plan.targets if now.images.get(a) != plan.target_image]
    final = run.wait_healthy([now.ips[a] for a in plan.targets], now)
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
    if run.kind == "abort":
        run.save("rolled-back")
        return run.result(
            "rolled-back",
            f"aborted: {len(run.replaced)} droplets rolled back to image {plan.target_image} "
            "in batches, all healthy",
            run.replaced,
            rollback_healthy=True,
        )
    run.save("done")
    what = "undone: " if run.kind == "undo" else ""
    return run.result(
        "done",
        f"{what}{len(run.replaced)} droplets now run image {plan.target_image}, all healthy",
    )


def _stopped(run: _Run) -> RolloutResult:
    """A stop (Ctrl-C) in a batch: a surge under way is undone first (its old droplets serve)."""
    note = ""
    if run.retiring:
        try:
            gone = run.unsurge()
            note = (
                f"; the surge was undone: its {gone} new droplets were destroyed and the old "
                "ones serve as before"
            )
        except (ScalerError, OSError) as err:
            note = f"; undoing the surge failed ({err}): scaler rollout --resume undoes it first"
    run.save("interrupted")
    return run.result("interrupted", _interrupted(run) + note)


def _interrupted(run: _Run) -> str:
    left = run.left_in_tfvars()
    return (
        f"interrupted after {len(run.done)} of {len(run.plan.replacing)} droplets; "
        "run scaler rollout --resume to continue" + (f"; {left}" if left else "")
    )
