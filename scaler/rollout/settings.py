"""Where and how a rollout runs: its Terraform directory, tfvars files, targets and checks."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scaler.fsutil import BOOKKEEPING_DIR, bookkeeping_dir
from scaler.rollout.plan import DEFAULT_TARGET, PIN_VAR, Gate
from scaler.rollout.record import HISTORY_NAME, RECORD_NAME
from scaler.tfvars import (
    IMAGE_VAR,
    tfvars_holding,
)


@dataclass(frozen=True)
class Settings:
    """Where and how a rollout runs (everything but the plan itself)."""

    terraform_dir: Path
    var_file: Path | None = None
    # Every tfvars file Terraform gets (-var-file, in order); the one setting image_var is written.
    var_files: tuple[Path, ...] = ()
    backend_config: tuple[str, ...] = ()
    image_var: str = IMAGE_VAR
    targets: tuple[str, ...] = (DEFAULT_TARGET,)
    pin_var: str = PIN_VAR
    load_balancer: str | None = None
    workspace: str | None = None
    lock_timeout: str = "0s"
    parallelism: int | None = None
    engine: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    local: bool | None = None
    health_interval: float | None = None
    health_timeout: float = 300.0
    health_grace: float = 30.0
    port_map: Mapping[int, int] = field(default_factory=dict)
    deadline: float | None = None
    rollback: bool = True
    # (user, private key): check droplets this machine cannot reach through SSH to them
    probe_ssh: tuple[str, Path] | None = None
    # seconds an old droplet is out of the balancer before its batch destroys it; None: the
    # balancer's http_idle_timeout_seconds (0 where the balancer carries no traffic)
    drain: float | None = None
    # seconds a new droplet must pass every check in a row before it counts
    min_healthy_time: float = 0.0
    # HTTP checks each new droplet must pass beyond the balancer's own
    gates: tuple[Gate, ...] = ()
    on_gate_failure: Literal["abort", "pause"] = "abort"
    # stop after this batch ("N") or once this share of the droplets is done ("N%")
    pause_after: str | None = None

    def __post_init__(self) -> None:
        # Terraform runs inside terraform_dir: plan files named under it must not be relative.
        object.__setattr__(self, "terraform_dir", Path(self.terraform_dir).resolve())
        files = tuple(Path(f).resolve() for f in self.var_files)
        object.__setattr__(self, "var_files", files)

    @functools.cached_property
    def tfvars(self) -> Path:
        """The tfvars file holding image_slug: var_file, else the one of var_files setting it."""
        if self.var_file is not None:
            return self.var_file
        if self.var_files:
            return tfvars_holding(self.var_files, self.image_var)
        return self.terraform_dir / "terraform.tfvars"

    @property
    def all_tfvars(self) -> tuple[Path, ...]:
        """Every tfvars file handed to Terraform, in order (-var-file each)."""
        if not self.var_files:
            return (self.tfvars,)
        if self.var_file is not None and self.var_file.resolve() not in self.var_files:
            return (*self.var_files, self.var_file)
        return self.var_files

    @property
    def record_file(self) -> Path:
        """The rollout record: `.scaler/rollout.json` in the Terraform directory."""
        return self.terraform_dir / BOOKKEEPING_DIR / RECORD_NAME

    @property
    def history_file(self) -> Path:
        """The rollout history: `.scaler/history.json` in the Terraform directory."""
        return self.terraform_dir / BOOKKEEPING_DIR / HISTORY_NAME

    @property
    def bookkeeping(self) -> Path:
        """`.scaler/` in the Terraform directory, created with its .gitignore."""
        return bookkeeping_dir(self.terraform_dir)


def quiet(_: str) -> None:
    pass
