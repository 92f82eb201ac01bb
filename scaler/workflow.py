"""The workflows behind `scaler bake`, `scaler rollout` and `scaler rebake`, built once.

Each command parses its options, calls in here and renders what comes back, so the chain
config -> token -> state -> inventory -> cloud -> bake is put together in one place and a
scheduled rebake gets the same pacing, API budget and stop handling as a hand-run rollout.
Nothing here imports click: messages for people go through `say`, questions through `ask`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from scaler import lock
from scaler.bake import Ask, BakeResult, OnError, bake_image
from scaler.cloud import Cloud, NoToken, Pacing, endpoint_from, resolve_token
from scaler.config import BakeConfig, find_config_file, load_config_file, load_packer_template
from scaler.errors import ScalerError
from scaler.events import Say
from scaler.inventory import build_inventory, list_json
from scaler.rollout import (
    DEFAULT_API_BUDGET,
    DEFAULT_BATCH,
    ApiBudget,
    Change,
    Prepared,
    RolloutResult,
    Settings,
    Strategy,
    apply_rollout,
    open_terraform,
    plan_batches,
    prepare_rollout,
    restore_tfvars,
)
from scaler.rollout.settings import quiet
from scaler.state import State, load_state


@dataclass(frozen=True)
class LoadedBake:
    """The bake settings and where they came from.

    `token` is the one a Packer template or its var file held (None: none); `secrets` are the
    template's sensitive values (never printed); `explicit_project`: the project name was set
    (config file or template) rather than defaulted.
    """

    config: BakeConfig
    token: str | None = None
    secrets: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    path: Path | None = None
    explicit_project: bool = False


def load_bake(
    config_file: Path | None = None,
    template: Path | None = None,
    *,
    var_files: Sequence[Path] = (),
    variables: Mapping[str, str] | None = None,
    missing: str | None = None,
) -> LoadedBake:
    """scaler.toml's [bake] (the given file, $SCALER_CONFIG, or one here or in a parent
    folder), then the Packer template over it; with `missing` (the error's text), finding
    neither is an error: scaler never bakes its own bundled playbook unasked."""
    config = BakeConfig()
    path = find_config_file(config_file)
    if path is None and template is None and missing is not None:
        raise ScalerError(missing)
    if path is not None:
        config = load_config_file(path, config)
    if template is None:
        return LoadedBake(
            config, path=path, explicit_project=config.project != BakeConfig().project
        )
    loaded = load_packer_template(template, config, var_file=list(var_files), variables=variables)
    return LoadedBake(
        loaded.config,
        loaded.token,
        tuple(loaded.secrets),
        tuple(loaded.warnings),
        path,
        loaded.config.project != BakeConfig().project,
    )


def open_cloud(
    config: BakeConfig,
    token: str | None = None,
    *,
    context: str | None = None,
    say: Say | None = None,
) -> Cloud:
    """The API client: the token in Packer's order (`token` from the template, then the
    environment, then doctl's config or its `context`; NoToken if none), the end point from
    the config or the environment, and the config's polling."""
    found = resolve_token(token, context=context)
    pacing = Pacing(poll_min=config.poll_min, poll_max=config.poll_max)
    return Cloud(found, endpoint_from(config.api_url), pacing=pacing, on_progress=say)


def stack_inventory(
    state: State | None = None,
    *,
    state_path: str | None = None,
    terraform_dir: str | Path | None = None,
    engine: str | None = None,
    say: Say = quiet,
    warn: Say | None = None,
) -> dict[str, object]:
    """The Terraform-state inventory a bake's playbook gets (the stack's groups, ha_db_fip
    and the rest, which the role reads): from `state`, else loaded as `scaler inventory` does.
    `warn` gets each warning about the state (default: `say` it)."""
    source = None
    if state is None:
        state, source = load_state(
            state=state_path,
            terraform_dir=str(terraform_dir) if terraform_dir is not None else None,
            engine=engine,
        )
    inventory = build_inventory(state)
    for warning in inventory.warnings:
        (warn or (lambda text: say(f"Warning: {text}")))(warning)
    if source is not None:
        say(f"inventory from {source.path}")
    return list_json(inventory)


def bake_from_config(
    config: BakeConfig,
    cloud: Cloud,
    inventory: Mapping[str, object],
    *,
    say: Say = quiet,
    on_error: OnError = "cleanup",
    ask: Ask | None = None,
) -> BakeResult:
    """Bake with the config against `cloud`, the playbook seeing `inventory`."""
    if config.playbook == BakeConfig().playbook:
        say(
            f"playbook: scaler's bundled {config.playbook} (no --playbook, "
            "--packer-template or scaler.toml names one)"
        )
    return bake_image(
        config, cloud, inventory=dict(inventory), on_progress=say, on_error=on_error, ask=ask
    )


def api_budget(
    per_minute: int, say: Say = quiet, env: Mapping[str, str] | None = None
) -> ApiBudget | None:
    """The API budget a rollout paces its batches by; None (and why, through `say`) when it
    is off (0), there is no token, or the API does not report what is left."""
    if not per_minute:
        return None
    try:
        budget = ApiBudget.from_env(env, per_minute)
    except NoToken:
        say("no DIGITALOCEAN_TOKEN here: the API budget is not watched")
        return None
    if budget.mark() is None:
        say("the API does not report ratelimit-remaining: the API budget is not watched")
        return None
    return budget


@dataclass(frozen=True)
class RolloutRequest:
    """What to roll out and how (scaler rollout's options beyond the settings)."""

    image: str | None = None
    resume: bool = False
    abort: bool = False
    undo: bool = False
    strategy: Strategy | None = None
    batch_size: str = DEFAULT_BATCH
    max_unavailable: str | None = None
    canary: bool = False
    dry_run: bool = False
    api_budget: int = DEFAULT_API_BUDGET


@dataclass(frozen=True)
class RolloutRun:
    """How run_rollout ended: the prepared rollout, and its result (None when there was
    nothing to do or for a dry run, whose batch plans are in `batch_plans`)."""

    prepared: Prepared
    result: RolloutResult | None = None
    batch_plans: tuple[tuple[tuple[str, ...], tuple[Change, ...]], ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        """True when every target already ran the image and nothing was resumed or aborted."""
        prepared = self.prepared
        return prepared.plan.nothing_to_do and not prepared.resumed and prepared.kind != "abort"


def run_rollout(
    settings: Settings,
    request: RolloutRequest,
    *,
    confirm: Callable[[Prepared], bool],
    show: Callable[[Prepared], None] = lambda _: None,
    say: Say = quiet,
) -> RolloutRun:
    """A rollout as `scaler rollout` runs it: under the Terraform directory's lock, plan and
    guard, `show(prepared)`, `confirm(prepared)` (False, or an error from it, puts tfvars back:
    nothing was applied), then the batches paced by the API budget; the first Ctrl-C stops
    after the step in flight. A dry run plans every batch, puts tfvars back and asks nothing.
    PlanRefused when the guard refuses, with tfvars as they were."""
    stop = StopFlag(lambda _: say("stopping after the current step (Ctrl-C again to abort)"))
    with lock.hold(settings.terraform_dir, "rollout") as held:
        if held.stale is not None:
            say(f"took over a stale lock of {held.stale.describe()}")
        with open_terraform(settings) as tf:
            budget = None if request.dry_run else api_budget(request.api_budget, say)
            prepared = prepare_rollout(
                tf,
                settings,
                request.image,
                resume=request.resume,
                abort=request.abort,
                undo=request.undo,
                strategy=request.strategy,
                batch_size=request.batch_size,
                max_unavailable=request.max_unavailable,
                canary=request.canary,
                report=say,
            )

            def put_back() -> None:
                if not prepared.resumed:
                    restore_tfvars(settings, prepared.tfvars_before, prepared.replaces)

            done = RolloutRun(prepared)
            if done.nothing_to_do:
                return done
            try:
                show(prepared)
                if request.dry_run:
                    plans: list[tuple[tuple[str, ...], tuple[Change, ...]]] = []
                    if prepared.plan.strategy == "rolling":
                        plans = plan_batches(tf, settings, prepared, say)
                    put_back()
                    return RolloutRun(prepared, batch_plans=tuple(plans))
                if not confirm(prepared):
                    raise ScalerError("rollout cancelled; nothing was changed")
            except BaseException:
                put_back()
                raise
            with stop.installed(signal.SIGINT):
                result = apply_rollout(
                    tf, settings, prepared, report=say, should_stop=stop, budget=budget
                )
    return RolloutRun(prepared, result)


class StopFlag:
    """A stop request (Ctrl-C, SIGTERM): the step in flight finishes, then the run stops; a
    second request interrupts at once (KeyboardInterrupt). `on_first(signal name)` says so."""

    def __init__(self, on_first: Callable[[str], None] = quiet) -> None:
        self.requested = False
        self.on_first = on_first

    def __call__(self) -> bool:
        return self.requested

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.on_first(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self, *signals: signal.Signals) -> Iterator[None]:
        """The handler on `signals` (default SIGINT and SIGTERM) for the block; outside the
        main thread, where Python allows no handlers, nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        chosen = signals or (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handler) for sig in chosen}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
