"""The inventory plugin scaler.tfstate.tfstate, through real ansible-inventory.

It must give what the script gives on every real state, serve a second run from Ansible's cache,
and apply compose, groups, keyed_groups, strict and hostnames as Ansible's own plugins do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need, shared_files

from scaler.inventory import build_inventory, rename_hosts
from scaler.state import read_state

BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / "collection"
EXAMPLE = ROOT / "examples" / "terraform.tfstate"
FIP = "module.galera.digitalocean_floating_ip.ha_db_fip"
STATE_FILES = [
    p
    for p in shared_files("tfstate", "*/*")
    if not p.name.startswith(("expected_", "SOURCE")) and p.suffix != ".md"
]

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "SCALER_")) and k != "TF_STATE"
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path),
        ANSIBLE_HOME=str(tmp_path / ".ansible"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible" / "tmp"),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="False",
    )
    env.update(extra)
    return env


def _inventory(
    tmp_path: Path, source: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    tool = BIN / "ansible-inventory"
    need(tool.is_file(), "ansible-core is not installed in this environment")
    return subprocess.run(
        [str(tool), "-i", source, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, **env),
    )


def _plugin_file(tmp_path: Path, body: str, name: str = "tfstate.yml") -> str:
    path = tmp_path / name
    path.write_text("plugin: scaler.tfstate.tfstate\n" + body)
    return str(path)


def _plain(value: Any) -> Any:
    """ansible-inventory --list marks plugin strings as unsafe ({"__ansible_unsafe": s})."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _list(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    # With -vvv the JSON follows Ansible's own lines; it starts on a line of its own.
    start = done.stdout.find("{\n")
    return dict(_plain(json.loads(done.stdout[start:])))


@pytest.mark.parametrize("path", STATE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_plugin_and_script_give_the_same_inventory(tmp_path: Path, path: Path) -> None:
    source = _plugin_file(tmp_path, f"state: {path}\n")
    by_plugin = _inventory(tmp_path, source, "--graph")
    by_script = _inventory(tmp_path, f"{ROOT}/inventory/", "--graph", TF_STATE=str(path))
    assert by_plugin.returncode == 0, by_plugin.stderr
    assert by_script.returncode == 0, by_script.stderr
    assert by_plugin.stdout == by_script.stdout
    assert "@all:" in by_plugin.stdout
    # Variables too, not only groups: the same reader made both.
    plugin_list = _list(_inventory(tmp_path, source, "--list"))
    script_list = _list(_inventory(tmp_path, f"{ROOT}/inventory/", "--list", TF_STATE=str(path)))
    assert plugin_list == script_list


def test_the_plugin_finds_the_state_as_the_script_does(tmp_path: Path) -> None:
    # No `state:` option: TF_STATE (relative to where Ansible runs), as for the script.
    source = _plugin_file(tmp_path, "")
    shutil.copy(EXAMPLE, tmp_path / "example.tfstate")
    doc = _list(_inventory(tmp_path, source, "--list", TF_STATE="example.tfstate"))
    assert doc["ha_db_fip"]["hosts"] == [FIP]
    # Else terraform.tfstate beside the inventory file.
    folder = tmp_path / "inventory"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "terraform.tfstate")
    source = _plugin_file(folder, "")
    doc = _list(_inventory(tmp_path, source, "--list"))
    assert doc["_meta"]["hostvars"][FIP]["ip_address"] == "203.0.113.50"


def test_a_missing_state_is_a_one_line_error(tmp_path: Path) -> None:
    source = _plugin_file(tmp_path, "state: gone.tfstate\n")
    done = _inventory(tmp_path, source, "--list")
    assert (
        f"scaler.tfstate: Terraform state {tmp_path}/gone.tfstate does not exist (from --state); "
        "check the path" in done.stderr
    )
    assert json.loads(done.stdout)["_meta"]["hostvars"] == {}


def test_a_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    state = tmp_path / "terraform.tfstate"
    shutil.copy(EXAMPLE, state)
    cache = tmp_path / "cache"
    source = _plugin_file(
        tmp_path,
        f"state: {state}\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n"
        f"cache_connection: {cache}\ncache_timeout: 3600\n",
    )
    first = _inventory(tmp_path, source, "--list", "-vvv")
    assert "served from the cache" not in first.stdout + first.stderr
    assert f"reading Terraform state {state} (from --state)" in first.stdout + first.stderr
    (entry,) = cache.iterdir()
    assert entry.name.startswith("ansible_inventory_s1_scaler.tfstate.tfstate_k")
    expected = _list(first)
    # The state is gone: only the cache can answer now.
    state.unlink()
    second = _inventory(tmp_path, source, "--list", "-vvv")
    assert f"scaler.tfstate: inventory of {source} served from the cache" in second.stdout
    assert "reading Terraform state" not in second.stdout + second.stderr
    assert _list(second) == expected
    # --flush-cache reads the state again, which is gone.
    flushed = _inventory(tmp_path, source, "--list", "--flush-cache")
    assert "does not exist (from --state)" in flushed.stderr
    assert json.loads(flushed.stdout)["_meta"]["hostvars"] == {}


