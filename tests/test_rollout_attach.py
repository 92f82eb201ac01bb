"""Rolling rollouts for every way a stack attaches droplets to its balancer (droplet_ids,
droplet_tag, a balancer outside the stack that finds them by tag), for `count` and `for_each`
droplets, and for a stack without the pin variable (lifecycle ignore_changes + -replace).

Directory droplets on a module cloud of their own: what is tested is which droplets are behind
the balancer (read from the API) and what Terraform replaces, batch by batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import cloud_api as api
from conftest import module_cloud, wait_for
from tutorial import ATTACH, WEB_TAG, Attach, outside_balancer, write_stack

from scaler import health
from scaler.cli import main
from scaler.local.api import LocalCloud
from scaler.terraform import Terraform, local_provider
from scaler.tfvars import get_tfvar

WEB_PORT = 18081
FAST = ["--health-interval", "0.05", "--health-grace", "0", "--health-timeout", "20s"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with module_cloud(
        tmp_path_factory, "attach-cloud", rate_limit_per_minute=100_000, web_port=WEB_PORT
    ) as cloud:
        yield cloud


def make_image(cloud: LocalCloud, name: str, page: str | None) -> str:
    """A snapshot of a droplet whose web root serves `page` at / (None: nothing, a 404)."""
    droplet = api(
        cloud,
        "POST",
        "droplets",
        {
            "name": f"build-{name}",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "debian-12-x64",
        },
    )["droplet"]
    wait_for(
        "the build droplet",
        lambda: api(cloud, "GET", f"droplets/{droplet['id']}")["droplet"]["status"] == "active",
    )
    if page is not None:
        root = cloud.machines.web_root(droplet["id"])
        root.mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(page)
    action = api(
        cloud, "POST", f"droplets/{droplet['id']}/actions", {"type": "snapshot", "name": name}
    )["action"]
    wait_for(
        "the snapshot",
        lambda: api(cloud, "GET", f"actions/{action['id']}")["action"]["status"] == "completed",
    )
    snaps = api(cloud, "GET", f"droplets/{droplet['id']}/snapshots")["snapshots"]
    api(cloud, "DELETE", f"droplets/{droplet['id']}")
    return str(next(s["id"] for s in snaps if s["name"] == name))


@dataclass
class Site:
    dir: Path
    cloud: LocalCloud
    attach: Attach
    old: str
    new: str

    @property
    def tfvars(self) -> Path:
        return self.dir / "terraform.tfvars"

    def rollout(self, *args: str) -> Result:
        env = {**self.cloud.env(), "SCALER_LOCAL_WEB_PORT": str(WEB_PORT)}
        return CliRunner().invoke(main, ["rollout", "-C", str(self.dir), *args], env=env)

    def web(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = api(
            self.cloud, "GET", f"droplets?tag_name={WEB_TAG}&per_page=200"
        )["droplets"]
        return found

    def others(self) -> dict[str, int]:
        """Every resource but the web droplets: address -> id (they must not change)."""
        state = json.loads((self.dir / "terraform.tfstate").read_text())
        out = {}
        for res in state["resources"]:
            if res["name"] == "wp_node":
                continue
            for inst in res["instances"]:
                out[f"{res.get('module', '')}.{res['name']}"] = inst["attributes"]["id"]
        return out


def _ip(droplet: dict[str, Any]) -> str:
    return str(next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"))


class Sampler:
    """Counts, in a thread, the healthy droplets the API says are behind the balancer."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        check = health.HealthCheck(response_timeout=1.0)
        while not self._stop.is_set():
            (lb,) = api(self.cloud, "GET", "load_balancers")["load_balancers"]
            droplets = api(self.cloud, "GET", "droplets?per_page=200")["droplets"]
            ips = {d["id"]: _ip(d) for d in droplets}
            behind = [ips[i] for i in lb["droplet_ids"] if i in ips]
            self.counts.append(health.count_healthy(behind, check, {80: WEB_PORT}))
            self._stop.wait(0.03)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(params=ATTACH)
