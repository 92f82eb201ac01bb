"""The Terraform state as an Ansible inventory: hosts, groups, typed host variables.

Hosts are live managed resources of a known server or IP type that have an address (ADDRESSES).
Host names are Terraform addresses with the index written after a dot
(`module.galera.digitalocean_droplet.db.0`, `aws_instance.web.www.example.com`), free of the
`[`, `"`, `,`, `:` and spaces that Ansible host patterns and INI files would misread. A for_each
key holding any other character than letters, digits, `_`, `.` and `-` is written with those
characters as `_` plus the CRC-32 of the real key (`["eu west"]` -> `.eu_west-354201b4`): so a
name depends on its own resource only, never on which other keys exist, and stays the same
between runs and as the stack grows. `ansible_host` carries the address.

Groups (all names sanitised to letters, digits and `_`):
  <name>                 every instance of every resource called <name>, any type, any module
                         (so `ha_db_fip` holds the floating IP even inside module.galera)
  <name>_<index>         one instance; `_0` when there is no count/for_each (terraform-inventory)
  type_<type>            every host of one resource type
  module_<m>             every host in module <m>; module_<m>_<name>, module_<m>_<name>_<index>
  tag_<tag>              DigitalOcean tags (and other providers' list tags); map tags make
                         tag_<key>_<value>. The prefix keeps tags out of resource groups.
Collisions: when two different resources claim one group name, a resource-name group beats an
instance group beats the other kinds; between two instance groups, a server beats a floating or
reserved IP (leyendanerd: droplet, floating IP and assignment all named `web` make `web` hold
both hosts and `web_0` the droplet). Any other tie leaves the group out. Every collision is
reported as a warning (stderr), never resolved silently.

Host variables: the resource's attributes with their JSON types, plus terraform_address,
terraform_type, terraform_resource (the resource name), terraform_module and terraform_index.
An attribute whose name Ansible reserves for play keywords (a droplet's `name` and `tags`) is
renamed terraform_<attr> (terraform_name, terraform_tags): Ansible warns about such variables
on every run otherwise.

Like scaler.state this is on Ansible's hot path: only json, os, re and sys at load time.
"""

from __future__ import annotations

import json
import os
import re
import sys

from scaler.errors import HostNotFound, ScalerError
from scaler.state import Resource, State, _Frozen, load_source, locate_state

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

    _P = tuple[tuple[str | int, ...], ...]

PRIVATE_ENV = "SCALER_INVENTORY_PRIVATE"
TERRAFORM_DIR_ENV = "SCALER_TERRAFORM_DIR"

