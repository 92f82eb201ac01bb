output "lb_ip" {
  description = "Public address of the load balancer."
  value       = digitalocean_loadbalancer.wp_lb.ip
}

output "wp_node_ips" {
  description = "Public addresses of the web droplets."
  value       = digitalocean_droplet.wp_node[*].ipv4_address
}

output "wp_node_private_ips" {
  description = "Private addresses of the web droplets."
  value       = digitalocean_droplet.wp_node[*].ipv4_address_private
}

output "db_node_ips" {
  description = "Private addresses of the Galera database droplets."
  value       = module.galera.node_private_ips
}

output "db_fip" {
  description = "The reserved IP (ha_db_fip) WordPress reaches the database through."
  value       = module.galera.fip
}
