terraform {
  required_version = ">= 1.3"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.0"
    }
  }
}

# The token comes from DIGITALOCEAN_TOKEN (and, for the local cloud, the endpoint from
# DIGITALOCEAN_API_URL), so nothing secret or local lives in this configuration.
provider "digitalocean" {}
