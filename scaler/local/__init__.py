"""The local cloud: every scaler command without a DigitalOcean account (like LocalStack for AWS).

- `scaler.local.api`: a stateful DigitalOcean API v2 stand-in on loopback (`scaler local up`).
- `scaler.local.machines`: the droplets' insides (roots, web and SSH listeners, snapshots).
- `scaler.local.provider`: a Terraform provider for it; `scaler.local.engine`: embedded Terraform.
"""