def site(request: pytest.FixtureRequest, cloud: LocalCloud, tmp_path: Path) -> Iterator[Site]:
    """A tutorial-style stack (3 web droplets on image `old`) applied on a clean cloud."""
    cloud.reset()
    old = make_image(cloud, "site-1", "v1\n")
    new = make_image(cloud, "site-2", "v2\n")
    attach: Attach = request.param
    folder = write_stack(tmp_path / "stack", attach, old)
    with local_provider(cloud.env()) as env:
        Terraform(folder, env=env).init()
        Terraform(folder, env=env).apply()
    if attach == "outside":
        api(cloud, "POST", "load_balancers", outside_balancer())
    yield Site(folder, cloud, attach, old, new)


@pytest.mark.slow
def test_rolling_rollout_with_canary_keeps_the_floor(site: Site) -> None:
    before = site.others()
    with Sampler(site.cloud) as sampler:
        result = site.rollout("--image", site.new, "--canary", "--batch-size", "1", "--yes", *FAST)
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.splitlines()[0] == f"done: 3 droplets now run image {site.new}, all healthy"
    )
    web = site.web()
    assert sorted(str(d["image"]["id"]) for d in web) == [site.new] * 3
    assert site.others() == before  # the balancer, the database droplet and ha_db_fip stay
    # never fewer than the floor (3 - max-unavailable 1) healthy behind the balancer
    assert sampler.counts and min(sampler.counts) >= 2
    (lb,) = api(site.cloud, "GET", "load_balancers")["load_balancers"]
    assert sorted(lb["droplet_ids"]) == sorted(d["id"] for d in web)
    assert get_tfvar(site.tfvars, "image_slug") == site.new
    if site.attach == "ignore_changes":
        assert "each batch is replaced with terraform's -replace" in result.stderr
    else:
        assert get_tfvar(site.tfvars, "wp_node_images") == {}


@pytest.mark.slow
@pytest.mark.parametrize("site", ["droplet_tag"], indirect=True)
def test_interrupted_by_low_capacity_names_the_droplet_without_the_tag(site: Site) -> None:
    # wp_node[1] loses the balancer's tag: the balancer drops it, so replacing wp_node[0]
    # would leave one droplet behind it.
    second = next(d for d in site.web() if d["name"] == "tut-web-02")
    api(
        site.cloud,
        "DELETE",
        f"tags/{WEB_TAG}/resources",
        {"resources": [{"resource_id": str(second["id"]), "resource_type": "droplet"}]},
    )
    api(site.cloud, "POST", "tags", {"name": "other"})
    api(
        site.cloud,
        "POST",
        "tags/other/resources",
        {"resources": [{"resource_id": str(second["id"]), "resource_type": "droplet"}]},
    )
    before = site.tfvars.read_text()
    result = site.rollout(
        "--image", site.new, "--batch-size", "1", "--yes", *FAST[:-2], "--health-timeout", "1s"
    )
    assert result.exit_code == 5, result.output  # waiting for capacity: a person fixes it
    lines = result.stderr.splitlines()
    assert lines[-1] == (
        "Error: rollout failed: batch 1/3: only 1 healthy droplets would stay behind the load "
        "balancer tut-lb (digitalocean_loadbalancer.www, droplet_tag web) while "
        "digitalocean_droplet.wp_node[0] is replaced, under the floor of 2 (--max-unavailable "
        "1); not behind it: digitalocean_droplet.wp_node[1]: the balancer takes the droplets "
        "tagged 'web' (digitalocean_droplet.wp_node[1] has other): add 'web' to the droplets' "
        "tags; nothing of this batch was changed: fix that and run scaler rollout --resume; "
        f"{site.tfvars} holds image_slug = {site.new} and wp_node_images pins [0] {site.old}, "
        f"[1] {site.old}, [2] {site.old}: a plain terraform apply changes nothing this "
        "rollout has not changed"
    )
    assert sorted(str(d["image"]["id"]) for d in site.web()) == [site.old] * 2
    assert before != site.tfvars.read_text()  # the pins and the image, as the message says


