"""A tutorial-style project of a user's own, written into a folder: their Terraform stack (in
each way a stack attaches droplets to its balancer), their own small role and Packer files.

Nothing here is scaler's: no terraform/, no roles/ansible-welp, no packer-build.yml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Attach = Literal["droplet_ids", "droplet_tag", "outside", "for_each", "ignore_changes"]
ATTACH: tuple[Attach, ...] = ("droplet_ids", "droplet_tag", "outside", "for_each", "ignore_changes")
WEB_TAG = "web"
KEYS = ("blue", "green", "red")

_VERSIONS = """terraform {
  required_providers {
    digitalocean = {
      source = "digitalocean/digitalocean"
    }
  }
}

provider "digitalocean" {}
"""

_GALERA = """resource "digitalocean_droplet" "db_node" {
  name   = "${var.project_name}-db"
  image  = "debian-12-x64"
  region = "nyc3"
  size   = "s-1vcpu-1gb"
}

resource "digitalocean_floating_ip" "ha_db_fip" {
  droplet_id = digitalocean_droplet.db_node.id
  region     = "nyc3"
}

variable "project_name" {
  type = string
}
"""


def healthcheck(path: str) -> str:
    """The balancer's health check block (a 2xx on `path` passes)."""
    return f"""  healthcheck {{
    protocol                 = "http"
    port                     = 80
    path                     = "{path}"
    check_interval_seconds   = 10
    response_timeout_seconds = 5
    healthy_threshold        = 3
    unhealthy_threshold      = 3
  }}
"""


def stack_tf(
    attach: Attach, *, count: int = 3, path: str = "/", user_data: bool = False, galera: bool = True
) -> str:
    """main.tf of a tutorial-style stack: `count` web droplets on var.image_slug, a balancer."""
    for_each = attach == "for_each"
    pinned = attach != "ignore_changes"
    lines = [
        'variable "image_slug" {\n  type = string\n}\n',
        'variable "project_name" {\n  type    = string\n  default = "tut"\n}\n',
    ]
    if pinned:
        lines.append('variable "wp_node_images" {\n  type    = map(string)\n  default = {}\n}\n')
    if user_data:
        lines.append('variable "user_data_file" {\n  type = string\n}\n')
    lines.append(f'resource "digitalocean_tag" "web" {{\n  name = "{WEB_TAG}"\n}}\n')
    if for_each:
        keys = ", ".join(f'"{k}"' for k in KEYS[:count])
        head = f"  for_each = toset([{keys}])\n"
        name = '"${var.project_name}-web-${each.key}"'
        image = "lookup(var.wp_node_images, each.key, var.image_slug)"
        ids = "[for d in digitalocean_droplet.wp_node : d.id]"
    else:
        head = f"  count    = {count}\n"
        name = 'format("%s-web-%02d", var.project_name, count.index + 1)'
        image = (
            "lookup(var.wp_node_images, tostring(count.index), var.image_slug)"
            if pinned
            else "var.image_slug"
        )
        ids = "digitalocean_droplet.wp_node[*].id"
    lifecycle = "    create_before_destroy = true\n"
    if not pinned:
        lifecycle += "    ignore_changes        = [image]\n"
    lines.append(
        'resource "digitalocean_droplet" "wp_node" {\n'
        + head
        + f"  name      = {name}\n"
        + f"  image     = {image}\n"
        + '  region    = "nyc3"\n'
        + '  size      = "s-1vcpu-1gb"\n'
        + "  tags      = [digitalocean_tag.web.name]\n"
        + ("  user_data = file(var.user_data_file)\n" if user_data else "")
        + f"\n  lifecycle {{\n{lifecycle}  }}\n}}\n"
    )
    if attach != "outside":
        attached = (
            "  droplet_tag = digitalocean_tag.web.name\n"
            if attach == "droplet_tag"
            else f"  droplet_ids = {ids}\n"
        )
        lines.append(
            'resource "digitalocean_loadbalancer" "www" {\n'
            '  name      = "${var.project_name}-lb"\n'
            '  region    = "nyc3"\n'
            "  size_unit = 1\n\n"
            "  forwarding_rule {\n"
            '    entry_protocol  = "http"\n'
            "    entry_port      = 80\n"
            '    target_protocol = "http"\n'
            "    target_port     = 80\n"
            "  }\n\n" + healthcheck(path) + "\n" + attached + "}\n"
        )
    if galera:
        lines.append(
            'module "galera" {\n  source       = "./galera"\n  project_name = var.project_name\n}\n'
        )
    return "\n".join(lines)


