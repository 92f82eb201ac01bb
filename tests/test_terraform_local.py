"""terraform/ against the local cloud, with the embedded Terraform and with the one on PATH."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need

from scaler.local.api import Delays, LocalCloud
from scaler.terraform import (
    NoState,
    Terraform,
    TerraformError,
    TerraformFailed,
    TerraformNotFound,
    find_engine,
    local_provider,
    state_pull,
    summarize_plan,
)

ENGINES = ["embedded", "path"]
WEB = [f"digitalocean_droplet.wp_node[{i}]" for i in range(3)]
LB = "digitalocean_loadbalancer.wp_lb"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of our own: quick delays and no rate limit, so both engines run fast."""
    with LocalCloud(
        tmp_path_factory.mktemp("cloud"),
        delays=Delays.uniform(0.2),
        rate_limit_per_minute=100_000,
    ) as cloud:
        yield cloud


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A copy of terraform/ to run in (Terraform writes .terraform, state and plans there)."""
    return Path(shutil.copytree(ROOT / "terraform", tmp_path / "terraform"))


def engine_for(name: str) -> str:
    """'embedded', or the path of the terraform on PATH (skip without one)."""
    if name == "embedded":
        return name
    found = shutil.which("terraform")
    need(found is not None, "no terraform on PATH")
    assert found is not None
    return found


def api(cloud: LocalCloud, method: str, path: str) -> Any:
    """One call to the local cloud's DigitalOcean API, as any client would make it."""
    req = urllib.request.Request(f"{cloud.url}{path}", method=method)
    req.add_header("Authorization", f"Bearer {cloud.env()['DIGITALOCEAN_TOKEN']}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def droplets(cloud: LocalCloud, tag: str) -> list[dict[str, Any]]:
    found = api(cloud, "GET", f"/v2/droplets?tag_name={tag}&per_page=200")["droplets"]
    return sorted(found, key=lambda d: d["name"])


def public_ip(droplet: dict[str, Any]) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")


def changes(plan: dict[str, Any]) -> dict[str, list[str]]:
    """Resource address -> planned actions, for everything that is not a no-op."""
    return {
        c["address"]: c["change"]["actions"]
        for c in plan["resource_changes"]
        if c["change"]["actions"] != ["no-op"]
    }


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_stack_lifecycle(cloud: LocalCloud, stack: Path, engine: str) -> None:
    cloud.reset()
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env, engine=engine_for(engine))
        assert tf.embedded == (engine == "embedded")
        tf.init()
        tf.apply()

        web, db = droplets(cloud, "wp_node"), droplets(cloud, "db_node")
        assert [d["name"] for d in web] == [f"wordpress-wp-node-0{i}" for i in (1, 2, 3)]
        assert [d["name"] for d in db] == [f"wordpress-db-node-0{i}" for i in (1, 2, 3)]
        assert {d["status"] for d in web + db} == {"active"}
        assert {d["size_slug"] for d in web} == {"s-1vcpu-1gb"}
        assert {d["image"]["slug"] for d in web} == {"debian-12-x64"}
        assert all(set(d["tags"]) == {"wp_node", "wordpress"} for d in web)
        (lb,) = api(cloud, "GET", "/v2/load_balancers")["load_balancers"]
        assert sorted(lb["droplet_ids"]) == sorted(d["id"] for d in web)
        assert lb["status"] == "active"
        assert [
            (r["entry_protocol"], r["entry_port"], r["target_protocol"], r["target_port"])
            for r in lb["forwarding_rules"]
        ] == [("http", 80, "http", 80)]
        check = lb["health_check"]
        assert (check["protocol"], check["port"], check["path"]) == ("http", 80, "/")
        assert (check["check_interval_seconds"], check["response_timeout_seconds"]) == (10, 5)
        assert (check["healthy_threshold"], check["unhealthy_threshold"]) == (3, 3)
        (fip,) = api(cloud, "GET", "/v2/reserved_ips")["reserved_ips"]
        assert fip["droplet"]["id"] == db[0]["id"]
        firewalls = {f["name"]: f for f in api(cloud, "GET", "/v2/firewalls")["firewalls"]}
        assert sorted(firewalls) == ["wordpress-db-node", "wordpress-wp-node"]
        web_in = {r["ports"]: r["sources"] for r in firewalls["wordpress-wp-node"]["inbound_rules"]}
        assert web_in == {
            "22": {"addresses": ["0.0.0.0/0", "::/0"]},
            "80": {"load_balancer_uids": [lb["id"]]},
        }
        db_in = {r["ports"]: r["sources"] for r in firewalls["wordpress-db-node"]["inbound_rules"]}
        assert db_in["3306"] == {"tags": ["wp_node"]}
        assert firewalls["wordpress-db-node"]["tags"] == ["db_node"]

        out = tf.output()
        assert out["lb_ip"] == lb["ip"]
        assert sorted(out["wp_node_ips"]) == sorted(public_ip(d) for d in web)
        assert out["db_fip"] == fip["ip"]
        state = json.loads(tf.state_pull())
        by_type = {(r.get("module", ""), r["type"], r["name"]) for r in state["resources"]}
        assert ("module.galera", "digitalocean_reserved_ip", "ha_db_fip") in by_type
        assert ("module.galera", "digitalocean_reserved_ip_assignment", "ha_db_fip") in by_type

        # Nothing to do right after an apply.
        assert tf.plan().changed is False

        # A new image replaces exactly the web droplets; the load balancer follows in place.
        plan = tf.plan(vars={"image_slug": "ubuntu-22-04-x64"})
        assert plan.changed
        assert changes(tf.show_plan_json(plan.file)) == {
            **{a: ["create", "delete"] for a in WEB},
            LB: ["update"],
        }

        # A new size resizes the web droplets in place.
        sized = {"wp_node_size": "s-2vcpu-2gb"}
        plan = tf.plan(vars=sized)
        assert changes(tf.show_plan_json(plan.file)) == {a: ["update"] for a in WEB}
        tf.apply(plan.file)
        resized = droplets(cloud, "wp_node")
        assert [d["id"] for d in resized] == [d["id"] for d in web]
        assert {(d["size_slug"], d["status"]) for d in resized} == {("s-2vcpu-2gb", "active")}
        assert tf.plan(vars=sized).changed is False

        # Applying the new image: new web droplets behind the load balancer, the database kept.
        tf.apply(vars={**sized, "image_slug": "ubuntu-22-04-x64"})
        replaced = droplets(cloud, "wp_node")
        assert {d["image"]["slug"] for d in replaced} == {"ubuntu-22-04-x64"}
        assert not {d["id"] for d in replaced} & {d["id"] for d in web}
        (lb,) = api(cloud, "GET", "/v2/load_balancers")["load_balancers"]
        assert sorted(lb["droplet_ids"]) == sorted(d["id"] for d in replaced)
        assert [d["id"] for d in droplets(cloud, "db_node")] == [d["id"] for d in db]

        # A droplet deleted behind Terraform's back leaves the state and is planned again.
        api(cloud, "DELETE", f"/v2/droplets/{replaced[0]['id']}")
        plan = tf.plan(vars={**sized, "image_slug": "ubuntu-22-04-x64"})
        assert changes(tf.show_plan_json(plan.file)) == {WEB[0]: ["create"], LB: ["update"]}

        tf.destroy()
    summary = cloud.summary()
    assert {k: summary[k] for k in ("droplets", "load_balancers", "floating_ips", "tags")} == {
        "droplets": 0,
        "load_balancers": 0,
        "floating_ips": 0,
        "tags": 0,
    }


