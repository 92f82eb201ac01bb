# The Galera database cluster, the reserved IP (ha_db_fip) in front of its first node, and its
# firewall: MySQL only from the droplets tagged client_tags (the web droplets), SSH from anywhere.
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

variable "client_tags" {
  description = "Tags of the droplets that may reach the database (MySQL, port 3306)."
  type        = list(string)
  default     = []
}

variable "firewall" {
  description = "Put the database droplets behind a cloud firewall."
  type        = bool
  default     = true
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

# The reserved IP and its assignment apart: moving the address to another node (a failover)
# changes the assignment only, never the address WordPress has in DB_HOST.
resource "digitalocean_reserved_ip" "ha_db_fip" {
  region = var.region
}

resource "digitalocean_reserved_ip_assignment" "ha_db_fip" {
  ip_address = digitalocean_reserved_ip.ha_db_fip.ip_address
  droplet_id = digitalocean_droplet.db_node[0].id
}

resource "digitalocean_firewall" "db_node" {
  count = var.firewall ? 1 : 0
  name  = "${var.project_name}-db-node"
  tags  = [digitalocean_tag.db_node.name]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }

  inbound_rule {
    protocol    = "tcp"
    port_range  = "3306"
    source_tags = var.client_tags
  }

  # Galera's replication, state transfer and incremental state transfer: among the nodes only
  inbound_rule {
    protocol    = "tcp"
    port_range  = "4444"
    source_tags = [digitalocean_tag.db_node.name]
  }

  inbound_rule {
    protocol    = "tcp"
    port_range  = "4567-4568"
    source_tags = [digitalocean_tag.db_node.name]
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

output "fip" {
  value = digitalocean_reserved_ip.ha_db_fip.ip_address
}

output "node_ips" {
  value = digitalocean_droplet.db_node[*].ipv4_address
}

output "node_private_ips" {
  value = digitalocean_droplet.db_node[*].ipv4_address_private
}
