"""scaler.tfstate.tfstate: the Terraform state as an Ansible inventory, through scaler's reader.

The hosts, groups and variables are exactly those of scaler's inventory script (the same code,
scaler.state and scaler.inventory, reads the state); this plugin adds what Ansible's plugins offer:
the inventory cache, compose, keyed_groups, groups, strict and a choice of host names.
"""

from __future__ import annotations

import os
import sys

DOCUMENTATION = r"""
name: tfstate
short_description: Terraform state (any version, any backend) as hosts and groups
description:
  - Reads a Terraform state into the hosts, groups and variables that scaler's inventory script
    (C(scaler-inventory)) gives, then applies C(compose), C(groups) and C(keyed_groups).
  - "Hosts: droplets, floating and reserved IPs (and other providers' servers) with an address.
    Groups: each resource name at any module depth (C(wp_node), C(ha_db_fip)), <name>_<index>,
    type_<type>, module_<module>..., tag_<tag>. Root outputs that are not sensitive are C(all)
    vars. Strings are marked unsafe, as in Ansible's own plugins: state values are never templated."
  - The state comes from O(state), else C($TF_STATE), else C(terraform.tfstate) beside this file,
    else C(terraform state pull) in O(terraform_dir) (so remote backends work).
  - Needs the C(scaler) Python package in the Python that runs Ansible (C(pip install scaler)).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it tells Ansible to use it for this file.
    required: true
    choices: [scaler.tfstate.tfstate]
  state:
    description:
      - A state file, or a Terraform directory to run C(terraform state pull) in.
      - A relative path is relative to the folder of this inventory file.
    type: path
  terraform_dir:
    description:
      - Where to run C(terraform state pull) when no state file is found; relative to the folder
        of this inventory file.
    type: path
    default: terraform
    env:
      - name: SCALER_TERRAFORM_DIR
  terraform_bin:
    description:
      - The Terraform (or OpenTofu) binary for C(terraform state pull), or C(embedded) for
        scaler's embedded engine. Default C(terraform) on PATH, then C(tofu), then the embedded one.
    type: str
    env:
      - name: SCALER_TERRAFORM
  private:
    description: Prefer private addresses (C(ipv4_address_private)) for C(ansible_host).
    type: bool
    default: false
    env:
      - name: SCALER_INVENTORY_PRIVATE
  hostnames:
    description:
      - How hosts are named, in order of preference.
      - C(address) is the Terraform address with the index after a dot
        (C(digitalocean_droplet.wp_node.0)), as the script names hosts.
      - C(name) is the resource's C(name) attribute (the droplet's name); a host without one, or
        whose name another host already took, falls back to the next choice, then to its address.
    type: list
    elements: str
    choices: [address, name]
    default: [address]
"""

EXAMPLES = r"""
# inventory/tfstate.yml, then: ansible-inventory -i inventory/tfstate.yml --graph
plugin: scaler.tfstate.tfstate
state: ../terraform.tfstate
hostnames: [name, address]
keyed_groups:
  - key: region
    prefix: region
groups:
  web: terraform_resource == 'wp_node'
compose:
  ansible_host: ipv4_address_private
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/scaler-inventory
"""

from ansible.errors import AnsibleParserError  # noqa: E402 (after the docs, as Ansible's own)
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402


def _import_scaler():
    """scaler's state reader: the installed package, else the checkout this file is part of."""
    try:
        import scaler.inventory
        import scaler.state
    except ImportError:
        here = os.path.realpath(__file__)
        checkout = here
        for _ in range(7):  # plugins/inventory/tfstate.py up to the repository root
            checkout = os.path.dirname(checkout)
        if not os.path.isfile(os.path.join(checkout, "scaler", "inventory.py")):
            return None
        sys.path.insert(0, checkout)
        import scaler.inventory
        import scaler.state
    return scaler


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """The inventory plugin; see DOCUMENTATION."""

    NAME = "scaler.tfstate.tfstate"

    def verify_file(self, path):
        """Only YAML files: Ansible then checks their `plugin:` key."""
        return super().verify_file(path) and path.endswith((".yml", ".yaml"))

    def parse(self, inventory, loader, path, cache=True):
        """Fill the inventory from the state (or the cache), then compose and group."""
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        data = None
        if use_cache:
            try:
                data = self._cache[key]
            except KeyError:
                update_cache = True
            else:
                self.display.vvv(f"scaler.tfstate: inventory of {path} served from the cache")
        if data is None:
            data = self._read(path)
        if update_cache:
            self._cache[key] = data
        self._populate(data)

    def _read(self, path):
        scaler = _import_scaler()
        if scaler is None:
            raise AnsibleParserError(
                "scaler.tfstate needs the scaler Python package in Ansible's Python "
                f"({sys.executable}); pip install scaler there"
            )
        from scaler.errors import ScalerError
        from scaler.inventory import build_inventory, rename_hosts
        from scaler.state import load_source, locate_state

        here = os.path.dirname(os.path.abspath(path))
        environ = dict(os.environ)
        if environ.get("TF_STATE"):
            # TF_STATE is the user's own setting: relative to where they run Ansible.
            environ["TF_STATE"] = os.path.abspath(environ["TF_STATE"])
        engine = self.get_option("terraform_bin") or None
        try:
            source = locate_state(
                self.get_option("state"),
                self.get_option("terraform_dir"),
                environ=environ,
                cwd=here,
            )
            self.display.vvv(f"scaler.tfstate: {source.describe()}")
            state = load_source(source, engine=engine)
            inv = build_inventory(state, private=bool(self.get_option("private")))
            inv = rename_hosts(inv, self.get_option("hostnames") or ["address"])
        except ScalerError as err:
            raise AnsibleParserError(f"scaler.tfstate: {err}") from None
        for warning in inv.warnings:
            self.display.warning(f"scaler.tfstate: {warning}")
        return {"hosts": inv.hosts, "groups": inv.groups, "vars": inv.all_vars}

    def _populate(self, data):
        strict = self.get_option("strict")
        for name, value in data["vars"].items():
            self.inventory.set_variable("all", name, value)
        for host, hostvars in data["hosts"].items():
            self.inventory.add_host(host)
            for name, value in hostvars.items():
                self.inventory.set_variable(host, name, value)
        for group, members in data["groups"].items():
            self.inventory.add_group(group)
            for host in members:
                self.inventory.add_host(host, group=group)
        for host, hostvars in data["hosts"].items():
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(
                self.get_option("groups"), hostvars, host, strict=strict
            )
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), hostvars, host, strict=strict
            )