@pytest.mark.slow
def test_dev_overrides_fallback(cloud: LocalCloud, stack: Path) -> None:
    cloud.reset()
    with local_provider(cloud.env(), mode="dev_overrides") as env:
        assert "TF_REATTACH_PROVIDERS" not in env
        tf = Terraform(stack, env=env, engine="embedded")
        tf.init()
        tf.apply(vars={"wp_node_count": 1, "db_node_count": 1})
        assert len(droplets(cloud, "wp_node")) == 1
        assert tf.plan(vars={"wp_node_count": 1, "db_node_count": 1}).changed is False
        tf.destroy(vars={"wp_node_count": 1, "db_node_count": 1})
    assert cloud.summary()["droplets"] == 0


def plan_line(tf: Terraform, planfile: Path) -> str:
    """Terraform's own `Plan: ...` (or `No changes.`) line for a saved plan."""
    shown = tf.run("show", "-no-color", str(planfile)).stdout.splitlines()
    return next(line for line in shown if line.startswith(("Plan:", "No changes.")))


@pytest.mark.slow
def test_plan_summary_counts_and_names_what_terraform_plans(cloud: LocalCloud, stack: Path) -> None:
    cloud.reset()
    small = {"wp_node_count": 2, "db_node_count": 1}
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env, engine="embedded")
        tf.init()
        try:
            plan = tf.plan(vars=small)
            created = summarize_plan(tf.show_plan_json(plan.file))
            assert created.lines()[0] == plan_line(tf, plan.file)
            assert created.create == (
                *WEB[:2],
                "digitalocean_firewall.wp_node[0]",
                LB,
                "digitalocean_tag.project",
                "digitalocean_tag.wp_node",
                "module.galera.digitalocean_droplet.db_node[0]",
                "module.galera.digitalocean_firewall.db_node[0]",
                "module.galera.digitalocean_reserved_ip.ha_db_fip",
                "module.galera.digitalocean_reserved_ip_assignment.ha_db_fip",
                "module.galera.digitalocean_tag.db_node",
            )
            assert (created.update, created.replace, created.delete) == ((), (), ())
            tf.apply(plan.file)

            assert summarize_plan(tf.show_plan_json(tf.plan(vars=small).file)).lines() == [
                "No changes."
            ]
            # A new image on one droplet fewer: one replaced, one destroyed, the balancer updated.
            plan = tf.plan(vars={**small, "wp_node_count": 1, "image_slug": "ubuntu-22-04-x64"})
            summary = summarize_plan(tf.show_plan_json(plan.file))
            assert summary.lines() == [
                "Plan: 1 to add, 1 to change, 2 to destroy.",
                f"  ~ update  {LB}",
                f"-/+ replace {WEB[0]}",
                f"  - destroy {WEB[1]}",
            ]
            assert summary.lines()[0] == plan_line(tf, plan.file)
        finally:
            tf.destroy(vars=small)
    assert cloud.summary()["droplets"] == 0


