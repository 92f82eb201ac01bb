"""Base images for real local droplets: Debian root filesystems built with mmdebstrap, cached.

A base image is a directory tree, the read-only lowest layer of every droplet made from it. It is
built once per recipe with `mmdebstrap --variant=minbase` from the Debian sources this machine's
own apt uses (never a mirror named here), through the local cloud's package mirror so that the
packages land in its persistent cache, then prepared as a DigitalOcean image is: no SSH host keys
and an empty machine-id (cloud-init and the droplet's init make them on first boot), cloud-init
told to read its NoCloud seed, and apt pointed at the local cloud's mirror (see mirror.py), as
DigitalOcean's images point at DigitalOcean's.

Only `debian-12-x64` is built here. Every other slug (the tutorial's `debian-9-x64`, Ubuntu's)
maps to it, with a one-line warning naming both: never silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from scaler.errors import ScalerError
from scaler.events import Say

REAL_IMAGES: dict[str, str] = {"debian-12-x64": "bookworm"}
"""Slugs built for real here, and their Debian suite."""
FALLBACK_IMAGE = "debian-12-x64"

# What a DigitalOcean Debian image has that the role and the tutorial's user data rely on.
INCLUDE = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "openssh-server",
    "ca-certificates",
    "cloud-init",
    "sudo",
    "iproute2",
    "procps",
    "curl",
)
# Logins need no logind here (no seats, no PAM module for it), and the ext4 scrub no block device.
MASKED = ("systemd-logind.service", "e2scrub_reap.service", "getty@tty1.service")
# Bump when the preparation below changes: a new recipe builds a new cached tree.
RECIPE_VERSION = 7

CLOUD_CFG = """\
# Written by scaler's local cloud: the droplet's user data and meta data come from the NoCloud
# seed the local cloud writes (as DigitalOcean's metadata service gives them to real droplets).
datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    seedfrom: /var/lib/cloud/seed/nocloud/
# As on DigitalOcean's images: the droplet's SSH keys are root's, and root may log in with them.
disable_root: false
manage_etc_hosts: true
# C.UTF-8 is built into glibc: nothing to generate (the minimal image has no locales package).
locale: C.UTF-8
# The local cloud sets up the droplet's addresses itself (a veth in its own network namespace).
network: {config: disabled}
"""


class ImageError(ScalerError):
    """A base image cannot be built or found."""


def cache_dir() -> Path:
    """Where built base images are kept (SCALER_IMAGE_CACHE, else /var/cache/scaler/images)."""
    found = os.environ.get("SCALER_IMAGE_CACHE")
    if found:
        return Path(found)
    if os.geteuid() == 0:
        return Path("/var/cache/scaler/images")
    return Path.home() / ".cache" / "scaler" / "images"


def real_slug(slug: str, warn: Say) -> str:
    """The slug built here for `slug`: itself, or the nearest real image with a warning."""
    if slug in REAL_IMAGES:
        return slug
    warn(
        f"image {slug} cannot be built on this machine; droplets get {FALLBACK_IMAGE} instead "
        "(the nearest real image)"
    )
    return FALLBACK_IMAGE


def host_sources() -> str:
    """This machine's own Debian apt sources (deb822 or one-line), as apt reads them."""
    parts = []
    folder = Path("/etc/apt/sources.list.d")
    for path in [Path("/etc/apt/sources.list"), *sorted(folder.glob("*"))]:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            parts.append((path.suffix, path.read_text()))
    text = "\n".join(t for _, t in parts)
    if not re.search(r"^\s*(deb\s|Types:\s*deb)", text, re.M):
        raise ImageError(
            "this machine's apt has no Debian sources (/etc/apt/sources.list*), so base images "
            "cannot be built; configure apt, or run without real droplets"
        )
    return text


def recipe_key(slug: str, mirror_proxy: str) -> str:
    """A short hash naming one build of `slug` (recipe, packages, sources, mirror address)."""
    digest = hashlib.sha256()
    parts = (
        str(RECIPE_VERSION),
        slug,
        ",".join(INCLUDE),
        ",".join(MASKED),
        host_sources(),
        mirror_proxy,
    )
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def ensure_base_image(slug: str, *, mirror_proxy: str, progress: Say) -> Path:
    """The cached tree for `slug` (a key of REAL_IMAGES), built first if it is not there yet.

    `mirror_proxy` is the http://host:port the droplets' apt goes through (written into the image)
    and that the build itself uses. Concurrent callers wait for one build.
    """
    suite = REAL_IMAGES[slug]
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tree = folder / f"{slug}-{recipe_key(slug, mirror_proxy)}"
    if (tree / ".scaler-image").is_file():
        return tree
    with open(folder / f".{tree.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / ".scaler-image").is_file():
            return tree
        if shutil.which("mmdebstrap") is None:
            raise ImageError(
                f"building base image {slug} needs mmdebstrap (Debian package mmdebstrap); "
                "install it, or run without real droplets"
            )
        progress(f"building base image {slug} with mmdebstrap (once; cached in {folder})")
        staging = Path(tempfile.mkdtemp(prefix=f".{tree.name}-", dir=folder))
        try:
            _mmdebstrap(suite, staging / "root", mirror_proxy)
            _prepare(staging / "root", mirror_proxy)
            (staging / "root" / ".scaler-image").write_text(f"{slug}\n")
            shutil.rmtree(tree, ignore_errors=True)
            (staging / "root").rename(tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree


def _mmdebstrap(suite: str, target: Path, mirror_proxy: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".sources", delete=False) as sources:
        sources.write(host_sources())
    try:
        argv = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--mode=root",
            f"--include={','.join(INCLUDE)}",
            f'--aptopt=Acquire::http::Proxy "{mirror_proxy}"',
            suite,
            str(target),
            sources.name,
        ]
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800
        )
    finally:
        os.unlink(sources.name)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith(("E:", "W:"))]
        tail = "; ".join(lines[:3]) or f"exit {done.returncode}"
        raise ImageError(f"mmdebstrap could not build a {suite} root ({tail})")


def _prepare(root: Path, mirror_proxy: str) -> None:
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    dbus_id.unlink(missing_ok=True)
    cfg = root / "etc" / "cloud" / "cloud.cfg.d" / "90-scaler-local.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(CLOUD_CFG)
    proxy = root / "etc" / "apt" / "apt.conf.d" / "01scaler-local-mirror"
    proxy.write_text(
        "// The local cloud's package mirror (a caching proxy on the host end of the veth).\n"
        f'Acquire::http::Proxy "{mirror_proxy}";\n'
    )
    # systemd runs as the droplet's init in a container (its own namespaces): units that manage
    # what a container does not have would only fail there.
    for unit in MASKED:
        link = root / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    # Debian's docs and man pages are not what a droplet serves; a DigitalOcean image keeps them,
    # but they cost a third of every snapshot copy here.
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True, exist_ok=True)
