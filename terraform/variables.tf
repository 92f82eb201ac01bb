variable "project_name" {
  description = "Tag put on every droplet of the stack; also the prefix of resource names."
  type        = string
  default     = "wordpress"
}

variable "region" {
  description = "DigitalOcean region slug for every resource."
  type        = string
  default     = "nyc3"
}

variable "image_slug" {
  description = "Image of the wp_node droplets: a distribution slug or a snapshot id (what `scaler bake` sets)."
  type        = string
  default     = "debian-12-x64"
}

variable "wp_node_images" {
  description = "Image per wp_node droplet by count index (\"0\" is the first), overriding image_slug. `scaler rollout` pins the droplets it has not rolled yet; empty: every droplet runs image_slug."
  type        = map(string)
  default     = {}
}

variable "health_path" {
  description = "Path the load balancer's health check requests on each web droplet (a 2xx passes)."
  type        = string
  default     = "/"
}

variable "wp_node_count" {
  description = "Number of WordPress web droplets behind the load balancer."
  type        = number
  default     = 3
}

variable "wp_node_size" {
  description = "Droplet size slug of the web droplets."
  type        = string
  default     = "s-1vcpu-1gb"
}

variable "db_node_count" {
  description = "Number of Galera database droplets."
  type        = number
  default     = 3
}

variable "db_image" {
  description = "Image of the Galera database droplets."
  type        = string
  default     = "debian-12-x64"
}

variable "db_node_size" {
  description = "Droplet size slug of the database droplets."
  type        = string
  default     = "s-1vcpu-1gb"
}

variable "ssh_key_ids" {
  description = "Ids or fingerprints of SSH keys already in the account, put on every droplet."
  type        = list(string)
  default     = []
}

variable "ssh_public_key" {
  description = "An OpenSSH public key to upload and put on every droplet (empty: none)."
  type        = string
  default     = ""
}

variable "user_data_file" {
  description = "Cloud-init user data for every droplet, e.g. config/cloud-config.yaml (empty: none). Relative to the directory Terraform runs in."
  type        = string
  default     = ""
}

variable "vpc_uuid" {
  description = "VPC for every droplet and the load balancer (null: the region's default VPC)."
  type        = string
  default     = null
}

variable "lb_size_unit" {
  description = "Load balancer size in nodes."
  type        = number
  default     = 1
}

variable "firewall" {
  description = "Cloud firewalls: HTTP to the web droplets only from the load balancer, MySQL to the database only from the web droplets, SSH from anywhere."
  type        = bool
  default     = true
}