def test_relative_directory_and_plan_file(
    cloud: LocalCloud, stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `scaler rollout -C stack` hands relative paths; Terraform itself runs inside the directory.
    monkeypatch.chdir(stack.parent)
    with local_provider(cloud.env()) as env:
        tf = Terraform(Path(stack.name), env=env, engine="embedded")
        tf.init()
        plan = tf.plan(Path(stack.name) / "relative.tfplan", vars={"wp_node_count": 1})
        assert plan.file == stack / "relative.tfplan" and plan.file.is_file()
        assert plan.changed is True
        shown = tf.show_plan_json(Path(stack.name) / "relative.tfplan")
    assert "digitalocean_droplet.wp_node[0]" in changes(shown)


@pytest.mark.parametrize("engine", ENGINES)
def test_unknown_argument_is_a_one_line_error(cloud: LocalCloud, stack: Path, engine: str) -> None:
    (stack / "extra.tf").write_text(
        'resource "digitalocean_tag" "x" {\n  name  = "x"\n  color = "red"\n}\n'
    )
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env, engine=engine_for(engine))
        tf.init()
        with pytest.raises(TerraformFailed) as err:
            tf.plan()
    assert str(err.value) == (
        "terraform plan failed (exit 1): Error: Unsupported argument: "
        'An argument named "color" is not expected here.'
    )


