"""`python -m scaler.demo` (`make demo`): scaler on the example state of the tutorial stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scaler.inventory import build_inventory, list_json, render_graph
from scaler.state import read_state

EXAMPLE_STATE = Path(__file__).resolve().parent.parent / "examples" / "terraform.tfstate"


def main() -> int:
    """Print the inventory of examples/terraform.tfstate as people and as Ansible see it."""
    inventory = build_inventory(read_state(EXAMPLE_STATE))
    for warning in inventory.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    print("== scaler inventory --graph --state examples/terraform.tfstate")
    print(
        "The tutorial stack's Terraform state (3 wp_node droplets behind a load balancer, a\n"
        "Galera module with 3 droplets and the floating IP ha_db_fip) as Ansible groups. The\n"
        "load balancer and the floating-IP assignment are not hosts; the sensitive output\n"
        "db_root_password stays out.\n"
    )
    sys.stdout.write(render_graph(inventory))

    doc = list_json(inventory)
    fip = inventory.groups["ha_db_fip"][0]
    print("\n== scaler inventory --list --state examples/terraform.tfstate")
    print(
        "What Ansible reads (inventory/scaler-inventory prints the same). Groups, then the\n"
        f"typed host variables of {fip} only;\n"
        "the role's wp_db_host, hostvars[groups['ha_db_fip'][0]]['ip_address'], is "
        f"{inventory.hosts[fip]['ip_address']}.\n"
    )
    print("{")
    for group, body in doc.items():
        if group != "_meta":
            print(f'  "{group}": {json.dumps(body)},')
    shown = {fip: inventory.hosts[fip]}
    others = len(inventory.hosts) - 1
    meta = json.dumps({"hostvars": shown}, indent=2).replace("\n", "\n  ")
    print(f'  "_meta": {meta}\n  (and the hostvars of {others} more hosts)\n}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
