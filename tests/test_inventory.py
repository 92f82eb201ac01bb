"""scaler.inventory: hosts, groups and host variables, checked against files read by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, shared_files

from scaler.inventory import (
    ANSIBLE_RESERVED,
    Inventory,
    build_inventory,
    group_name,
    list_json,
    render_graph,
)
from scaler.state import parse_state, read_state

# Written from reading each file: host name -> the address Ansible connects to.
HOSTS: dict[str, dict[str, str]] = {
    "realworld/NeilHanlon__advancedlinuxadmin__1.tfstate": {
        "digitalocean_droplet.openstackaio-1": "165.227.116.131",
        "digitalocean_droplet.openstackaio-2": "165.227.125.187",
        "digitalocean_droplet.openstackaio-3": "159.65.37.160",
    },
    "realworld/QuickServer__quickstart__1.tfstate": {
        "digitalocean_droplet.rancheragent-medium-all": "142.93.220.108",
        "digitalocean_droplet.rancheragent-small-all.0": "142.93.223.162",
        "digitalocean_droplet.rancheragent-small-all.1": "142.93.210.51",
        "digitalocean_droplet.rancherserver": "206.189.139.66",
    },
    "realworld/Smartbrood__terraform-islandora__1.tfstate": {
        "digitalocean_droplet.islandora": "134.209.232.128",
    },
    "realworld/adityareddy__Asgard__1.tfstate": {
        "digitalocean_droplet.mesos-master.0": "162.243.161.18",
        "digitalocean_droplet.mesos-master.1": "192.34.62.142",
        "digitalocean_droplet.mesos-slave.0": "162.243.163.205",
        "digitalocean_droplet.mesos-slave.1": "192.81.212.199",
        "digitalocean_droplet.mesos-slave.2": "192.81.209.165",
    },
    "realworld/c00w__demesure__1.tfstate": {
        "digitalocean_droplet.demesure.0": "198.199.88.99",
        "digitalocean_droplet.demesure.1": "162.243.105.79",
        "digitalocean_droplet.demesure.3": "107.170.202.246",
        "digitalocean_droplet.demesure.4": "138.68.250.176",
        "digitalocean_droplet.demesure.6": "95.85.1.74",
        "digitalocean_droplet.demesure.7": "128.199.85.219",
        "digitalocean_droplet.demesure.8": "46.101.63.72",
        "digitalocean_droplet.demesure.9": "139.59.128.84",
        "digitalocean_droplet.demesure.10": "159.203.22.13",
        "digitalocean_droplet.demesure.11": "139.59.59.110",
    },
    "realworld/christinto__bitcannery-cli__1.tfstate": {
        "digitalocean_droplet.dms.0": "192.241.154.150",
        "digitalocean_droplet.dms.1": "146.185.139.202",
        "digitalocean_droplet.dms.2": "128.199.211.22",
    },
    "realworld/cityhunterxx__Terraform_Project__1.tfstate": {
        "digitalocean_droplet.cityhunter-main": "178.128.206.22",
        "digitalocean_reserved_ip.city_reservedIP": "164.90.240.188",
    },
    "realworld/docker-flow__docker-flow-proxy__1.tfstate": {
        "digitalocean_droplet.swarm-manager-1": "104.236.188.100",
        "digitalocean_droplet.swarm-manager-2": "162.243.142.199",
        "digitalocean_droplet.swarm-manager-3": "107.170.216.83",
        "digitalocean_floating_ip.docker_1": "45.55.113.246",
    },
    "realworld/fireheet__devops__1.tfstate": {
        "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001": (
            "104.131.51.229"
        ),
    },
    "realworld/ghostoptimizer__iac-infra__1.tfstate": {
        "digitalocean_droplet.blog_server": "104.236.22.107",
        "digitalocean_droplet.web": "134.122.9.34",
        "digitalocean_floating_ip.blog_ip": "159.89.242.179",
    },
    "realworld/leyendanerd__node-ci__1.tfstate": {
        "digitalocean_droplet.web": "198.199.81.135",
        "digitalocean_floating_ip.web": "138.197.230.123",
    },
    "realworld/mangatmodi__PersonalHosting__1.tfstate": {
        "digitalocean_droplet.mangatmodi_personal": "138.68.96.19",
    },
    "realworld/moudjames23__devOps__1.tfstate": {
        "digitalocean_droplet.octa-dockerapps": "159.223.180.108",
        "digitalocean_floating_ip.octa-flotting-ip": "24.144.64.99",
    },
    "realworld/petrem__learn__1.tfstate": {},
    "realworld/unknowntpo__playground-2022__1.tfstate": {
        "digitalocean_droplet.droplets.0": "188.166.246.4",
        "digitalocean_droplet.droplets.1": "128.199.131.198",
        "digitalocean_droplet.droplets.2": "139.59.253.178",
    },
    "terraform-inventory/example_v1.tfstate": {
        "vsphere_virtual_machine.test": "1.2.3.4",
        "aws_instance.alpha.0": "52.90.134.71",
        "aws_instance.alpha.1": "52.90.154.150",
        "aws_instance.beta": "52.23.224.202",
        "digitalocean_droplet.gamma": "198.211.99.194",
    },
    "terraform-inventory/state_pre012_envhostname.tfstate.json": {
        "libvirt_domain.fourteen": "192.168.102.14",
    },
    "terraform-inventory/state_pre012_multi_provider.tfstate.json": {
        "aws_instance.one.0": "10.0.0.1",
        "aws_instance.dup.0": "10.0.0.1",
        "aws_instance.one.1": "10.0.1.1",
        "aws_instance.two": "50.0.0.1",
        "digitalocean_droplet.three": "192.168.0.3",
        "cloudstack_instance.four": "10.2.1.5",
        "vsphere_virtual_machine.five": "10.20.30.40",
        "openstack_compute_instance_v2.six": "10.120.0.226",
        "softlayer_virtual_guest.seven": "10.0.0.7",
        "google_compute_instance.eight": "10.0.0.8",
        "exoscale_compute.nine": "10.0.0.9",
        "triton_machine.ten": "10.0.0.10",
        "scaleway_server.eleven": "10.0.0.11",
        "vsphere_virtual_machine.twelve": "10.20.30.50",
        "packet_device.thirteen": "10.0.0.13",
        "libvirt_domain.fourteen": "192.168.102.14",
        "opentelekomcloud_compute_instance_v2.nineteen": "10.0.0.19",
        "profitbricks_server.sixteen": "10.0.0.16",
        "aws_spot_instance_request.seventeen": "50.0.0.17",
        "linode_instance.eighteen": "80.80.100.124",
    },
    "terraform-inventory/state_012_show_json.json": {
        "aws_instance.one": "35.159.25.34",
        "vsphere_virtual_machine.vm": "12.34.56.78",
        "module.my-module-two.aws_instance.host": "10.0.0.2",
        "module.my-module-three.aws_instance.host.0": "10.0.0.3",
        "module.my-module-three.aws_instance.host.1": "10.0.1.3",
        "module.my-module-four.aws_instance.host.for_each_example.first": "10.0.0.4",
        "module.my-module-four.aws_instance.host.for_each_example.second": "10.0.1.4",
    },
}

# Groups worth checking in full, per file (group -> hosts, in order).
GROUPS: dict[str, dict[str, list[str]]] = {
    "realworld/leyendanerd__node-ci__1.tfstate": {
        # Droplet, floating IP and assignment are all named `web`: the assignment is no host,
        # `web` holds both hosts, `web_0` the droplet (with a warning, see below).
        "web": ["digitalocean_droplet.web", "digitalocean_floating_ip.web"],
        "web_0": ["digitalocean_droplet.web"],
        "type_digitalocean_droplet": ["digitalocean_droplet.web"],
        "type_digitalocean_floating_ip": ["digitalocean_floating_ip.web"],
    },
    "realworld/c00w__demesure__1.tfstate": {
        "demesure": [
            f"digitalocean_droplet.demesure.{i}" for i in (0, 1, 3, 4, 6, 7, 8, 9, 10, 11)
        ],
        "demesure_10": ["digitalocean_droplet.demesure.10"],
    },
    "realworld/fireheet__devops__1.tfstate": {
        "new_fheet_droplet_0001": [
            "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001"
        ],
        "module_fireheet_digitalocean": [
            "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001"
        ],
        "module_fireheet_digitalocean_new_fheet_droplet_0001_0": [
            "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001"
        ],
        "tag_fireheet_testing": [
            "module.fireheet-digitalocean.digitalocean_droplet.new_fheet_droplet_0001"
        ],
    },
    "realworld/unknowntpo__playground-2022__1.tfstate": {
        "tag_kube": [f"digitalocean_droplet.droplets.{i}" for i in range(3)],
        "droplets_2": ["digitalocean_droplet.droplets.2"],
    },
    "realworld/ghostoptimizer__iac-infra__1.tfstate": {
        "tag_static_blog": ["digitalocean_droplet.web"],
        "blog_ip": ["digitalocean_floating_ip.blog_ip"],
    },
    "realworld/QuickServer__quickstart__1.tfstate": {
        "rancheragent_small_all": [
            "digitalocean_droplet.rancheragent-small-all.0",
            "digitalocean_droplet.rancheragent-small-all.1",
        ],
        "rancheragent_medium_all_0": ["digitalocean_droplet.rancheragent-medium-all"],
    },
    "realworld/mangatmodi__PersonalHosting__1.tfstate": {
        "tag_Personal": ["digitalocean_droplet.mangatmodi_personal"],
    },
    "realworld/cityhunterxx__Terraform_Project__1.tfstate": {
        "city_reservedIP": ["digitalocean_reserved_ip.city_reservedIP"],
        "type_digitalocean_reserved_ip": ["digitalocean_reserved_ip.city_reservedIP"],
    },
}

WARNINGS: dict[str, list[str]] = {
    "realworld/leyendanerd__node-ci__1.tfstate": [
        "group 'web_0' is claimed by the instance group of digitalocean_droplet.web; "
        "the instance group of digitalocean_floating_ip.web; it holds digitalocean_droplet.web "
        "(a server wins over a floating/reserved IP)"
    ],
    "terraform-inventory/state_012_show_json.json": [
        "group 'host_0' is claimed by the instance group of "
        "module.my-module-three.aws_instance.host[0]; the instance group of "
        "module.my-module-two.aws_instance.host; it is left out (use the type_ or module_ "
        "groups, or the host names)"
    ],
}

STATE_FILES = [
    p
    for p in shared_files("tfstate", "*/*")
    if not p.name.startswith(("expected_", "SOURCE")) and p.suffix != ".md"
]
VALID_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What Ansible reads as one host everywhere: no pattern, slice, range or INI separator characters.
VALID_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _inventory(shared_data: Path, key: str, private: bool = False) -> Inventory:
    return build_inventory(read_state(shared_data / "tfstate" / key), private=private)


def test_every_shared_state_has_expected_hosts(shared_data: Path) -> None:
    assert sorted(_key(p) for p in STATE_FILES) == sorted(HOSTS)


@pytest.mark.parametrize("path", STATE_FILES, ids=_key)
def test_hosts_groups_and_warnings(path: Path) -> None:
    key = _key(path)
    inv = build_inventory(read_state(path))
    assert {h: v["ansible_host"] for h, v in inv.hosts.items()} == HOSTS[key]
    for group, hosts in GROUPS.get(key, {}).items():
        assert inv.groups[group] == hosts, group
    assert list(inv.warnings) == WARNINGS.get(key, [])
    for group in inv.groups:
        assert VALID_GROUP.match(group), group
    # Every host is in its resource-name group and its type group.
    for host, hostvars in inv.hosts.items():
        assert host in inv.groups[group_name(hostvars["terraform_resource"])]
        assert host in inv.groups[f"type_{hostvars['terraform_type']}"]
    # The document Ansible reads round-trips through JSON unchanged.
    doc = list_json(inv)
    assert json.loads(json.dumps(doc)) == doc


def test_hostvars_keep_types_and_carry_the_address(shared_data: Path) -> None:
    inv = _inventory(shared_data, "realworld/unknowntpo__playground-2022__1.tfstate")
    hv = inv.hosts["digitalocean_droplet.droplets.0"]
    assert hv["ipv4_address_private"] == "10.104.0.3"
    assert hv["memory"] == 1024
    assert hv["vcpus"] == 1
    assert hv["terraform_tags"] == ["kube"]
    assert hv["terraform_name"] == "kube0"
    assert "name" not in hv and "tags" not in hv
    meta = ("address", "type", "resource", "module", "index")
    assert {k: hv[f"terraform_{k}"] for k in meta} == {
        "address": "digitalocean_droplet.droplets[0]",
        "type": "digitalocean_droplet",
        "resource": "droplets",
        "module": "",
        "index": 0,
    }


def test_v3_hostvars_are_unflattened(shared_data: Path) -> None:
    inv = _inventory(shared_data, "realworld/Smartbrood__terraform-islandora__1.tfstate")
    hv = inv.hosts["digitalocean_droplet.islandora"]
    assert hv["terraform_tags"] == ["islandora8"]
    assert not any("." in k for k in hv)
    assert inv.all_vars == {"public_ip": "134.209.232.128"}


def test_private_addresses(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = _inventory(shared_data, "realworld/leyendanerd__node-ci__1.tfstate", private=True)
    assert {h: v["ansible_host"] for h, v in inv.hosts.items()} == {
        "digitalocean_droplet.web": "10.136.0.2",
        # A floating IP has no private address.
        "digitalocean_floating_ip.web": "138.197.230.123",
    }
    # Without private networking (empty private address) the public one is used.
    inv = _inventory(shared_data, "realworld/QuickServer__quickstart__1.tfstate", private=True)
    assert inv.hosts["digitalocean_droplet.rancherserver"]["ansible_host"] == "206.189.139.66"
    inv = _inventory(shared_data, "realworld/adityareddy__Asgard__1.tfstate", private=True)
    assert inv.hosts["digitalocean_droplet.mesos-master.0"]["ansible_host"] == "10.136.16.184"


def test_outputs_are_all_vars_except_sensitive(shared_data: Path) -> None:
    inv = _inventory(shared_data, "terraform-inventory/state_012_show_json.json")
    assert inv.all_vars == {
        "my_endpoint": "a.b.c.d.example.com",
        "map": {"first": "a", "second": "b"},
    }
    assert inv.hidden_outputs == ("my_password",)
    inv = _inventory(shared_data, "terraform-inventory/state_pre012_multi_provider.tfstate.json")
    assert inv.all_vars == {
        "olddatacenter": "<0.7_format",
        "datacenter": "mydc",
        "ids": [1, 2, 3, 4],
        "map": {"key": "value"},
    }


def _their_list(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


# terraform-inventory's groups made from tags, and ours. Groups it makes that we do not:
# vsphere custom_configuration_parameters and tag data sources, openstack metadata, and the
# opentelekomcloud `tag` map (we group the `tags` attribute only).
THEIR_TAG_GROUPS = {
    "pre012": {
        "role_web": "tag_Role_Web",
        "role_nine": "tag_Role_nine",
        "role_test": "tag_Role_test",
        "role_worker": "tag_Role_worker",
        "webserver": "tag_webserver",
        "staging": "tag_staging",
        "database": "tag_database",
        "scw_test": "tag_scw_test",
        "role_rrrrrrrr": None,
        "testTag1": None,
        "status_superserver": None,
        "tfinventory_rocks": None,
        "superman_clarkkent": None,
    },
    "012": {
        "name_one-aws-instance": "tag_Name_one_aws_instance",
        "name_two-aws-instance": "tag_Name_two_aws_instance",
        "name_three-aws-instance": "tag_Name_three_aws_instance",
        "name_four-aws-instance": "tag_Name_four_aws_instance",
        "foo_bar": None,
    },
}


@pytest.mark.parametrize(
    ("state_file", "expected_file", "flavour"),
    [
        ("state_pre012_multi_provider.tfstate.json", "expected_list_pre012.json", "pre012"),
        ("state_012_show_json.json", "expected_list_012.json", "012"),
    ],
)
def test_same_groups_as_terraform_inventory(
    shared_data: Path, state_file: str, expected_file: str, flavour: str
) -> None:
    folder = shared_data / "tfstate/terraform-inventory"
    theirs = _their_list(folder / expected_file)
    inv = build_inventory(read_state(folder / state_file))

    def addresses(group: str) -> set[str]:
        return {inv.hosts[h]["ansible_host"] for h in inv.groups[group]}

    # Their host names are the addresses.
    assert {v["ansible_host"] for v in inv.hosts.values()} == set(theirs["all"]["hosts"])
    tags = THEIR_TAG_GROUPS[flavour]
    for group, hosts in theirs.items():
        if group == "all":
            continue
        ours = tags.get(group, group_name(group))
        if ours is None:
            assert group in tags
            continue
        assert addresses(ours) == set(hosts), group


def test_same_host_vars_as_terraform_inventory_but_typed(shared_data: Path) -> None:
    folder = shared_data / "tfstate/terraform-inventory"
    inv = build_inventory(read_state(folder / "state_012_show_json.json"))
    theirs = json.loads((folder / "expected_host_012_35.159.25.34.json").read_text())
    ours = inv.hosts["aws_instance.one"]
    assert {k: ours[k] for k in ("ami", "ansible_host", "id", "private_ip", "public_ip")} == {
        k: theirs[k] for k in ("ami", "ansible_host", "id", "private_ip", "public_ip")
    }
    # Where they print "tags.#"/"tags.Name" strings, we keep the map.
    assert ours["terraform_tags"] == {"Name": theirs["tags.Name"]}
    assert ours["volume_tags"] == {"Ignored": theirs["volume_tags.Ignored"]}
    inv = build_inventory(read_state(folder / "state_pre012_multi_provider.tfstate.json"))
    theirs = json.loads((folder / "expected_host_pre012_10.0.0.1.json").read_text())
    ours = inv.hosts["aws_instance.one.0"]
    assert (ours["id"], ours["private_ip"], ours["terraform_tags"]) == (
        theirs["id"],
        theirs["private_ip"],
        {"Role": theirs["tags.Role"]},
    )


def _state(*resources: dict[str, Any], outputs: dict[str, Any] | None = None) -> str:
    return json.dumps({"version": 4, "resources": list(resources), "outputs": outputs or {}})


def _droplets(name: str, count: int | None, module: str = "", first: int = 1) -> dict[str, Any]:
    def inst(i: int | None) -> dict[str, Any]:
        octet = first + (i or 0)
        body: dict[str, Any] = {"attributes": {"ipv4_address": f"192.0.2.{octet}"}}
        if i is not None:
            body["index_key"] = i
        return body

    indexes: list[int | None] = [None] if count is None else list(range(count))
    res = {"mode": "managed", "type": "digitalocean_droplet", "name": name}
    if module:
        res["module"] = module
    return {**res, "instances": [inst(i) for i in indexes]}


def test_name_group_beats_instance_group() -> None:
    state = parse_state(_state(_droplets("web", 2), _droplets("web_0", None, first=50)))
    inv = build_inventory(state)
    assert inv.groups["web_0"] == ["digitalocean_droplet.web_0"]
    assert inv.groups["web"] == ["digitalocean_droplet.web.0", "digitalocean_droplet.web.1"]
    assert inv.warnings == (
        "group 'web_0' is claimed by the resource-name group of digitalocean_droplet.web_0; "
        "the instance group of digitalocean_droplet.web[0]; it is the resource-name group",
    )


def test_same_name_in_two_modules() -> None:
    state = parse_state(
        _state(_droplets("db", 1, "module.a"), _droplets("db", 1, "module.b", first=9))
    )
    inv = build_inventory(state)
    assert inv.groups["db"] == [
        "module.a.digitalocean_droplet.db.0",
        "module.b.digitalocean_droplet.db.0",
    ]
    assert "db_0" not in inv.groups
    assert inv.groups["module_a_db_0"] == ["module.a.digitalocean_droplet.db.0"]
    assert inv.groups["module_b_db_0"] == ["module.b.digitalocean_droplet.db.0"]
    assert len(inv.warnings) == 1 and "it is left out" in inv.warnings[0]


def _for_each(name: str, keys: list[str], module: str = "", first: int = 1) -> dict[str, Any]:
    res: dict[str, Any] = {"mode": "managed", "type": "digitalocean_droplet", "name": name}
    if module:
        res["module"] = module
    res["instances"] = [
        {"index_key": k, "attributes": {"ipv4_address": f"192.0.2.{first + n}"}}
        for n, k in enumerate(keys)
    ]
    return res


def test_for_each_keys_and_module_instances_make_valid_names() -> None:
    res = _for_each("site", ["a b", "a:b", "a_b", "www.example.com"], 'module.shop["eu west"]')
    inv = build_inventory(parse_state(_state(res)))
    # Valid keys stay as they are; others are sanitised and carry the CRC-32 of the real key
    # (crc32(b"eu west") = 0x354201b4, b"a b" 0x806c5cd3, b"a:b" 0x3041a608).
    shop = "module.shop.eu_west-354201b4.digitalocean_droplet.site"
    assert {h: v["terraform_address"] for h, v in inv.hosts.items()} == {
        f"{shop}.a_b-806c5cd3": 'module.shop["eu west"].digitalocean_droplet.site["a b"]',
        f"{shop}.a_b-3041a608": 'module.shop["eu west"].digitalocean_droplet.site["a:b"]',
        f"{shop}.a_b": 'module.shop["eu west"].digitalocean_droplet.site["a_b"]',
        f"{shop}.www.example.com": 'module.shop["eu west"].digitalocean_droplet.site'
        '["www.example.com"]',
    }
    # Three keys sanitise to a_b: their instance groups collide and are left out, said so.
    assert list(inv.groups) == [
        "module_shop_eu_west",
        "module_shop_eu_west_site",
        "module_shop_eu_west_site_www_example_com",
        "site",
        "site_www_example_com",
        "type_digitalocean_droplet",
    ]
    assert [w.split(" is claimed by ")[0] for w in inv.warnings] == [
        "group 'site_a_b'",
        "group 'module_shop_eu_west_site_a_b'",
    ]
    assert inv.warnings[0] == (
        "group 'site_a_b' is claimed by "
        'the instance group of module.shop["eu west"].digitalocean_droplet.site["a b"]; '
        'the instance group of module.shop["eu west"].digitalocean_droplet.site["a:b"]; '
        'the instance group of module.shop["eu west"].digitalocean_droplet.site["a_b"]; '
        "it is left out (use the type_ or module_ groups, or the host names)"
    )


def test_host_names_do_not_depend_on_other_keys() -> None:
    # A key that needs no change never loses its name to a sanitised one, and adding keys to a
    # for_each renames no existing host (a `-2` suffix by sorted order would shift).
    before = build_inventory(parse_state(_state(_for_each("web", ["a_b", "z z"]))))
    after = build_inventory(parse_state(_state(_for_each("web", ["a b", "a_b", "z z", "a,b"]))))
    assert list(before.hosts) == [
        "digitalocean_droplet.web.a_b",
        "digitalocean_droplet.web.z_z-83738814",
    ]
    assert set(before.hosts) < set(after.hosts)
    assert all(
        after.hosts[h]["terraform_index"] == v["terraform_index"] for h, v in before.hosts.items()
    )
    assert not any(" is host " in w for w in after.warnings)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ('say "hi"', "digitalocean_droplet.k.say__hi_-aa701161"),
        ("[0]", "digitalocean_droplet.k._0_-553403f9"),
        ("*", "digitalocean_droplet.k._-09b9265b"),
        ("ünï", "digitalocean_droplet.k._n_-dbc448ea"),
        ("tab\tx", "digitalocean_droplet.k.tab_x-8da57c7d"),
        ("host!&", "digitalocean_droplet.k.host__-3ae793e8"),
        ("", "digitalocean_droplet.k.-00000000"),
        ("0", "digitalocean_droplet.k.0"),
        ("web-1", "digitalocean_droplet.k.web-1"),
    ],
)
def test_odd_for_each_keys(key: str, host: str) -> None:
    inv = build_inventory(parse_state(_state(_for_each("k", [key]))))
    assert list(inv.hosts) == [host]
    assert inv.hosts[host]["terraform_index"] == key
    assert VALID_HOST.match(host), host


def test_tainted_and_addressless_instances_are_not_hosts() -> None:
    res = _droplets("wp_node", 3)
    res["instances"][1]["status"] = "tainted"
    res["instances"][2]["attributes"]["ipv4_address"] = ""
    inv = build_inventory(parse_state(_state(res)))
    assert list(inv.hosts) == ["digitalocean_droplet.wp_node.0"]
    assert inv.warnings == (
        "digitalocean_droplet.wp_node[2] has no address yet; it is not in the inventory",
        "1 tainted resource instance(s) left out (not live hosts)",
    )


def test_reserved_output_names_are_renamed() -> None:
    outputs = {"name": {"value": "shop"}, "secret": {"value": "x", "sensitive": True}}
    inv = build_inventory(parse_state(_state(outputs=outputs)))
    assert inv.all_vars == {"terraform_name": "shop"}
    assert list_json(inv) == {
        "_meta": {"hostvars": {}},
        "all": {"hosts": [], "vars": {"terraform_name": "shop"}},
    }


def test_reserved_names_match_ansible() -> None:
    from ansible.vars.reserved import get_reserved_names

    assert set(get_reserved_names()) == ANSIBLE_RESERVED


def test_example_state_is_the_tutorial_stack() -> None:
    inv = build_inventory(read_state(ROOT / "examples" / "terraform.tfstate"))
    assert inv.groups["wp_node"] == [f"digitalocean_droplet.wp_node.{i}" for i in range(3)]
    assert inv.groups["ha_db_fip"] == ["module.galera.digitalocean_floating_ip.ha_db_fip"]
    assert inv.hosts[inv.groups["ha_db_fip"][0]]["ip_address"] == "203.0.113.50"
    assert inv.groups["module_galera_db_node"] == [
        f"module.galera.digitalocean_droplet.db_node.{i}" for i in range(3)
    ]
    # Neither the load balancer nor the floating-IP assignment is a host.
    assert len(inv.hosts) == 7
    assert inv.hidden_outputs == ("db_root_password",)
    assert "db_root_password" not in json.dumps(list_json(inv))
    graph = render_graph(inv)
    assert graph.startswith(
        "@all: 7 hosts, 22 groups\n"
        "  vars (Terraform outputs): lb_ip, wp_node_ips, db_host\n"
        "  sensitive outputs left out: db_root_password\n"
        "  @db_node:\n"
        "    module.galera.digitalocean_droplet.db_node.0      203.0.113.31\n"
    )
    assert (
        "  @ha_db_fip:\n    module.galera.digitalocean_floating_ip.ha_db_fip  203.0.113.50\n"
        in graph
    )


# -- one stack in every state format -----------------------------------------------------
#
# wp_node[0] and wp_node[2] live, wp_node[1] tainted, a deposed wp_node[2] left over from a
# create_before_destroy replacement, the floating IP and its assignment inside module galera, a
# data source, and outputs (one sensitive). Each format spells it its own way, as Terraform of
# that era wrote it.


def _fip_attrs(flat: bool) -> dict[str, Any]:
    return {"id": "192.0.2.50", "ip_address": "192.0.2.50", "droplet_id": "2000" if flat else 2000}


def _droplet_attrs(n: int, flat: bool) -> dict[str, Any]:
    if flat:
        return {"id": str(1000 + n), "ipv4_address": f"192.0.2.{10 + n}", "memory": "1024"}
    return {"id": str(1000 + n), "ipv4_address": f"192.0.2.{10 + n}", "memory": 1024}


def _stack_v4() -> dict[str, Any]:
    def inst(n: int, **extra: Any) -> dict[str, Any]:
        return {"index_key": n, "attributes": _droplet_attrs(n, False), **extra}

    deposed = {"index_key": 2, "deposed": "7a1b2c3d", "attributes": _droplet_attrs(9, False)}
    return {
        "version": 4,
        "terraform_version": "1.5.7",
        "outputs": {
            "lb_ip": {"value": "192.0.2.80", "type": "string"},
            "db_password": {"value": "hunter2", "type": "string", "sensitive": True},
        },
        "resources": [
            {"mode": "data", "type": "digitalocean_image", "name": "base", "instances": [{}]},
            {
                "mode": "managed",
                "type": "digitalocean_droplet",
                "name": "wp_node",
                "instances": [inst(0), inst(1, status="tainted"), inst(2), deposed],
            },
            {
                "module": "module.galera",
                "mode": "managed",
                "type": "digitalocean_floating_ip",
                "name": "ha_db_fip",
                "instances": [{"attributes": _fip_attrs(False)}],
            },
            {
                "module": "module.galera",
                "mode": "managed",
                "type": "digitalocean_floating_ip_assignment",
                "name": "ha_db_fip",
                "instances": [{"attributes": {"id": "x", "ip_address": "192.0.2.50"}}],
            },
        ],
    }


def _stack_legacy(version: int) -> dict[str, Any]:
    def primary(n: int, **extra: Any) -> dict[str, Any]:
        return {"id": str(1000 + n), "attributes": _droplet_attrs(n, True), **extra}

    wp_node1: dict[str, Any] = {"type": "digitalocean_droplet"}
    if version == 1:
        # Version 1 keeps a tainted instance in its own list, with no primary.
        wp_node1["tainted"] = [primary(1)]
    else:
        wp_node1["primary"] = primary(1, tainted=True)
    root: dict[str, Any] = {
        "digitalocean_droplet.wp_node.0": {"type": "digitalocean_droplet", "primary": primary(0)},
        "digitalocean_droplet.wp_node.1": wp_node1,
        "digitalocean_droplet.wp_node.2": {
            "type": "digitalocean_droplet",
            "primary": primary(2),
            "deposed": [primary(9)],
        },
    }
    if version == 3:
        root["data.digitalocean_image.base"] = {"type": "digitalocean_image", "primary": {}}
        outputs: dict[str, Any] = {
            "lb_ip": {"sensitive": False, "type": "string", "value": "192.0.2.80"},
            "db_password": {"sensitive": True, "type": "string", "value": "hunter2"},
        }
    else:
        # Versions 1 and 2 know no sensitive outputs: a bare string each.
        outputs = {"lb_ip": "192.0.2.80"}
    galera = {
        "digitalocean_floating_ip.ha_db_fip": {
            "type": "digitalocean_floating_ip",
            "primary": {"id": "192.0.2.50", "attributes": _fip_attrs(True)},
        },
        "digitalocean_floating_ip_assignment.ha_db_fip": {
            "type": "digitalocean_floating_ip_assignment",
            "primary": {"id": "x", "attributes": {"id": "x", "ip_address": "192.0.2.50"}},
        },
    }
    return {
        "version": version,
        "serial": 3,
        "modules": [
            {"path": ["root"], "outputs": outputs, "resources": root},
            {"path": ["root", "galera"], "outputs": {}, "resources": galera},
        ],
    }


def _stack_show_json() -> dict[str, Any]:
    def droplet(n: int, **extra: Any) -> dict[str, Any]:
        return {
            "address": f"digitalocean_droplet.wp_node[{n}]",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": "wp_node",
            "index": n,
            "values": _droplet_attrs(9 if "deposed_key" in extra else n, False),
            "sensitive_values": {},
            **extra,
        }

    return {
        "format_version": "1.0",
        "terraform_version": "1.5.7",
        "values": {
            "outputs": {
                "lb_ip": {"sensitive": False, "value": "192.0.2.80", "type": "string"},
                "db_password": {"sensitive": True, "value": "hunter2", "type": "string"},
            },
            "root_module": {
                "resources": [
                    {"address": "data.digitalocean_image.base", "mode": "data",
                     "type": "digitalocean_image", "name": "base", "values": {}},
                    droplet(0),
                    droplet(1, tainted=True),
                    droplet(2),
                    droplet(2, deposed_key="7a1b2c3d"),
                ],
                "child_modules": [
                    {
                        "address": "module.galera",
                        "resources": [
                            {"address": "module.galera.digitalocean_floating_ip.ha_db_fip",
                             "mode": "managed", "type": "digitalocean_floating_ip",
                             "name": "ha_db_fip", "values": _fip_attrs(False)},
                            {"address": "module.galera.digitalocean_floating_ip_assignment"
                                        ".ha_db_fip",
                             "mode": "managed", "type": "digitalocean_floating_ip_assignment",
                             "name": "ha_db_fip",
                             "values": {"id": "x", "ip_address": "192.0.2.50"}},
                        ],
                    }
                ],
            },
        },
    }  # fmt: skip


STACKS = {
    "v4": _stack_v4,
    "v3": lambda: _stack_legacy(3),
    "v2": lambda: _stack_legacy(2),
    "v1": lambda: _stack_legacy(1),
    "show-json": _stack_show_json,
}


@pytest.mark.parametrize("fmt", list(STACKS))
def test_one_stack_in_every_format(fmt: str) -> None:
    state = parse_state(json.dumps(STACKS[fmt]()))
    assert state.format == fmt
    inv = build_inventory(state)
    fip = "module.galera.digitalocean_floating_ip.ha_db_fip"
    # Neither the tainted nor the deposed droplet is a host; the assignment is not a host.
    assert {h: v["ansible_host"] for h, v in inv.hosts.items()} == {
        "digitalocean_droplet.wp_node.0": "192.0.2.10",
        "digitalocean_droplet.wp_node.2": "192.0.2.12",
        fip: "192.0.2.50",
    }
    assert inv.groups["ha_db_fip"] == [fip]
    assert inv.groups["wp_node"] == [
        "digitalocean_droplet.wp_node.0",
        "digitalocean_droplet.wp_node.2",
    ]
    assert inv.groups["wp_node_2"] == ["digitalocean_droplet.wp_node.2"]
    assert "wp_node_1" not in inv.groups
    assert inv.groups["module_galera_ha_db_fip"] == [fip]
    hv = inv.hosts[fip]
    assert (hv["ip_address"], hv["droplet_id"], hv["terraform_module"]) == (
        "192.0.2.50",
        2000,
        "module.galera",
    )
    assert inv.hosts["digitalocean_droplet.wp_node.2"]["memory"] == 1024
    assert inv.hosts["digitalocean_droplet.wp_node.2"]["terraform_index"] == 2
    assert inv.all_vars == {"lb_ip": "192.0.2.80"}
    assert inv.hidden_outputs == (() if fmt in ("v1", "v2") else ("db_password",))
    assert inv.warnings == (
        "1 tainted resource instance(s) left out (not live hosts)",
        "1 deposed resource instance(s) left out (not live hosts)",
    )