def test_provider_without_token_says_what_to_set(
    cloud: LocalCloud, stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    with local_provider({"DIGITALOCEAN_API_URL": cloud.url}) as env:
        tf = Terraform(stack, env=env, engine="embedded")
        tf.init()
        with pytest.raises(TerraformFailed) as err:
            tf.plan()
    assert str(err.value) == (
        "terraform plan failed (exit 1): "
        "Error: no DigitalOcean token: set DIGITALOCEAN_TOKEN or the token argument"
    )


def test_api_failure_taints_and_destroy_cleans_up(cloud: LocalCloud, stack: Path) -> None:
    cloud.reset()
    cloud.faults.error_action(action_type="create")
    small = {"wp_node_count": 1, "db_node_count": 1}
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env, engine="embedded")
        tf.init()
        with pytest.raises(TerraformFailed) as err:
            tf.apply(vars=small)
        assert str(err.value).startswith("terraform apply failed (exit 1): Error: action ")
        assert str(err.value).endswith(") errored")
        assert "create droplet" in str(err.value)
        tf.destroy(vars=small)
    assert cloud.summary()["droplets"] == 0


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TerraformError) as err:
        Terraform(tmp_path / "nope")
    assert str(err.value) == (
        f"no Terraform directory {tmp_path / 'nope'}; pass the folder with the *.tf files"
    )


def test_state_pull_without_state(tmp_path: Path) -> None:
    with pytest.raises(NoState) as err:
        state_pull(tmp_path, engine="embedded")
    assert str(err.value) == (
        f"no Terraform state in {tmp_path}; run `terraform apply` there first "
        "or point at the directory that holds the state"
    )


def test_state_pull_reads_a_local_state(tmp_path: Path) -> None:
    state = {"version": 4, "terraform_version": "1.11.0", "serial": 3, "lineage": "x"}
    state |= {"outputs": {}, "resources": []}
    (tmp_path / "terraform.tfstate").write_text(json.dumps(state))
    assert json.loads(state_pull(tmp_path, engine="embedded"))["serial"] == 3


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(find_engine("embedded")).name == "scaler-terraform"
    monkeypatch.setenv("SCALER_TERRAFORM", "embedded")
    assert Path(find_engine()).name == "scaler-terraform"
    monkeypatch.setenv("SCALER_TERRAFORM", "/nonexistent/terraform")
    with pytest.raises(TerraformNotFound) as err:
        find_engine()
    assert str(err.value) == (
        "no Terraform at '/nonexistent/terraform' (from --terraform-bin or $SCALER_TERRAFORM); "
        "pass a terraform or tofu binary, or 'embedded' for the engine scaler ships"
    )
    monkeypatch.delenv("SCALER_TERRAFORM")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Path(find_engine()).name == "scaler-terraform"


def test_embedded_engine_is_terraform(tmp_path: Path) -> None:
    result = Terraform(tmp_path, engine="embedded").run("version")
    assert result.stdout.startswith("Terraform v1.")


def test_failure_message_never_holds_the_token() -> None:
    token = "dop_v1_" + "f" * 64
    err = TerraformFailed("apply", 1, f"Error: bad request\n\nrejected token {token}\n", [token])
    assert str(err) == "terraform apply failed (exit 1): Error: bad request: rejected token ***"
    assert token not in err.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_stack_validates_against_the_provider_schema(
    cloud: LocalCloud, stack: Path, engine: str
) -> None:
    with local_provider(cloud.env()) as env:
        tf = Terraform(stack, env=env, engine=engine_for(engine))
        tf.init()
        result = json.loads(tf.run("validate", json=True).stdout)
    assert (result["valid"], result["error_count"], result["warning_count"]) == (True, 0, 0)
    assert result["diagnostics"] == []


# Meta-arguments and blocks every resource may have.
_META = {"count", "for_each", "depends_on", "provider", "lifecycle"}
# digitalocean_loadbalancer's arguments in the real provider's 2.x documentation (no state in
# ../shared/data has a load balancer to learn them from).
_REAL_LB = {
    "name", "region", "size", "size_unit", "algorithm", "forwarding_rule", "healthcheck",
    "sticky_sessions", "droplet_ids", "droplet_tag", "redirect_http_to_https",
    "enable_proxy_protocol", "enable_backend_keepalive", "http_idle_timeout_seconds",
    "disable_lets_encrypt_dns_records", "project_id", "vpc_uuid", "firewall", "type",
}  # fmt: skip
_REAL_BLOCKS = {
    "forwarding_rule": {
        "entry_protocol", "entry_port", "target_protocol", "target_port", "certificate_id",
        "certificate_name", "tls_passthrough",
    },
    "healthcheck": {
        "protocol", "port", "path", "check_interval_seconds", "response_timeout_seconds",
        "healthy_threshold", "unhealthy_threshold",
    },
}  # fmt: skip