# Where each host type keeps its address: (public attributes, private attributes), each a list of
# attribute paths tried in order. The default prefers public and falls back to private (an AWS
# instance in a private subnet); --private prefers private and falls back to public.
ADDRESSES: dict[str, tuple[_P, _P]] = {
    "digitalocean_droplet": ((("ipv4_address",),), (("ipv4_address_private",),)),
    "digitalocean_floating_ip": ((("ip_address",),), ()),
    "digitalocean_reserved_ip": ((("ip_address",),), ()),
    "aws_instance": ((("public_ip",),), (("private_ip",),)),
    "aws_spot_instance_request": ((("public_ip",),), (("private_ip",),)),
    "google_compute_instance": (
        (
            ("network_interface", 0, "access_config", 0, "nat_ip"),
            ("network_interface", 0, "access_config", 0, "assigned_nat_ip"),
        ),
        (("network_interface", 0, "network_ip"), ("network_interface", 0, "address")),
    ),
    "azurerm_linux_virtual_machine": ((("public_ip_address",),), (("private_ip_address",),)),
    "azurerm_windows_virtual_machine": ((("public_ip_address",),), (("private_ip_address",),)),
    "openstack_compute_instance_v2": (
        (("access_ip_v4",),),
        (("network", 0, "fixed_ip_v4"),),
    ),
    "opentelekomcloud_compute_instance_v2": (
        (("access_ip_v4",),),
        (("network", 0, "fixed_ip_v4"),),
    ),
    "vsphere_virtual_machine": (
        (("default_ip_address",), ("network_interface", 0, "ipv4_address")),
        (),
    ),
    "hcloud_server": ((("ipv4_address",),), (("network", 0, "ip"),)),
    "linode_instance": ((("ip_address",),), (("private_ip_address",),)),
    "vultr_instance": ((("main_ip",),), (("internal_ip",),)),
    "vultr_server": ((("main_ip",),), (("internal_ip",),)),
    "scaleway_server": ((("public_ip",),), (("private_ip",),)),
    "scaleway_instance_server": ((("public_ip",),), (("private_ip",),)),
    "exoscale_compute": ((("ip_address",),), ()),
    "exoscale_compute_instance": ((("public_ip_address",),), ()),
    "packet_device": (
        (("access_public_ipv4",), ("network", 0, "address")),
        (("access_private_ipv4",),),
    ),
    "metal_device": ((("access_public_ipv4",),), (("access_private_ipv4",),)),
    "equinix_metal_device": ((("access_public_ipv4",),), (("access_private_ipv4",),)),
    "cloudstack_instance": ((("ipaddress",),), ()),
    "softlayer_virtual_guest": ((("ipv4_address",),), (("ipv4_address_private",),)),
    "ibm_compute_vm_instance": ((("ipv4_address",),), (("ipv4_address_private",),)),
    "triton_machine": ((("primaryip",),), ()),
    "profitbricks_server": ((("primary_ip",),), ()),
    "libvirt_domain": ((("network_interface", 0, "addresses", 0),), ()),
    "oci_core_instance": ((("public_ip",),), (("private_ip",),)),
    "alicloud_instance": ((("public_ip",),), (("private_ip",),)),
}
# ansible.vars.reserved.get_reserved_names() of ansible-core 2.19 (a test keeps it in step):
# importing Ansible here would cost more than everything else the inventory does.
ANSIBLE_RESERVED = frozenset(
    """
    action always any_errors_fatal args async async_val become become_exe become_flags
    become_method become_user block changed_when check_mode collections connection cycler
    debugger delay delegate_facts delegate_to dict diff environment fact_path failed_when
    force_handlers gather_facts gather_timeout handlers hosts ignore_errors
    ignore_unreachable joiner lipsum local_action lookup loop loop_control loop_with
    max_fail_percentage module_defaults name namespace no_log notify now omit order poll
    port post_tasks pre_tasks q query range register remote_user rescue retries roles
    run_once serial strategy tags tasks throttle timeout undef until vars vars_files
    vars_prompt when with_
    """.split()  # noqa: SIM905 (one name a word reads better than 75 lines)
)
# An address resource: it loses a shared instance-group name to a server.
IP_TYPES = frozenset({"digitalocean_floating_ip", "digitalocean_reserved_ip"})
# Their `tags` hold ids, not names: no tag groups.
ID_TAG_TYPES = frozenset({"vsphere_virtual_machine"})

# Ranks of group kinds: on a name collision the lower rank keeps the name.
_NAME, _INSTANCE, _TYPE, _MODULE, _MODULE_NAME, _MODULE_INSTANCE, _TAG = range(7)
_KIND_WORDS = (
    "resource-name group",
    "instance group",
    "type group",
    "module group",
    "module resource group",
    "module instance group",
    "tag group",
)

_NOT_GROUP_CHAR = re.compile(r"[^A-Za-z0-9_]")
_NOT_HOST_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_HOST_TEXT = re.compile(r"[A-Za-z0-9_.-]+")
_INDEX = re.compile(r'\[(?:(\d+)|"((?:[^"\\]|\\.)*)")\]')


class Inventory(_Frozen):
    """Hosts with their variables, groups of host names, `all` vars, and warnings for stderr."""

    __slots__ = ("all_vars", "groups", "hidden_outputs", "hosts", "warnings")
    hosts: dict[str, dict[str, Any]]
    groups: dict[str, list[str]]
    all_vars: dict[str, Any]
    hidden_outputs: tuple[str, ...]
    warnings: tuple[str, ...]

    def __init__(
        self,
        hosts: dict[str, dict[str, Any]],
        groups: dict[str, list[str]],
        all_vars: dict[str, Any],
        hidden_outputs: tuple[str, ...],
        warnings: tuple[str, ...],
    ) -> None:
        self._set(
            hosts=hosts,
            groups=groups,
            all_vars=all_vars,
            hidden_outputs=hidden_outputs,
            warnings=warnings,
        )


def group_name(text: str) -> str:
    """A valid Ansible group name: letters, digits and `_`, not starting with a digit."""
    name = _NOT_GROUP_CHAR.sub("_", text)
    return "_" + name if name[:1].isdigit() else name


