"""The catalogue: regions, sizes, base images, and the names DigitalOcean allows."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

from scaler.local.api.base import EPOCH_ISO, JSON

REGIONS: dict[str, str] = {
    "nyc1": "New York 1",
    "nyc3": "New York 3",
    "sfo2": "San Francisco 2",
    "sfo3": "San Francisco 3",
    "ams3": "Amsterdam 3",
    "sgp1": "Singapore 1",
    "lon1": "London 1",
    "fra1": "Frankfurt 1",
    "tor1": "Toronto 1",
    "blr1": "Bangalore 1",
    "syd1": "Sydney 1",
}
REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
DEFAULT_REGION = "nyc3"

# slug -> memory MB, vcpus, disk GB, transfer TB, price monthly, description
SIZES: dict[str, tuple[int, int, int, float, float, str]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
    "512mb": (512, 1, 20, 1.0, 5.0, "Legacy Basic"),
    "1gb": (1024, 1, 30, 2.0, 10.0, "Legacy Basic"),
    "2gb": (2048, 2, 40, 3.0, 20.0, "Legacy Basic"),
}

# slug -> id, name, distribution, min_disk_size, size_gigabytes
BASE_IMAGES: dict[str, tuple[int, str, str, int, float]] = {
    "debian-12-x64": (150000001, "12 x64", "Debian", 10, 1.12),
    "ubuntu-22-04-x64": (150000002, "22.04 (LTS) x64", "Ubuntu", 10, 2.28),
    "ubuntu-24-04-x64": (150000003, "24.04 (LTS) x64", "Ubuntu", 10, 2.44),
    # The tutorial's variables.json builds from debian-9-x64; it gets the same small tree.
    "debian-9-x64": (150000004, "9 x64", "Debian", 10, 1.0),
    "debian-11-x64": (150000005, "11 x64", "Debian", 10, 1.1),
}

NAME_RE = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
DROPLET_ACTIONS = {
    "shutdown",
    "power_off",
    "power_on",
    "reboot",
    "power_cycle",
    "snapshot",
    "rename",
    "resize",
    "enable_backups",
    "disable_backups",
    "enable_ipv6",
    "password_reset",
}


def region_json(slug: str) -> JSON:
    """A region as the API shows it."""
    return {
        "name": REGIONS.get(slug, slug),
        "slug": slug,
        "features": list(REGION_FEATURES),
        "available": True,
        "sizes": list(SIZES),
    }


def size_json(slug: str) -> JSON:
    """A size as the API shows it."""
    memory, vcpus, disk, transfer, monthly, description = SIZES[slug]
    return {
        "slug": slug,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": transfer,
        "price_monthly": monthly,
        "price_hourly": round(monthly / 672, 5),
        "regions": list(REGIONS),
        "available": True,
        "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }


def vpc_uuid(region: str) -> str:
    """The default VPC of a region."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scaler-local-vpc-{region}"))


def fingerprint(public_key: str) -> str:
    """The MD5 fingerprint DigitalOcean shows for an OpenSSH public key (aa:bb:...)."""
    parts = public_key.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key")
    blob = base64.b64decode(parts[1], validate=True)
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def base_image_json(slug: str) -> JSON:
    """A base (distribution) image as the API shows it."""
    image_id, name, distribution, min_disk, size = BASE_IMAGES[slug]
    return {
        "id": image_id,
        "name": name,
        "distribution": distribution,
        "slug": slug,
        "public": True,
        "regions": list(REGIONS),
        "created_at": EPOCH_ISO,
        "min_disk_size": min_disk,
        "type": "base",
        "size_gigabytes": size,
        "description": f"{distribution} {name}",
        "tags": [],
        "status": "available",
        "error_message": "",
    }
