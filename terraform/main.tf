locals {
  user_data = var.user_data_file == "" ? null : file(var.user_data_file)
  ssh_keys  = concat(var.ssh_key_ids, digitalocean_ssh_key.deploy[*].fingerprint)
}

resource "digitalocean_ssh_key" "deploy" {
  count      = var.ssh_public_key == "" ? 0 : 1
  name       = "${var.project_name}-deploy"
  public_key = var.ssh_public_key
}

resource "digitalocean_tag" "project" {
  name = var.project_name
}

resource "digitalocean_tag" "wp_node" {
  name = "wp_node"
}

# `scaler rollout` pins the droplets it has not rolled yet to the image they run (wp_node_images).
resource "digitalocean_droplet" "wp_node" {
  count     = var.wp_node_count
  name      = format("%s-wp-node-%02d", var.project_name, count.index + 1)
  image     = lookup(var.wp_node_images, tostring(count.index), var.image_slug)
  region    = var.region
  size      = var.wp_node_size
  ssh_keys  = local.ssh_keys
  user_data = local.user_data
  vpc_uuid  = var.vpc_uuid
  tags      = [digitalocean_tag.wp_node.name, digitalocean_tag.project.name]

  # A new image brings the new droplet up before the old one goes, so the load balancer
  # always has droplets behind it.
  lifecycle {
    create_before_destroy = true
  }
}

resource "digitalocean_loadbalancer" "wp_lb" {
  name      = "${var.project_name}-lb"
  region    = var.region
  size_unit = var.lb_size_unit
  vpc_uuid  = var.vpc_uuid

  forwarding_rule {
    entry_protocol  = "http"
    entry_port      = 80
    target_protocol = "http"
    target_port     = 80
  }

  healthcheck {
    protocol                 = "http"
    port                     = 80
    path                     = var.health_path
    check_interval_seconds   = 10
    response_timeout_seconds = 5
    healthy_threshold        = 3
    unhealthy_threshold      = 3
  }

  droplet_ids = digitalocean_droplet.wp_node[*].id
}

module "galera" {
  source = "./modules/galera"

  project_name = var.project_name
  region       = var.region
  node_count   = var.db_node_count
  image        = var.db_image
  size         = var.db_node_size
  ssh_keys     = local.ssh_keys
  user_data    = local.user_data
  vpc_uuid     = var.vpc_uuid
  tags         = [digitalocean_tag.project.name]
  client_tags  = [digitalocean_tag.wp_node.name]
  firewall     = var.firewall
}

# The web droplets: HTTP only from the load balancer (it checks and forwards over the private
# network), SSH from anywhere, everything outbound.
resource "digitalocean_firewall" "wp_node" {
  count = var.firewall ? 1 : 0
  name  = "${var.project_name}-wp-node"
  tags  = [digitalocean_tag.wp_node.name]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }

  inbound_rule {
    protocol                  = "tcp"
    port_range                = "80"
    source_load_balancer_uids = [digitalocean_loadbalancer.wp_lb.id]
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