def _real_attributes(shared_data: Path) -> dict[str, set[str]]:
    """Attribute names the real DigitalOcean provider wrote into real v4 states, by type."""
    seen: dict[str, set[str]] = {}
    for path in sorted((shared_data / "tfstate" / "realworld").glob("*.tfstate")):
        for resource in json.loads(path.read_text()).get("resources", []):
            if resource["type"].startswith("digitalocean_") and resource["mode"] == "managed":
                for instance in resource.get("instances", []):
                    seen.setdefault(resource["type"], set()).update(instance["attributes"])
    return seen


def _plain(node: Any) -> Any:
    """python-hcl2's parse without its bookkeeping: no __keys__, no quotes around names."""
    if isinstance(node, dict):
        return {k.strip('"'): _plain(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node.strip('"') if isinstance(node, str) else node


def _schema_arguments(shared_data: Path) -> dict[str, tuple[set[str], dict[str, set[str]]]]:
    """What the real provider's schema (do-provider/schema.json) lets a configuration set, by
    type: its settable attributes and block names, and each block's settable attributes."""

    def settable(attributes: dict[str, Any]) -> set[str]:
        return {k for k, v in attributes.items() if v["required"] or v["optional"]}

    schema = json.loads((shared_data / "do-provider" / "schema.json").read_text())["resources"]
    return {
        kind: (
            settable(spec["attributes"]) | set(spec.get("blocks") or {}),
            {b: settable(inner["attributes"]) for b, inner in (spec.get("blocks") or {}).items()},
        )
        for kind, spec in schema.items()
    }


def test_stack_uses_only_real_provider_arguments(shared_data: Path) -> None:
    """terraform/ stays valid for real DigitalOcean: nothing in it exists only locally (checked
    against real states where they have the type, else against the real provider's schema)."""
    import hcl2

    real = _real_attributes(shared_data)
    schema = _schema_arguments(shared_data)
    checked: set[str] = set()
    for path in sorted((ROOT / "terraform").rglob("*.tf")):
        doc = _plain(hcl2.loads(path.read_text()))
        for block in doc.get("provider", []):
            # the token and the endpoint come from the environment, never from the configuration
            assert block == {"digitalocean": {}}, path
        for block in doc.get("terraform", []):
            (providers,) = block["required_providers"]
            assert providers["digitalocean"] == {
                "source": "digitalocean/digitalocean",
                "version": "~> 2.0",
            }, path
        for entry in doc.get("resource", []):
            for kind, named in entry.items():
                for name, body in named.items():
                    args = set(body) - _META
                    allowed = _REAL_LB if kind == "digitalocean_loadbalancer" else real.get(kind)
                    blocks: dict[str, set[str]] = {}
                    if allowed is None and kind in schema:
                        allowed, blocks = schema[kind]
                    assert allowed is not None, f"{kind} is in no real state; check it by hand"
                    assert args <= allowed, f"{path} {kind}.{name}: {sorted(args - allowed)}"
                    for sub, names in blocks.items():
                        for inner in body.get(sub, []):
                            assert set(inner) <= names, f"{path} {kind}.{name}.{sub}"
                    if kind == "digitalocean_loadbalancer":
                        for sub, names in _REAL_BLOCKS.items():
                            for inner in body.get(sub, []):
                                assert set(inner) <= names, f"{path} {kind}.{name}.{sub}"
                    checked.add(kind)
    assert checked == {
        "digitalocean_droplet",
        "digitalocean_firewall",
        "digitalocean_reserved_ip",
        "digitalocean_reserved_ip_assignment",
        "digitalocean_loadbalancer",
        "digitalocean_ssh_key",
        "digitalocean_tag",
    }