@pytest.mark.parametrize("site", ["for_each"], indirect=True)
def test_dry_run_of_a_for_each_stack_pins_by_key(site: Site) -> None:
    before = site.tfvars.read_bytes()
    result = site.rollout("--image", site.new, "--batch-size", "1", "--dry-run", *FAST)
    assert result.exit_code == 0, result.output
    for key in ("blue", "green", "red"):
        assert f'plan replaces digitalocean_droplet.wp_node["{key}"]' in result.stderr
    assert site.tfvars.read_bytes() == before


@pytest.mark.parametrize("site", ["ignore_changes"], indirect=True)
def test_without_the_pin_variable_a_plain_apply_changes_nothing(site: Site) -> None:
    """ignore_changes = [image]: image_slug may name the new image before a droplet is
    replaced; a plain plan then has nothing to do."""
    result = site.rollout("--image", site.new, "--batch-size", "1", "--dry-run", *FAST)
    assert result.exit_code == 0, result.output
    assert "each batch is replaced with terraform's -replace" in result.stderr
    (site.tfvars).write_text(f'image_slug = "{site.new}"\n')
    with local_provider(site.cloud.env()) as env:
        plan = Terraform(site.dir, env=env).plan()
    assert not plan.changed


def test_for_each_targets_pin_by_their_key_and_get_the_for_each_lines() -> None:
    from scaler.rollout import RolloutError, pin_var_missing
    from scaler.rollout import pin_key as _index

    assert _index('digitalocean_droplet.wp_node["blue"]') == "blue"
    assert _index("digitalocean_droplet.wp_node[2]") == "2"
    with pytest.raises(RolloutError, match=r"^digitalocean_droplet\.web is a single droplet"):
        _index("digitalocean_droplet.web")
    assert "image = lookup(var.wp_node_images, each.key, var.image_slug)" in pin_var_missing(
        "wp_node_images", for_each=True
    )
    assert "a map from for_each key to image" in pin_var_missing("wp_node_images", for_each=True)


@pytest.mark.slow
def test_strategy_all_brings_the_new_droplets_up_beside_the_old(site: Site) -> None:
    """Every droplet at once: the balancer has old and new until the new pass its check, then
    Terraform destroys the old; a plain plan shows no changes and nothing of scaler's is left
    in the state (scaler.rollout.surge), whatever attaches the droplets to the balancer."""
    before = site.others()
    old_ids = {d["id"] for d in site.web()}
    with Sampler(site.cloud) as sampler:
        result = site.rollout("--image", site.new, "--strategy", "all", "--yes", *FAST)
    assert result.exit_code == 0, result.output
    assert "moving the 3 old droplets aside in the Terraform state" in result.stderr
    web = site.web()
    assert sorted(str(d["image"]["id"]) for d in web) == [site.new] * 3
    assert not old_ids & {d["id"] for d in web}
    assert site.others() == before
    # never fewer than 3 healthy behind the balancer, and at one point the 3 old and 3 new
    assert sampler.counts and min(sampler.counts) >= 3 and max(sampler.counts) == 6
    (lb,) = api(site.cloud, "GET", "load_balancers")["load_balancers"]
    assert sorted(lb["droplet_ids"]) == sorted(d["id"] for d in web)
    state = json.loads((site.dir / "terraform.tfstate").read_text())
    assert not [r["name"] for r in state["resources"] if "_scaler_" in r["name"]]
    with local_provider(site.cloud.env()) as env:
        assert not Terraform(site.dir, env=env).plan(out=site.dir / "check.tfplan").changed
