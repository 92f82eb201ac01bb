"""scaler: bake WordPress snapshots and roll them out on DigitalOcean with Terraform and Ansible.

Deliberately imports nothing: the inventory script imports submodules on Ansible's hot path.
"""

__version__ = "0.1.0"
