"""scaler.state: finding and reading Terraform state of every version (real files in ../shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import need, shared_files

from scaler.errors import StateError, StateNotFound
from scaler.state import (
    Resource,
    StateSource,
    load_state,
    locate_state,
    parse_state,
    read_state,
    unflatten,
)

# Written from reading each file: its format, every managed resource instance (data sources
# left out), and the root outputs. Index keys as Terraform prints them.
EXPECTED: dict[str, tuple[str, list[str], list[str]]] = {
    "realworld/NeilHanlon__advancedlinuxadmin__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.openstackaio-1",
            "digitalocean_droplet.openstackaio-2",
            "digitalocean_droplet.openstackaio-3",
            "digitalocean_project_resources.openstackaio-1",
            "digitalocean_project_resources.openstackaio-2",
            "digitalocean_project_resources.openstackaio-3",
            "digitalocean_volume.openstackdata",
            "digitalocean_volume_attachment.openstackaio_volume1",
        ],
        [],
    ),
    "realworld/QuickServer__quickstart__1.tfstate": (
        "v3",
        [
            "digitalocean_droplet.rancheragent-medium-all",
            "digitalocean_droplet.rancheragent-small-all[0]",
            "digitalocean_droplet.rancheragent-small-all[1]",
            "digitalocean_droplet.rancherserver",
        ],
        ["rancher-url"],
    ),
    "realworld/Smartbrood__terraform-islandora__1.tfstate": (
        "v3",
        [
            "digitalocean_droplet.islandora",
            "digitalocean_ssh_key.default",
            "digitalocean_tag.islandora",
        ],
        ["public_ip"],
    ),
    "realworld/adityareddy__Asgard__1.tfstate": (
        "v1",
        [
            "digitalocean_droplet.mesos-master[0]",
            "digitalocean_droplet.mesos-master[1]",
            "digitalocean_droplet.mesos-slave[0]",
            "digitalocean_droplet.mesos-slave[1]",
            "digitalocean_droplet.mesos-slave[2]",
            "digitalocean_ssh_key.default",
        ],
        ["master_ips", "slave_ips"],
    ),
    "realworld/c00w__demesure__1.tfstate": (
        "v3",
        [f"digitalocean_droplet.demesure[{i}]" for i in (0, 1, 3, 4, 6, 7, 8, 9, 10, 11)]
        + ["digitalocean_ssh_key.rene"],
        [],
    ),
    "realworld/christinto__bitcannery-cli__1.tfstate": (
        "v3",
        [f"digitalocean_droplet.dms[{i}]" for i in range(3)],
        ["Names", "Public_ips"],
    ),
    "realworld/cityhunterxx__Terraform_Project__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.cityhunter-main",
            "digitalocean_reserved_ip.city_reservedIP",
            "digitalocean_ssh_key.khalil-public-key",
        ],
        [],
    ),
    "realworld/docker-flow__docker-flow-proxy__1.tfstate": (
        "v3",
        [
            "digitalocean_droplet.swarm-manager-1",
            "digitalocean_droplet.swarm-manager-2",
            "digitalocean_droplet.swarm-manager-3",
            "digitalocean_floating_ip.docker_1",
            "digitalocean_ssh_key.proxy",
        ],
        [
            "floating_ip_1",
            "swarm_manager_1_private_ip",
            "swarm_manager_1_public_ip",
            "swarm_manager_2_private_ip",
            "swarm_manager_2_public_ip",
            "swarm_manager_3_private_ip",
            "swarm_manager_3_public_ip",
        ],
    ),
    "realworld/fireheet__devops__1.tfstate": (
        "v4",
        [
            "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001",
            "module.fireheet-digitalocean.digitalocean_firewall.fhet-firewall",
            "module.fireheet-digitalocean.digitalocean_ssh_key.fheet_key",
            "module.fireheet-digitalocean.digitalocean_tag.fheet_tag",
            "module.fireheet-digitalocean.digitalocean_vpc.fheet_new_vpc_0001",
        ],
        [],
    ),
    "realworld/ghostoptimizer__iac-infra__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.blog_server",
            "digitalocean_droplet.web",
            "digitalocean_floating_ip.blog_ip",
            "digitalocean_floating_ip_assignment.assign_ip",
        ],
        ["vps_ip"],
    ),
    "realworld/leyendanerd__node-ci__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.web",
            "digitalocean_floating_ip.web",
            "digitalocean_floating_ip_assignment.web",
        ],
        [],
    ),
    "realworld/mangatmodi__PersonalHosting__1.tfstate": (
        "v3",
        ["digitalocean_droplet.mangatmodi_personal"],
        [],
    ),
    "realworld/moudjames23__devOps__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.octa-dockerapps",
            "digitalocean_floating_ip.octa-flotting-ip",
            "digitalocean_ssh_key.moud-sshkey",
        ],
        [],
    ),
    "realworld/petrem__learn__1.tfstate": (
        "v3",
        [
            "digitalocean_ssh_key.petrem_dsa",
            "digitalocean_ssh_key.petrem_rsa",
            "digitalocean_ssh_key.pmierlutiu",
            "digitalocean_tag.learn",
        ],
        [],
    ),
    "realworld/unknowntpo__playground-2022__1.tfstate": (
        "v4",
        [
            "digitalocean_droplet.droplets[0]",
            "digitalocean_droplet.droplets[1]",
            "digitalocean_droplet.droplets[2]",
            "digitalocean_tag.kube",
        ],
        [],
    ),
    "terraform-inventory/example_v1.tfstate": (
        "v1",
        [
            "vsphere_virtual_machine.test",
            "aws_instance.alpha[0]",
            "aws_instance.alpha[1]",
            "aws_instance.beta",
            "digitalocean_droplet.gamma",
        ],
        ["datacenter"],
    ),
    "terraform-inventory/state_pre012_envhostname.tfstate.json": (
        "v1",
        ["libvirt_domain.fourteen"],
        [],
    ),
    "terraform-inventory/state_pre012_multi_provider.tfstate.json": (
        "v1",
        [
            "aws_instance.one[0]",
            "aws_instance.dup[0]",
            "aws_instance.one[1]",
            "aws_instance.two",
            "aws_security_group.example",
            "digitalocean_droplet.three",
            "cloudstack_instance.four",
            "vsphere_virtual_machine.five",
            "openstack_compute_instance_v2.six",
            "softlayer_virtual_guest.seven",
            "google_compute_instance.eight",
            "exoscale_compute.nine",
            "triton_machine.ten",
            "scaleway_server.eleven",
            "vsphere_virtual_machine.twelve",
            "packet_device.thirteen",
            "libvirt_domain.fourteen",
            "opentelekomcloud_compute_instance_v2.nineteen",
            "profitbricks_server.sixteen",
            "aws_spot_instance_request.seventeen",
            "linode_instance.eighteen",
        ],
        ["olddatacenter", "datacenter", "ids", "map"],
    ),
    "terraform-inventory/state_012_show_json.json": (
        "show-json",
        [
            "aws_instance.one",
            'aws_route53_record.this["testb"]',
            "vsphere_tag.bar",
            "vsphere_tag_category.foo",
            "vsphere_virtual_machine.vm",
            "module.my-module-two.aws_instance.host",
            "module.my-module-three.aws_instance.host[0]",
            "module.my-module-three.aws_instance.host[1]",
            'module.my-module-four.aws_instance.host["for_each_example.first"]',
            'module.my-module-four.aws_instance.host["for_each_example.second"]',
        ],
        ["my_endpoint", "my_password", "map"],
    ),
}

STATE_FILES = [
    p
    for p in shared_files("tfstate", "*/*")
    if not p.name.startswith(("expected_", "SOURCE")) and p.suffix != ".md"
]


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_every_shared_state_has_an_expectation(shared_data: Path) -> None:
    assert sorted(_key(p) for p in STATE_FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("path", STATE_FILES, ids=_key)
def test_reads_every_shared_state(path: Path) -> None:
    fmt, addresses, outputs = EXPECTED[_key(path)]
    state = read_state(path)
    assert state.format == fmt
    assert sorted(r.address for r in state.resources) == sorted(addresses)
    assert all(r.status == "live" for r in state.resources)
    assert [o.name for o in state.outputs] == outputs


def _resource(path: Path, address: str) -> Resource:
    return next(r for r in read_state(path).resources if r.address == address)


def test_v4_values_keep_their_types(shared_data: Path) -> None:
    droplet = _resource(
        shared_data / "tfstate/realworld/unknowntpo__playground-2022__1.tfstate",
        "digitalocean_droplet.droplets[1]",
    )
    assert droplet.index == 1
    attrs = droplet.attributes
    assert attrs["ipv4_address"] == "128.199.131.198"
    assert attrs["tags"] == ["kube"]
    assert attrs["memory"] == 1024
    assert attrs["backups"] is False


def test_v3_flatmap_becomes_real_types(shared_data: Path) -> None:
    realworld = shared_data / "tfstate/realworld"
    droplet = _resource(
        realworld / "Smartbrood__terraform-islandora__1.tfstate", "digitalocean_droplet.islandora"
    )
    assert droplet.attributes["tags"] == ["islandora8"]
    assert "tags.#" not in droplet.attributes
    # A set of strings is stored under hash keys; it stays a list.
    personal = _resource(
        realworld / "mangatmodi__PersonalHosting__1.tfstate",
        "digitalocean_droplet.mangatmodi_personal",
    )
    assert personal.attributes["tags"] == ["Personal"]
    assert personal.attributes["private_networking"] is True
    assert personal.attributes["disk"] == 60
    assert personal.attributes["vcpus"] == 2
    assert personal.attributes["id"] == "182339668"
    fip = _resource(
        realworld / "docker-flow__docker-flow-proxy__1.tfstate", "digitalocean_floating_ip.docker_1"
    )
    # droplet_id is a number in v4 states of the same resource.
    assert fip.attributes["droplet_id"] == 45453471
    c00w = read_state(realworld / "c00w__demesure__1.tfstate")
    assert [r.index for r in c00w.resources if r.type == "digitalocean_droplet"] == [
        0,
        1,
        10,
        11,
        3,
        4,
        6,
        7,
        8,
        9,
    ]
    assert all(r.attributes["tags"] == [] for r in c00w.resources if r.type.endswith("droplet"))


def test_v3_module_path_becomes_a_module_address(tmp_path: Path) -> None:
    state = {
        "version": 3,
        "modules": [
            {"path": ["root"], "outputs": {}, "resources": {}},
            {
                "path": ["root", "galera", "inner"],
                "resources": {
                    "digitalocean_floating_ip.ha_db_fip": {
                        "type": "digitalocean_floating_ip",
                        "primary": {"id": "192.0.2.5", "attributes": {"ip_address": "192.0.2.5"}},
                    }
                },
            },
        ],
    }
    (res,) = parse_state(json.dumps(state)).resources
    assert res.address == "module.galera.module.inner.digitalocean_floating_ip.ha_db_fip"
    assert res.attributes == {"ip_address": "192.0.2.5", "id": "192.0.2.5"}


def test_show_json_outputs_keep_the_sensitive_flag(shared_data: Path) -> None:
    state = read_state(shared_data / "tfstate/terraform-inventory/state_012_show_json.json")
    assert {o.name: (o.value, o.sensitive) for o in state.outputs} == {
        "my_endpoint": ("a.b.c.d.example.com", False),
        "my_password": ("1234", True),
        "map": ({"first": "a", "second": "b"}, False),
    }
    indexes = [r.index for r in state.resources if r.module == "module.my-module-four"]
    assert indexes == ["for_each_example.first", "for_each_example.second"]


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ({"tags.#": "2", "tags.0": "a", "tags.1": "true"}, {"tags": ["a", "true"]}),
        ({"tags.%": "1", "tags.Role": "web"}, {"tags": {"Role": "web"}}),
        ({"tags.#": "1", "tags.Role": "web"}, {"tags": {"Role": "web"}}),
        ({"tags.#": "0"}, {"tags": []}),
        ({"labels.%": "0"}, {"labels": {}}),
        ({"s.#": "2", "s.99": "b", "s.7": "a"}, {"s": ["a", "b"]}),
        (
            {"m.%": "1", "m.kubernetes.io/role": "master"},
            {"m": {"kubernetes.io/role": "master"}},
        ),
        (
            {"nic.#": "1", "nic.1.ip": "10.0.0.1", "nic.1.primary": "true", "nic.1.ports.#": "0"},
            {"nic": [{"ip": "10.0.0.1", "primary": True, "ports": []}]},
        ),
        (
            {"ni.#": "1", "ni.0.addresses.#": "1", "ni.0.addresses.0": "192.0.2.1"},
            {"ni": [{"addresses": ["192.0.2.1"]}]},
        ),
        (
            {"locked": "false", "memory": "1024", "price_hourly": "0.00744", "id": "123"},
            {"locked": False, "memory": 1024, "price_hourly": 0.00744, "id": "123"},
        ),
        ({"size": "512mb", "name": "true-name"}, {"size": "512mb", "name": "true-name"}),
        ({"metadata.a": "b"}, {"metadata.a": "b"}),
        ({"m.#": "very bad", "m.status": "up"}, {"m": {"status": "up"}}),
    ],
)
def test_unflatten(flat: dict[str, str], expected: dict[str, Any]) -> None:
    assert unflatten(flat) == expected


def _v4(instances: list[dict[str, Any]], **resource: Any) -> str:
    res = {"mode": "managed", "type": "digitalocean_droplet", "name": "wp_node", **resource}
    return json.dumps({"version": 4, "resources": [{**res, "instances": instances}]})


def test_v4_tainted_and_deposed_instances_are_marked() -> None:
    text = _v4(
        [
            {"index_key": 0, "attributes": {"ipv4_address": "192.0.2.1"}},
            {"index_key": 1, "status": "tainted", "attributes": {"ipv4_address": "192.0.2.2"}},
            {"index_key": 1, "deposed": "00ab12cd", "attributes": {"ipv4_address": "192.0.2.3"}},
        ]
    )
    statuses = [(r.address, r.status) for r in parse_state(text).resources]
    assert statuses == [
        ("digitalocean_droplet.wp_node[0]", "live"),
        ("digitalocean_droplet.wp_node[1]", "tainted"),
        ("digitalocean_droplet.wp_node[1]", "deposed"),
    ]


def test_v4_data_sources_and_sensitive_attributes_are_left_out() -> None:
    text = json.dumps(
        {
            "version": 4,
            "resources": [
                {"mode": "data", "type": "digitalocean_image", "name": "x", "instances": [{}]},
                {
                    "mode": "managed",
                    "type": "digitalocean_droplet",
                    "name": "w",
                    "instances": [
                        {
                            "attributes": {"ipv4_address": "192.0.2.1", "user_data": "TOKEN"},
                            "sensitive_attributes": [[{"type": "get_attr", "value": "user_data"}]],
                        }
                    ],
                },
            ],
        }
    )
    (res,) = parse_state(text).resources
    assert res.attributes == {"ipv4_address": "192.0.2.1"}


def test_v3_tainted_primary_and_deposed_list() -> None:
    text = json.dumps(
        {
            "version": 3,
            "modules": [
                {
                    "path": ["root"],
                    "resources": {
                        "digitalocean_droplet.a": {
                            "primary": {"id": "1", "attributes": {}, "tainted": True},
                            "deposed": [{"id": "2", "attributes": {}}],
                        }
                    },
                }
            ],
        }
    )
    assert [r.status for r in parse_state(text).resources] == ["tainted", "deposed"]


def test_empty_states_are_valid() -> None:
    assert parse_state("").resources == ()
    assert parse_state('{"version": 4, "resources": [], "outputs": {}}').resources == ()
    assert parse_state('{"format_version": "1.0"}').resources == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "S is not JSON (Expecting value, line 1 column 1); "
         "is it a Terraform state file?"),
        ("[1, 2]", 'S is not a Terraform state (JSON array, expected an object with "version"); '
         "pass the terraform.tfstate file"),
        ('{"terraform": 1}', 'S is not a Terraform state (no "version" field); '
         "pass the terraform.tfstate file"),
        ('{"version": 5}', "S has state version 5, which scaler cannot read "
         "(it reads versions 1 to 4 and `terraform show -json` output)"),
        ('{"version": "4"}', 'S has state version "4", which scaler cannot read '
         "(it reads versions 1 to 4 and `terraform show -json` output)"),
        ('{"version": 4, "resources": [{"mode": "managed"}]}',
         "S is a malformed version-4 state (KeyError: 'type'); "
         "check the file or re-create it with `terraform state pull`"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_error(text: str, message: str) -> None:
    with pytest.raises(StateError) as err:
        parse_state(text, "S")
    assert str(err.value) == message


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(StateError) as err:
        read_state(tmp_path / "nope.tfstate")
    assert str(err.value) == (
        f"Terraform state {tmp_path}/nope.tfstate does not exist (from --state); check the path"
    )
    binary = tmp_path / "bin.tfstate"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StateError) as err:
        read_state(binary)
    assert str(err.value) == (f"{binary} is not a Terraform state (not UTF-8 text; from --state)")


def test_unreadable_file(readable_checkout: Path) -> None:
    # As root, permissions do not stop reads: run the read as user nobody, with the system
    # interpreter (nobody cannot enter root's own Python installation), from a copy of the
    # package nobody can read wherever the checkout is.
    path = readable_checkout / "secret.tfstate"
    path.write_text('{"version": 4}')
    path.chmod(0o000)
    root = os.geteuid() == 0
    python = "/usr/bin/python3" if root else sys.executable
    need(Path(python).is_file(), f"{python} is needed to read as another user")
    code = (
        "import sys; from scaler.state import read_state; from scaler.errors import StateError\n"
        "try: read_state(sys.argv[1])\n"
        "except StateError as e: print(e)\n"
    )
    out = subprocess.run(
        [python, "-c", code, str(path)],
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.setuid(65534)) if root else None,
        cwd=readable_checkout,
        env={**os.environ, "PYTHONPATH": str(readable_checkout)},
        check=True,
    ).stdout
    assert out == f"cannot read Terraform state {path} (from --state): Permission denied\n"


# -- finding the state -------------------------------------------------------------------


def test_locate_order(tmp_path: Path) -> None:
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform.tfstate").write_text("{}")
    env = {"TF_STATE": "env.tfstate"}
    assert locate_state("opt.tfstate", None, env, str(tmp_path)) == StateSource(
        "option", f"{tmp_path}/opt.tfstate", pull=False
    )
    assert locate_state(None, None, env, str(tmp_path)) == StateSource(
        "env", f"{tmp_path}/env.tfstate", pull=False
    )
    assert locate_state(None, None, {"TF_STATE": ""}, str(tmp_path)) == StateSource(
        "cwd", f"{tmp_path}/terraform.tfstate", pull=False
    )
    (tmp_path / "terraform.tfstate").unlink()
    source = locate_state(None, None, {}, str(tmp_path))
    assert source == StateSource("terraform", f"{tmp_path}/terraform", pull=True)
    assert source.describe() == (
        f"running `terraform state pull` in {tmp_path}/terraform (from --terraform-dir)"
    )
    # A directory given as the state is a Terraform directory, as terraform-inventory does.
    assert locate_state(None, None, {"TF_STATE": "terraform"}, str(tmp_path)).pull is True


def test_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(StateNotFound) as err:
        locate_state(None, "infra", {}, str(tmp_path))
    assert str(err.value) == (
        "no Terraform state found (tried TF_STATE (unset), ./terraform.tfstate, "
        "`terraform state pull` in infra/ (no such directory)); pass --state PATH or set TF_STATE"
    )


def test_state_pull_with_real_terraform(tmp_path: Path, shared_data: Path) -> None:
    # No state file around: `terraform state pull` in terraform/, by the real engine (the
    # `terraform` on PATH, else the embedded one), as for a remote backend.
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    (tf_dir / "main.tf").write_text("terraform {}\n")
    real = shared_data / "tfstate/realworld/leyendanerd__node-ci__1.tfstate"
    (tf_dir / "terraform.tfstate").write_bytes(real.read_bytes())
    state, source = load_state(environ={}, cwd=str(tmp_path))
    assert source == StateSource("terraform", str(tf_dir), pull=True)
    # Terraform hands back the same resources (stamped with its own terraform_version).
    assert state.resources == read_state(real).resources


def test_show_json_nested_sensitive_values_hide_the_attribute() -> None:
    doc = {
        "format_version": "1.0",
        "values": {
            "root_module": {
                "resources": [
                    {
                        "mode": "managed",
                        "type": "aws_instance",
                        "name": "a",
                        "values": {"public_ip": "192.0.2.1", "tags": {"k": "v"}, "ud": "x"},
                        "sensitive_values": {"tags": {"k": True}, "ud": True, "public_ip": False},
                    }
                ]
            }
        },
    }
    (res,) = parse_state(json.dumps(doc)).resources
    assert res.attributes == {"public_ip": "192.0.2.1"}


@pytest.mark.parametrize(
    "doc",
    [
        {"format_version": "1.2", "planned_values": {}, "resource_changes": []},
        {"format_version": "1.0", "provider_schemas": {}},
    ],
)
def test_other_terraform_json_is_not_a_state(doc: dict[str, Any]) -> None:
    with pytest.raises(StateError) as err:
        parse_state(json.dumps(doc), "S")
    assert str(err.value) == (
        'S is Terraform JSON output but not of a state (no "values"); '
        "use `terraform show -json` without a plan file, or the terraform.tfstate file"
    )