def write_stack(folder: Path, attach: Attach, image: str | int, **options: object) -> Path:
    """The stack in `folder` (with its galera module and terraform.tfvars); `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "versions.tf").write_text(_VERSIONS)
    (folder / "main.tf").write_text(stack_tf(attach, **options))  # type: ignore[arg-type]
    if options.get("galera", True):
        (folder / "galera").mkdir(exist_ok=True)
        (folder / "galera" / "main.tf").write_text(_GALERA)
        # a module names its provider's source too, else Terraform looks for hashicorp's
        (folder / "galera" / "versions.tf").write_text(_VERSIONS.split("provider ")[0])
    tfvars = f'# the web image\nimage_slug = "{image}"\n'
    if options.get("user_data"):
        tfvars += 'user_data_file = "cloud-config.yaml"\n'
    (folder / "terraform.tfvars").write_text(tfvars)
    return folder


def outside_balancer(path: str = "/") -> dict[str, object]:
    """An API body for a balancer made outside the stack that takes the droplets tagged web."""
    return {
        "name": "tut-lb-outside",
        "region": "nyc3",
        "forwarding_rules": [
            {
                "entry_protocol": "http",
                "entry_port": 80,
                "target_protocol": "http",
                "target_port": 80,
            }
        ],
        "health_check": {
            "protocol": "http",
            "port": 80,
            "path": path,
            "check_interval_seconds": 10,
            "response_timeout_seconds": 5,
            "healthy_threshold": 3,
            "unhealthy_threshold": 3,
        },
        "tag": WEB_TAG,
    }


# --- the user's own role: nginx serving a static page and a health file ----------------------

ROLE_TASKS = """---
- name: Install nginx
  ansible.builtin.apt:
    name: nginx
    state: present
    update_cache: true

- name: The site's page
  ansible.builtin.copy:
    dest: /var/www/html/index.html
    content: "{{ site_page }}\\n"
    mode: "0644"

- name: The health file the load balancer asks for
  ansible.builtin.copy:
    dest: /var/www/html/healthz
    content: "ok\\n"
    mode: "0644"

- name: nginx starts at boot
  ansible.builtin.service:
    name: nginx
    enabled: true
"""

PLAYBOOK = """---
- name: Bake the web image
  hosts: all
  become: true
  roles:
    - site
"""

CLOUD_CONFIG = """#cloud-config
users:
  - name: deploy
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
"""


def write_project(folder: Path, page: str = "tutorial site v1") -> Path:
    """The user's bake files: Packer template + var file, playbook, their role `site`."""
    role = folder / "roles" / "site"
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "defaults").mkdir(exist_ok=True)
    (role / "tasks" / "main.yml").write_text(ROLE_TASKS)
    (role / "defaults" / "main.yml").write_text(f'---\nsite_page: "{page}"\n')
    (folder / "packer-build.yml").write_text(PLAYBOOK)
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "cloud-config.yaml").write_text(CLOUD_CONFIG)
    template = {
        "variables": {"do_api_token": "", "app_node_image": "", "project_name": ""},
        "builders": [
            {
                "type": "digitalocean",
                "api_token": "{{user `do_api_token`}}",
                "image": "{{user `app_node_image`}}",
                "region": "nyc3",
                "size": "s-1vcpu-1gb",
                "ssh_username": "root",
                "snapshot_name": "{{user `project_name`}}_{{timestamp}}",
                "user_data_file": "config/cloud-config.yaml",
            }
        ],
        "provisioners": [{"type": "ansible", "playbook_file": "packer-build.yml"}],
        "post-processors": [{"type": "manifest", "output": "manifest.json"}],
    }
    (folder / "web-node.json").write_text(json.dumps(template, indent=2) + "\n")
    variables = {"app_node_image": "debian-12-x64", "project_name": "tut"}
    (folder / "variables.json").write_text(json.dumps(variables, indent=2) + "\n")
    return folder


def set_page(folder: Path, page: str) -> None:
    """Edit the user's role: a new page (what a rebake must notice)."""
    (folder / "roles" / "site" / "defaults" / "main.yml").write_text(f'---\nsite_page: "{page}"\n')
