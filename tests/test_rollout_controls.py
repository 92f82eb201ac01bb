"""The rollout controls with the real Terraform on the local cloud: after a rollout with a drain,
a pause plus resume, an undo and an abort, `terraform plan` shows no changes, every target runs
one image and nothing outside the targets changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import cloud_api as api
from test_rollout import (  # noqa: F401 (cloud and stack are fixtures)
    FAST,
    LB,
    WEB,
    Stack,
    all_healthy,
    cloud,
    others,
    stack,
)

from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar


def plan_changes(site: Stack, tmp: Path) -> bool:
    """True when a plain `terraform plan` of the stack has anything to do."""
    with local_provider(site.cloud.env()) as env:
        return Terraform(site.dir, env=env).plan(out=tmp / "check.tfplan").changed


def invariant(site: Stack, tmp: Path, image: str | None) -> None:
    """Plan empty; nothing but the targets changed; with `image`, every target runs it."""
    assert not plan_changes(site, tmp)
    assert others(site.ids()) == others(site.before)
    if image is not None:
        assert set(site.web_images().values()) == {image}
        assert all_healthy(site)


@pytest.mark.slow
def test_drain_pause_resume_undo_abort_keep_terraform_the_source_of_truth(
    stack: Stack,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    rolling = ["--batch-size", "2", "--yes", *FAST]
    # 1. rollout with a drain, paused after its first batch
    stack.cloud.reset_log()
    paused = stack.rollout(
        "--image", stack.good2, "--pause-after", "1", "--drain", "0.5s", *rolling
    )
    assert paused.exit_code == 5, paused.output
    assert paused.stdout.splitlines()[0] == (
        f"paused: paused after batch 1/2 (--pause-after 1): 2 of 3 droplets run image "
        f"{stack.good2}; look, then run scaler rollout --resume to go on or scaler rollout "
        f"--abort to roll back; {stack.tfvars} holds image_slug = {stack.good2} and "
        f"wp_node_images pins [2] {stack.good}: a plain terraform apply changes nothing this "
        "rollout has not changed"
    )
    assert re.search(
        rf"batch 1/2: took {re.escape(WEB[0])}, {re.escape(WEB[1])} out of the load balancer "
        rf"wordpress-lb \({LB}\) \(removed them from its droplet_ids\); draining 0.5s before "
        "the apply destroys them",
        paused.stderr,
    ), paused.stderr
    assert "Error:" not in paused.stderr
    # drained first: out of the balancer through the API, then the apply deletes them
    calls = [r.template for r in stack.cloud.requests() if r.method == "DELETE"]
    assert calls.index("DELETE /v2/load_balancers/{id}/droplets") < calls.index(
        "DELETE /v2/droplets/{id}"
    ), calls
    invariant(stack, tmp_path, None)
    # 2. resume, with a report of its timeline
    resumed = stack.rollout("--resume", "--report", str(tmp_path / "report"), *rolling)
    assert resumed.exit_code == 0, resumed.output
    page = (tmp_path / "report" / "rollout.html").read_text()
    assert (tmp_path / "report" / "rollout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in page and "batch 1" in page
    assert f"{stack.good} -&gt; {stack.good2}" in page and "<td>done</td>" in page
    invariant(stack, tmp_path, stack.good2)
    (lb,) = api(stack.cloud, "GET", "load_balancers")["load_balancers"]
    assert sorted(lb["droplet_ids"]) == sorted(int(stack.ids()[a]) for a in WEB)
    # 3. undo: back to the first image, batched and guarded
    undone = stack.rollout("--undo", *rolling)
    assert undone.exit_code == 0, undone.output
    assert undone.stdout.splitlines()[0] == (
        f"done: undone: 3 droplets now run image {stack.good}, all healthy"
    )
    invariant(stack, tmp_path, stack.good)
    # 4. a rollout paused, then aborted: rolled back in batches
    again = stack.rollout("--image", stack.good2, "--pause-after", "1", *rolling)
    assert again.exit_code == 5, again.output
    aborted = stack.rollout("--abort", *rolling)
    assert aborted.exit_code == 4, aborted.output
    assert aborted.stdout.splitlines()[0] == (
        f"rolled-back: aborted: 2 droplets rolled back to image {stack.good} in batches, all "
        "healthy"
    )
    invariant(stack, tmp_path, stack.good)
    assert get_tfvar(stack.tfvars, "image_slug") == stack.good
    assert get_tfvar(stack.tfvars, "wp_node_images") == {}
    history = stack.rollout("--history", "--json")
    assert [(e["kind"], e["status"]) for e in json.loads(history.stdout)] == [
        ("rollout", "paused"),
        ("rollout", "done"),
        ("undo", "done"),
        ("rollout", "paused"),
        ("abort", "rolled-back"),
    ]
