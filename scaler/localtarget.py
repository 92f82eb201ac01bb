"""What the core needs to know about scaler's built-in local cloud, detected once per endpoint.

Against DigitalOcean this is None and nothing changes. Against a local cloud (an endpoint on
loopback that answers `/_local/health`), it says what kind of droplets that cloud runs: `real`
ones (Linux hosts of their own, which a bake provisions over SSH exactly as on DigitalOcean) or
`directory` stand-ins (which nothing may provision), which base images it builds for real, and
on which loopback ports it serves the droplets' SSH and web ports. The core reads no
SCALER_LOCAL_* variable itself: what `scaler local up` exports is read here.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaler.errors import ScalerError

# Debian's wordpress package: WordPress for bakes here, whose droplets reach nothing but the
# local cloud's package mirror.
WORDPRESS_PACKAGE = "wordpress"
# The role variables that say where WordPress comes from (scaler/roles/welp).
WORDPRESS_SOURCES = ("welp_wordpress_src_dir", "welp_wordpress_archive", "welp_wordpress_package")

# What `scaler local up` exports: the port each droplet's port 80 is served on (80 as root).
WEB_PORT_ENV = "SCALER_LOCAL_WEB_PORT"


class NeedsRealDroplets(ScalerError):
    """Provisioning was asked of a local cloud whose droplets are directories."""


@dataclass(frozen=True)
class LocalTarget:
    """A running local cloud, as its `/_local/health` describes it."""

    url: str
    droplet_kind: str
    note: str
    ssh_port: int
    state_dir: Path | None
    real_images: tuple[str, ...]
    web_port: int = 80

    def wordpress_source(self, extravars: Mapping[str, Any]) -> dict[str, str]:
        """The role variable that gets WordPress here when `extravars` names no source:
        Debian's package (the droplets reach only the package mirror); {} when one is named."""
        if any(extravars.get(name) for name in WORDPRESS_SOURCES):
            return {}
        return {"welp_wordpress_package": WORDPRESS_PACKAGE}

    def stand_in_password(self) -> str:
        """A random database password: no database stands behind the local cloud, and a random
        one keeps the role's check honest without a shared default (never print it)."""
        return secrets.token_urlsafe(24)

    def port_map(self) -> dict[int, int]:
        """The check port -> the port to dial here (see scaler.health): {} when 80 is 80."""
        return {} if self.web_port == 80 else {80: self.web_port}

    def require_real_droplets(self, what: str) -> None:
        """Refuse `what` (e.g. "a bake") unless the droplets are real hosts of their own."""
        if self.droplet_kind == "real":
            return
        why = f" ({self.note})" if self.note else ""
        raise NeedsRealDroplets(
            f"the local cloud at {urllib.parse.urlsplit(self.url).netloc} runs directory "
            f"droplets{why}, which nothing can provision; {what} needs real droplets: restart "
            "it with `scaler local down && scaler local up --droplets real` as root on Debian "
            "(`make demo` installs what they need)"
        )

    def image_note(self, slug: str) -> str | None:
        """A one-line warning when `slug` is not built for real here (the cloud maps it)."""
        if not self.real_images or slug in self.real_images or slug.isdigit():
            return None
        return (
            f"local cloud: image {slug} cannot be built on this machine; the droplet gets "
            f"{self.real_images[0]} instead (the nearest real image)"
        )


def detect_local_target(endpoint: str) -> LocalTarget | None:
    """The local cloud behind `endpoint` (a /v2/ URL), or None for any other cloud."""
    health = local_health(endpoint)
    if health is None:
        return None
    port, web = health.get("ssh_port"), health.get("web_port")
    state_dir = health.get("state_dir")
    images = health.get("real_images")
    return LocalTarget(
        url=str(health.get("url") or endpoint),
        droplet_kind=str(health.get("droplet_kind") or "directory"),
        note=str(health.get("droplet_kind_note") or ""),
        ssh_port=port if isinstance(port, int) and not isinstance(port, bool) else 22,
        state_dir=Path(state_dir) if isinstance(state_dir, str) else None,
        real_images=tuple(str(i) for i in images) if isinstance(images, list) else (),
        web_port=web if isinstance(web, int) and not isinstance(web, bool) else 80,
    )


def web_port_setting(environ: Mapping[str, str] | None = None) -> str | None:
    """SCALER_LOCAL_WEB_PORT as `scaler local up` exported it (a port map's text), if set."""
    env = os.environ if environ is None else environ
    return env.get(WEB_PORT_ENV) or None


def local_health(endpoint: str) -> dict[str, Any] | None:
    """What a local cloud on loopback says of itself; None for a cloud elsewhere or no answer."""
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.hostname or ""
    if not (host == "localhost" or host.startswith("127.")):
        return None
    try:
        with urllib.request.urlopen(
            f"{parts.scheme}://{parts.netloc}/_local/health", timeout=5
        ) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    if not isinstance(health, dict) or not health.get("ok"):
        return None
    return health
