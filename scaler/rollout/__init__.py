"""Roll the web droplets onto a new image: guarded, in health-checked batches, resumable.

Shape (as pip-tools' sync): `plan_rollout()` is pure and says what must change; `prepare_rollout()`
sets image_slug, plans with Terraform and runs the guard; `apply_rollout()` does the work.

Modules: `plan` (pure: batches, the floor, the guard over a plan, gates, pause points),
`record` (the rollout record, the history and how a rollout ended), `settings`, `budget` (the
API budget), `stack` (the Terraform runner Protocol, Terraform runs, what the targets run now,
the image check), `drain` (old droplets out of the balancer before they go), `prepare` and
`apply`.

Controls (as AWS instance refresh, Nomad's update block and Argo Rollouts have them): a batch's
old droplets are drained (`drain`); each new droplet must stay healthy `min_healthy_time` in a
row (warm-up) and pass the `gates` (HTTP checks beyond the balancer's; on failure roll back or
pause); `pause_after` stops after a batch with status "paused" (`--resume` goes on, `--abort`
rolls back through the same guarded batches: a rollout of kind "abort" to the previous image);
`--undo` rolls the last finished rollout back the same way (kind "undo"). Each run is added to
`.scaler/history.json`. A result carries a timeline: each batch's start and end (seconds since
the run began) and the healthy capacity behind the balancer where the rollout counted it.

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

from scaler.rollout.apply import (
    apply_rollout,
)
from scaler.rollout.budget import (
    DEFAULT_API_BUDGET,
    ApiBudget,
    ApiUse,
    remaining_requests,
)
from scaler.rollout.drain import DEFAULT_IDLE_TIMEOUT, LOCAL_DRAIN, put_back, take_out
from scaler.rollout.plan import (
    DEFAULT_BATCH,
    DEFAULT_TARGET,
    PIN_VAR,
    Change,
    Gate,
    PlanRefused,
    RolloutError,
    RolloutPlan,
    Strategy,
    address_key,
    check_plan,
    describe_changes,
    ignores_image,
    matches_target,
    parse_count,
    parse_duration,
    parse_gate,
    pause_batch,
    pin_key,
    pin_lookup,
    pin_var_missing,
    plan_changes,
    plan_rollout,
    uses_for_each,
)
from scaler.rollout.prepare import (
    Prepared,
    plan_batches,
    prepare_rollout,
    restore_tfvars,
)
from scaler.rollout.record import (
    HISTORY_NAME,
    LEGACY_RECORD_NAME,
    RECORD_NAME,
    RECORD_VERSION,
    BatchResult,
    Creating,
    HistoryEntry,
    Kind,
    Node,
    RolloutRecord,
    RolloutResult,
    Status,
    append_history,
    last_done,
    read_history,
    read_record,
    read_record_file,
    stale_rollout_files,
    write_record,
)
from scaler.rollout.settings import (
    Settings,
    quiet,
)
from scaler.rollout.stack import (
    LB_BUSY,
    LB_BUSY_TIMEOUT,
    LB_BUSY_WAIT,
    PROVIDER_ENV,
    STATE_LOCKED,
    VIEW_PERIOD,
    BalancerViews,
    Now,
    Runner,
    api_client,
    check_image,
    declares_variable,
    droplet_ids_in_state,
    lock_holder,
    nodes_of,
    open_terraform,
    pins_for,
    read_now,
    tf_apply,
    tf_plan,
)

__all__ = [
    "DEFAULT_API_BUDGET",
    "DEFAULT_BATCH",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TARGET",
    "HISTORY_NAME",
    "LB_BUSY",
    "LB_BUSY_TIMEOUT",
    "LB_BUSY_WAIT",
    "LEGACY_RECORD_NAME",
    "LOCAL_DRAIN",
    "PIN_VAR",
    "PROVIDER_ENV",
    "RECORD_NAME",
    "RECORD_VERSION",
    "STATE_LOCKED",
    "VIEW_PERIOD",
    "ApiBudget",
    "ApiUse",
    "BalancerViews",
    "BatchResult",
    "Change",
    "Creating",
    "Gate",
    "HistoryEntry",
    "Kind",
    "Node",
    "Now",
    "PlanRefused",
    "Prepared",
    "RolloutError",
    "RolloutPlan",
    "RolloutRecord",
    "RolloutResult",
    "Runner",
    "Settings",
    "Status",
    "Strategy",
    "address_key",
    "api_client",
    "append_history",
    "apply_rollout",
    "check_image",
    "check_plan",
    "declares_variable",
    "describe_changes",
    "droplet_ids_in_state",
    "ignores_image",
    "last_done",
    "lock_holder",
    "matches_target",
    "nodes_of",
    "open_terraform",
    "parse_count",
    "parse_duration",
    "parse_gate",
    "pause_batch",
    "pin_key",
    "pin_lookup",
    "pin_var_missing",
    "pins_for",
    "plan_batches",
    "plan_changes",
    "plan_rollout",
    "prepare_rollout",
    "put_back",
    "quiet",
    "read_history",
    "read_now",
    "read_record",
    "read_record_file",
    "remaining_requests",
    "restore_tfvars",
    "stale_rollout_files",
    "take_out",
    "tf_apply",
    "tf_plan",
    "uses_for_each",
    "write_record",
]
