# The Galera database cluster and the floating IP (ha_db_fip) in front of its first node.
terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.0"
    }
  }
}

variable "project_name" {
  type = string
}

variable "region" {
  type = string
}

variable "node_count" {
  type    = number
  default = 3
}

variable "image" {
  type    = string
  default = "debian-12-x64"
}

variable "size" {
  type    = string
  default = "s-1vcpu-1gb"
}

variable "ssh_keys" {
  type    = list(string)
  default = []
}

variable "user_data" {
  type    = string
  default = null
}

variable "vpc_uuid" {
  type    = string
  default = null
}

variable "tags" {
  type    = list(string)
  default = []
}

resource "digitalocean_tag" "db_node" {
  name = "db_node"
}

resource "digitalocean_droplet" "db_node" {
  count     = var.node_count
  name      = format("%s-db-node-%02d", var.project_name, count.index + 1)
  image     = var.image
  region    = var.region
  size      = var.size
  ssh_keys  = var.ssh_keys
  user_data = var.user_data
  vpc_uuid  = var.vpc_uuid
  tags      = concat([digitalocean_tag.db_node.name], var.tags)
}

resource "digitalocean_floating_ip" "ha_db_fip" {
  region     = var.region
  droplet_id = digitalocean_droplet.db_node[0].id
}

output "fip" {
  value = digitalocean_floating_ip.ha_db_fip.ip_address
}

output "node_ips" {
  value = digitalocean_droplet.db_node[*].ipv4_address
}

output "node_private_ips" {
  value = digitalocean_droplet.db_node[*].ipv4_address_private
}