def test_compose_groups_and_keyed_groups(tmp_path: Path) -> None:
    source = _plugin_file(
        tmp_path,
        f"state: {EXAMPLE}\n"
        "compose:\n"
        "  ansible_host: ipv4_address_private | default(ansible_host)\n"
        "  role: \"'web' if terraform_resource == 'wp_node' else 'db'\"\n"
        "groups:\n"
        "  web: terraform_resource == 'wp_node'\n"
        "keyed_groups:\n"
        "  - key: region\n"
        "    prefix: region\n"
        "  - key: role\n",
    )
    doc = _list(_inventory(tmp_path, source, "--list"))
    hostvars = doc["_meta"]["hostvars"]
    web = ["digitalocean_droplet.wp_node.0", "digitalocean_droplet.wp_node.1"]
    web.append("digitalocean_droplet.wp_node.2")
    assert doc["web"]["hosts"] == web
    assert doc["wp_node"]["hosts"] == web  # the script's own groups stay
    node = hostvars["digitalocean_droplet.wp_node.0"]
    assert node["ansible_host"] == node["ipv4_address_private"] != node["ipv4_address"]
    # The floating IP has no private address: the default kept its own.
    assert hostvars[FIP]["ansible_host"] == "203.0.113.50"
    assert sorted(doc["region_nyc3"]["hosts"]) == sorted(hostvars)
    assert doc["_web"]["hosts"] == web
    assert len(doc["_db"]["hosts"]) == 4


def test_strict_turns_a_bad_expression_into_an_error(tmp_path: Path) -> None:
    body = f"state: {EXAMPLE}\nkeyed_groups:\n  - key: no_such_variable\n"
    lenient = _list(_inventory(tmp_path, _plugin_file(tmp_path, body), "--list"))
    assert "wp_node" in lenient
    strict = _inventory(tmp_path, _plugin_file(tmp_path, body + "strict: true\n"), "--list")
    assert "Could not generate group for host" in strict.stderr
    assert "no_such_variable" in strict.stderr
    assert json.loads(strict.stdout)["_meta"]["hostvars"] == {}


def test_hostnames_droplet_name_then_address(tmp_path: Path) -> None:
    source = _plugin_file(tmp_path, f"state: {EXAMPLE}\nhostnames: [name, address]\n")
    doc = _list(_inventory(tmp_path, source, "--list"))
    assert doc["wp_node"]["hosts"] == ["wp-node-0", "wp-node-1", "wp-node-2"]
    assert doc["db_node"]["hosts"] == ["galera-0", "galera-1", "galera-2"]
    # A floating IP has no name: it keeps its address.
    assert doc["ha_db_fip"]["hosts"] == [FIP]
    node = doc["_meta"]["hostvars"]["wp-node-0"]
    assert node["terraform_address"] == "digitalocean_droplet.wp_node[0]"
    assert node["ansible_host"] == "203.0.113.11"


def test_an_unknown_hostnames_choice_is_refused(tmp_path: Path) -> None:
    source = _plugin_file(tmp_path, f"state: {EXAMPLE}\nhostnames: [ip]\n")
    done = _inventory(tmp_path, source, "--list")
    assert "hostnames" in done.stderr
    assert "address, name" in done.stderr


def test_ansible_doc_reads_the_plugin_documentation(tmp_path: Path) -> None:
    tool = BIN / "ansible-doc"
    need(tool.is_file(), "ansible-core is not installed in this environment")
    done = subprocess.run(
        [str(tool), "-t", "inventory", "scaler.tfstate.tfstate"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    for option in ("hostnames", "terraform_bin", "keyed_groups", "cache_plugin", "strict"):
        assert option in done.stdout


def test_duplicate_droplet_names_keep_their_addresses() -> None:
    state = read_state(EXAMPLE)
    inventory = build_inventory(state)
    for hostvars in inventory.hosts.values():
        if hostvars["terraform_resource"] == "wp_node":
            hostvars["terraform_name"] = "web"
    renamed = rename_hosts(inventory, ["name", "address"])
    assert renamed.groups["wp_node"] == [
        "web",
        "digitalocean_droplet.wp_node.1",
        "digitalocean_droplet.wp_node.2",
    ]
    assert renamed.warnings[-2:] == (
        "digitalocean_droplet.wp_node.1 keeps its address: host name 'web' is taken",
        "digitalocean_droplet.wp_node.2 keeps its address: host name 'web' is taken",
    )
    assert rename_hosts(inventory, ["address"]) is inventory


def test_the_collection_installs_with_ansible_galaxy(tmp_path: Path) -> None:
    # The README's step: galaxy.yml is valid and the installed copy works on its own.
    galaxy = BIN / "ansible-galaxy"
    need(galaxy.is_file(), "ansible-core is not installed in this environment")
    installed = tmp_path / "collections"
    done = subprocess.run(
        [
            *(str(galaxy), "collection", "install"),
            *(
                str(COLLECTIONS / "ansible_collections" / "scaler" / "tfstate"),
                "-p",
                str(installed),
            ),
        ],
        capture_output=True,
        text=True,
        # Not the checkout's collection/: galaxy would find the collection there, installed.
        env=_env(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(installed)),
    )
    assert done.returncode == 0, done.stderr
    assert "scaler.tfstate:0.1.0 was installed successfully" in done.stdout
    source = _plugin_file(tmp_path, f"state: {EXAMPLE}\n")
    doc = _list(_inventory(tmp_path, source, "--list", ANSIBLE_COLLECTIONS_PATH=str(installed)))
    assert doc["ha_db_fip"]["hosts"] == [FIP]
