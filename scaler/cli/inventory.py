"""`scaler inventory`: the Terraform state as an Ansible dynamic inventory."""

from __future__ import annotations

import click

from scaler.inventory import (
    PRIVATE_ENV,
    TERRAFORM_DIR_ENV,
    build_inventory,
    dumps,
    host_json,
    list_json,
    render_graph,
)
from scaler.state import DEFAULT_TERRAFORM_DIR, load_source, locate_state


@click.command()
@click.option("--list", "mode", flag_value="list", help="Print the whole inventory as JSON.")
@click.option("--host", metavar="NAME", help="Print the variables of host NAME as JSON.")
@click.option(
    "--graph",
    "mode",
    flag_value="graph",
    default=True,
    help="Print groups, hosts and addresses for people (the default).",
)
@click.option(
    "--state",
    metavar="PATH",
    help="The state file (or a Terraform directory to `terraform state pull` in). "
    "Default: $TF_STATE, else ./terraform.tfstate, else the Terraform directory.",
)
@click.option(
    "--terraform-dir",
    metavar="DIR",
    envvar=TERRAFORM_DIR_ENV,
    default=DEFAULT_TERRAFORM_DIR,
    show_default=True,
    help=f"Where to run `terraform state pull` when no state file is found [${TERRAFORM_DIR_ENV}].",
)
@click.option(
    "--private",
    is_flag=True,
    envvar=PRIVATE_ENV,
    help=f"Prefer private addresses (ipv4_address_private) for ansible_host [${PRIVATE_ENV}=1].",
)
@click.option(
    "--terraform-bin",
    metavar="PATH",
    envvar="SCALER_TERRAFORM",
    help="The terraform or tofu binary for `state pull`, or 'embedded' [$SCALER_TERRAFORM].",
)
@click.option("-v", "--verbose", is_flag=True, help="Say which state was read (on stderr).")
def inventory(
    mode: str,
    host: str | None,
    state: str | None,
    terraform_dir: str,
    private: bool,
    terraform_bin: str | None,
    verbose: bool,
) -> None:
    """Show the Terraform state as an Ansible inventory.

    Hosts are droplets, floating and reserved IPs (and other providers'
    servers), named by their Terraform address; ansible_host is the address.
    Groups: each resource name (`wp_node`, `ha_db_fip`, also inside modules),
    <name>_<index>, type_<type>, module_<module>..., tag_<DigitalOcean tag>.
    Host variables are the resource attributes with their JSON types; root
    outputs are `all` vars, except sensitive ones. Ansible itself uses the
    script inventory/scaler-inventory, which prints the same as --list.

    \b
    Examples:
      scaler inventory                               # groups and hosts, for people
      scaler inventory --list --state terraform.tfstate
      scaler inventory --host digitalocean_droplet.wp_node.0
      scaler inventory --terraform-dir stack --terraform-bin tofu   # remote state
      ansible-inventory -i inventory/ --graph        # what Ansible sees
    """
    source = locate_state(state=state, terraform_dir=terraform_dir)
    if verbose:
        # Before reading: when the read fails, -v still says where it looked.
        click.echo(source.describe(), err=True)
    inv = build_inventory(load_source(source, engine=terraform_bin), private=private)
    for warning in inv.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if host is not None:
        click.echo(dumps(host_json(inv, host)))
    elif mode == "list":
        click.echo(dumps(list_json(inv)))
    else:
        click.echo(render_graph(inv), nl=False)