def _index_text(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return "." + match.group(1)
    return "." + str(json.loads('"' + match.group(2) + '"'))


def _key_text(key: int | str) -> str:
    """An index key as host-name text: kept when valid, else sanitised plus the key's CRC-32."""
    if isinstance(key, int):
        return str(key)
    if key and _HOST_TEXT.fullmatch(key):
        return key
    # zlib is a small C module; only a state with such keys pays for loading it.
    from zlib import crc32

    return f"{_NOT_HOST_CHAR.sub('_', key)}-{crc32(key.encode()):08x}"


def _module_key_text(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return "." + match.group(1)
    return "." + _key_text(str(json.loads('"' + match.group(2) + '"')))


def _base_name(module: str, rtype: str, name: str) -> str:
    if "[" in module:
        module = _INDEX.sub(_module_key_text, module)
    base = f"{module}.{rtype}.{name}" if module else f"{rtype}.{name}"
    # Identifiers may hold non-ASCII letters.
    return base if _HOST_TEXT.fullmatch(base) else _NOT_HOST_CHAR.sub("_", base)


def _dig(attributes: Mapping[str, Any], path: Sequence[str | int]) -> Any:
    value: Any = attributes
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or len(value) <= step:
                value = None
                break
            value = value[step]
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            value = None
            break
    if value is None and len(path) > 1:
        # Hand-made v3 states keep "network_interface.0.ipv4_address" flat without a count.
        value = attributes.get(".".join(str(step) for step in path))
    return value


def address_of(resource: Resource, private: bool = False) -> str | None:
    """The address Ansible connects to, or None for a resource that is not a host."""
    paths = ADDRESSES.get(resource.type)
    if paths is None:
        return None
    public, internal = paths
    for path in (*internal, *public) if private else (*public, *internal):
        value = _dig(resource.attributes, path)
        if isinstance(value, str) and value:
            return value
    return None


def _index_group(index: int | str | None) -> str:
    return "0" if index is None else str(index)


def _sort_key(resource: Resource) -> tuple[str, str, str, int, int, str]:
    index = resource.index
    if isinstance(index, int):
        return (resource.module, resource.type, resource.name, 1, index, "")
    if index is None:
        return (resource.module, resource.type, resource.name, 0, 0, "")
    return (resource.module, resource.type, resource.name, 2, 0, index)


def _tags(resource: Resource) -> list[str]:
    if resource.type in ID_TAG_TYPES:
        return []
    tags = resource.attributes.get("tags")
    if isinstance(tags, list):
        return [t for t in tags if isinstance(t, str) and t]
    if isinstance(tags, dict):
        return [f"{k}_{v}" for k, v in tags.items() if isinstance(v, str)]
    return []


def build_inventory(state: State, private: bool = False) -> Inventory:
    """Hosts, groups and `all` vars from a state; collisions become warnings, never silent."""
    warnings: list[str] = []
    hosts: dict[str, dict[str, Any]] = {}
    addresses: dict[str, str] = {}
    # group -> {(rank, origin): [host, ...]}; resolved once every claim is in.
    claims: dict[str, dict[tuple[int, str], list[str]]] = {}
    skipped = {"tainted": 0, "deposed": 0}

    # Thousands of instances share a few group and base names: sanitise each once.
    group_names: dict[str, str] = {}
    base_names: dict[tuple[str, str, str], str] = {}

    def claim(group: str, rank: int, origin: str, host: str) -> None:
        valid = group_names.get(group)
        if valid is None:
            valid = group_names[group] = group_name(group)
        by_origin = claims.setdefault(valid, {})
        by_origin.setdefault((rank, origin), []).append(host)

    for res in sorted(state.resources, key=_sort_key):
        if res.status != "live":
            skipped[res.status] += 1
            continue
        tf_address = res.address
        address = address_of(res, private)
        if address is None:
            if res.type in ADDRESSES:
                warnings.append(f"{tf_address} has no address yet; it is not in the inventory")
            continue
        parts = (res.module, res.type, res.name)
        base = base_names.get(parts)
        if base is None:
            base = base_names[parts] = _base_name(*parts)
        name = plain = base if res.index is None else f"{base}.{_key_text(res.index)}"
        suffix = 1
        while name in hosts:
            # Only a for_each key that looks like another key's sanitised text plus its CRC can
            # get here; the sorted order keeps the suffix stable between runs.
            suffix += 1
            name = f"{plain}-{suffix}"
        if suffix > 1:
            warnings.append(f"{tf_address} is host {name} (host {plain} is another resource)")
        hosts[name] = _hostvars(res, address)
        addresses[name] = tf_address
        index = _index_group(res.index)
        claim(res.name, _NAME, res.name, name)
        claim(f"{res.name}_{index}", _INSTANCE, tf_address, name)
        claim(f"type_{res.type}", _TYPE, res.type, name)
        if res.module:
            module = _INDEX.sub(_index_text, res.module)
            claim(module, _MODULE, res.module, name)
            claim(f"{module}_{res.name}", _MODULE_NAME, f"{res.module}.{res.name}", name)
            claim(f"{module}_{res.name}_{index}", _MODULE_INSTANCE, tf_address, name)
        for tag in _tags(res):
            claim(f"tag_{tag}", _TAG, tag, name)

    groups = _settle_groups(claims, addresses, hosts, warnings)
    for status, count in skipped.items():
        if count:
            warnings.append(f"{count} {status} resource instance(s) left out (not live hosts)")
    all_vars = {
        (f"terraform_{o.name}" if o.name in ANSIBLE_RESERVED else o.name): o.value
        for o in state.outputs
        if not o.sensitive
    }
    hidden = tuple(o.name for o in state.outputs if o.sensitive)
    return Inventory(hosts, dict(sorted(groups.items())), all_vars, hidden, tuple(warnings))


def _hostvars(res: Resource, address: str) -> dict[str, Any]:
    """A host's variables: its attributes (Ansible's reserved names as terraform_<name>), where
    to reach it and which Terraform instance it is."""
    hostvars = dict(res.attributes)
    for key in ANSIBLE_RESERVED.intersection(hostvars):
        hostvars[f"terraform_{key}"] = hostvars.pop(key)
    hostvars["ansible_host"] = address
    hostvars["terraform_address"] = res.address
    hostvars["terraform_type"] = res.type
    hostvars["terraform_resource"] = res.name
    hostvars["terraform_module"] = res.module
    hostvars["terraform_index"] = res.index
    return hostvars


def _settle_groups(
    claims: dict[str, dict[tuple[int, str], list[str]]],
    addresses: dict[str, str],
    hosts: dict[str, dict[str, Any]],
    warnings: list[str],
) -> dict[str, list[str]]:
    """Each group's hosts once every claim is in: one origin has it, or the best rank wins (a
    warning says who lost); Ansible's own all and ungrouped go to nobody."""
    groups: dict[str, list[str]] = {}
    for group, by_origin in claims.items():
        if group in ("all", "ungrouped"):
            warnings.append(f"group {group!r} is reserved by Ansible; resource {group!r} gets none")
            continue
        if len(by_origin) == 1:
            groups[group] = next(iter(by_origin.values()))
            continue
        winner = _resolve(group, by_origin, addresses, hosts, warnings)
        if winner is not None:
            groups[group] = winner
    return groups


def _resolve(
    group: str,
    by_origin: dict[tuple[int, str], list[str]],
    addresses: dict[str, str],
    hosts: dict[str, dict[str, Any]],
    warnings: list[str],
) -> list[str] | None:
    best = min(rank for rank, _ in by_origin)
    top = [(origin, members) for (rank, origin), members in by_origin.items() if rank == best]
    claimants = "; ".join(
        f"the {_KIND_WORDS[rank]} of {', '.join(addresses[h] for h in members)}"
        for (rank, _), members in sorted(by_origin.items())
    )
    if len(top) == 1:
        warnings.append(f"group {group!r} is claimed by {claimants}; it is the {_KIND_WORDS[best]}")
        return top[0][1]
    if best == _INSTANCE:
        servers = [m for _, m in top if hosts[m[0]]["terraform_type"] not in IP_TYPES]
        if len(servers) == 1:
            warnings.append(
                f"group {group!r} is claimed by {claimants}; it holds "
                f"{addresses[servers[0][0]]} (a server wins over a floating/reserved IP)"
            )
            return servers[0]
    warnings.append(
        f"group {group!r} is claimed by {claimants}; it is left out (use the type_ or module_ "
        "groups, or the host names)"
    )
    return None


HOSTNAME_CHOICES = ("address", "name")
"""What a host can be named by: its Terraform address (the default), or its `name` attribute."""


def rename_hosts(inventory: Inventory, preferences: Sequence[str]) -> Inventory:
    """Hosts named by the first of `preferences` each has (`name`: the droplet's name).

    A host with none of them, a name that is not valid host text, or a name another host already
    took keeps its address; the last case is a warning. Groups keep their members.
    """
    unknown = [p for p in preferences if p not in HOSTNAME_CHOICES]
    if unknown:
        raise ScalerError(
            f"unknown hostnames choice {unknown[0]!r} (have: {', '.join(HOSTNAME_CHOICES)})"
        )
    if list(preferences) in ([], ["address"]):
        return inventory
    warnings = list(inventory.warnings)
    taken: set[str] = set()
    new_names: dict[str, str] = {}
    for address, hostvars in inventory.hosts.items():
        chosen = address
        for choice in preferences:
            if choice == "address":
                break
            # `name` is reserved in Ansible, so build_inventory keeps it as terraform_name.
            name = hostvars.get("terraform_name")
            if not (isinstance(name, str) and _HOST_TEXT.fullmatch(name)):
                continue
            if name in taken or (name in inventory.hosts and name != address):
                warnings.append(f"{address} keeps its address: host name {name!r} is taken")
                continue
            chosen = name
            break
        taken.add(chosen)
        new_names[address] = chosen
    hosts = {new_names[a]: v for a, v in inventory.hosts.items()}
    groups = {g: [new_names[a] for a in members] for g, members in inventory.groups.items()}
    return Inventory(hosts, groups, inventory.all_vars, inventory.hidden_outputs, tuple(warnings))


def list_json(inventory: Inventory) -> dict[str, Any]:
    """The `--list` document: every group, `all` with the outputs, and `_meta.hostvars`."""
    doc: dict[str, Any] = {
        "_meta": {"hostvars": inventory.hosts},
        "all": {"hosts": list(inventory.hosts), "vars": inventory.all_vars},
    }
    for group, members in inventory.groups.items():
        doc[group] = {"hosts": members}
    return doc


def host_json(inventory: Inventory, name: str) -> dict[str, Any]:
    """The `--host NAME` document: that host's variables."""
    try:
        return inventory.hosts[name]
    except KeyError:
        raise HostNotFound(name, list(inventory.hosts)) from None


def render_graph(inventory: Inventory) -> str:
    """A view for people: each group with its hosts and their addresses."""
    lines = [f"@all: {len(inventory.hosts)} hosts, {len(inventory.groups)} groups"]
    if inventory.all_vars:
        lines.append(f"  vars (Terraform outputs): {', '.join(inventory.all_vars)}")
    if inventory.hidden_outputs:
        lines.append(f"  sensitive outputs left out: {', '.join(inventory.hidden_outputs)}")
    width = max((len(h) for h in inventory.hosts), default=0)
    for group, members in inventory.groups.items():
        lines.append(f"  @{group}:")
        for host in members:
            lines.append(f"    {host:<{width}}  {inventory.hosts[host]['ansible_host']}")
    return "\n".join(lines) + "\n"


def dumps(document: Any) -> str:
    """Compact JSON for Ansible (the --list of a large stack is megabytes)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_USAGE = (
    "usage: scaler-inventory --list | --host NAME | --graph [-v]\n"
    "Ansible dynamic inventory from the Terraform state. The state is read from TF_STATE, else\n"
    "./terraform.tfstate, else `terraform state pull` in $SCALER_TERRAFORM_DIR (default\n"
    "terraform/). SCALER_INVENTORY_PRIVATE=1 prefers private addresses.\n"
    "Example: ansible-inventory -i inventory/ --graph\n"
)


def script_main(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The inventory script (no click on this path): Ansible's --list/--host protocol."""
    env = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    args = list(argv)
    verbose = "-v" in args
    args = [a for a in args if a != "-v"]
    if args in (["-h"], ["--help"]):
        out.write(_USAGE)
        return 0
    if args == ["--list"] or args == ["--graph"]:
        mode, host = args[0], ""
    elif len(args) == 2 and args[0] == "--host":
        mode, host = "--host", args[1]
    else:
        err.write(f"Error: expected --list, --host NAME or --graph (got {' '.join(argv)!r})\n")
        err.write(_USAGE)
        return 2
    try:
        source = locate_state(terraform_dir=env.get(TERRAFORM_DIR_ENV) or None, environ=env)
        if verbose:
            # Before reading: when the read fails, -v still says where it looked.
            err.write(source.describe() + "\n")
        state = load_source(source)
        inventory = build_inventory(state, private=_truthy(env.get(PRIVATE_ENV)))
        if mode == "--list":
            text = dumps(list_json(inventory)) + "\n"
        elif mode == "--host":
            text = dumps(host_json(inventory, host)) + "\n"
        else:
            text = render_graph(inventory)
    except ScalerError as error:
        err.write(f"Error: {error}\n")
        return 1
    for warning in inventory.warnings:
        err.write(f"Warning: {warning}\n")
    out.write(text)
    return 0


def console_main() -> int:
    """The `scaler-inventory` console script (installed with the package): script_main."""
    return script_main(sys.argv[1:])
