"""The build droplet's SSH identity, known before it boots.

scaler makes the droplet's ed25519 host key itself and hands it over in the user data, as
cloud-init takes it (`ssh_keys: {ed25519_private, ed25519_public}`); Ansible then connects with
strict host-key checking against a known_hosts file that holds only that key. Whatever answers
at the droplet's address with another key is not the droplet scaler created, and the bake stops
before any task runs. (Packer and the tutorial turn host-key checking off.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from scaler.errors import ScalerError

CLOUD_CONFIG_HEADER = "#cloud-config"


class UserDataError(ScalerError):
    """The user data cannot carry the host key."""


@dataclass(frozen=True)
class HostKey:
    """An ed25519 host key: the OpenSSH private key text and the public line."""

    private: str
    public: str

    @property
    def key_text(self) -> str:
        """`ssh-ed25519 AAAA...` without a comment (as ssh-keyscan prints it)."""
        return " ".join(self.public.split()[:2])


def new_host_key() -> HostKey:
    """A fresh ed25519 host key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return HostKey(private, public.decode() + " scaler-build-host")


def with_host_key(user_data: str, key: HostKey, where: str) -> str:
    """The cloud-config user data with `ssh_keys` set to `key`; UserDataError for a user data
    that is not cloud-config (a script, MIME multipart) or already names host keys."""
    first = user_data.lstrip("\ufeff").split("\n", 1)[0].strip()
    if first != CLOUD_CONFIG_HEADER:
        raise UserDataError(
            f"the user data {where} is not cloud-config (it starts with {first[:30]!r}); scaler "
            "gives the build droplet its SSH host key through cloud-config's ssh_keys: make it "
            f"a cloud-config file starting with {CLOUD_CONFIG_HEADER}"
        )
    try:
        parsed = yaml.safe_load(user_data)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserDataError(f"the user data {where} is not valid YAML{at}; fix it") from None
    except RecursionError:
        raise UserDataError(f"the user data {where} is nested too deeply; fix it") from None
    if parsed is None:
        parsed = {}
    if not isinstance(parsed, dict):
        raise UserDataError(f"the user data {where} is cloud-config but not a mapping; fix it")
    if "ssh_keys" in parsed:
        raise UserDataError(
            f"the user data {where} sets ssh_keys itself; scaler sets the build droplet's host "
            "key: remove ssh_keys from it"
        )
    block = yaml.safe_dump(
        {"ssh_keys": {"ed25519_private": key.private, "ed25519_public": key.public}},
        default_style=None,
        width=1000,
    )
    # Appended, so the user's own text, comments included, stays as it is; re-parsed to make
    # sure it still means what it did plus the key.
    merged = user_data.rstrip("\n") + "\n\n# the build droplet's SSH host key (scaler)\n" + block
    try:
        check = yaml.safe_load(merged)
    except yaml.YAMLError:
        check = None
    expected = {
        **parsed,
        "ssh_keys": {"ed25519_private": key.private, "ed25519_public": key.public},
    }
    if check != expected:
        merged = CLOUD_CONFIG_HEADER + "\n" + yaml.safe_dump(expected, width=1000)
    return merged


def write_known_hosts(folder: Path, host: str, port: int, key: HostKey) -> Path:
    """A known_hosts file (0600) holding only this host's key."""
    name = host if port == 22 else f"[{host}]:{port}"
    path = folder / "known_hosts"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{name} {key.key_text}\n")
    return path
