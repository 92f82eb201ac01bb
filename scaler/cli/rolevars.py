"""The role's inputs on every command that bakes: `-e NAME=VALUE`, `-e @FILE`, vault files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from scaler.config import BakeConfig, apply, parse_extra_vars

F = TypeVar("F", bound=Callable[..., Any])

PASSWORD_HELP = (
    "The database password: set WELP_DB_PASSWORD in the environment (or use -e @FILE or a "
    "vault); -e welp_db_password=... works but shows in `ps`."
)


def role_var_options(func: F) -> F:
    """Add -e/--extra-var and --vault-password-file (repeatable) to a command."""
    func = click.option(
        "--vault-password-file",
        "vault_password_files",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="Passed to ansible-playbook as it is (repeatable).",
    )(func)
    return click.option(
        "-e",
        "--extra-var",
        "extra_vars",
        multiple=True,
        metavar="NAME=VALUE|@FILE",
        help="Ansible extra variable, or @FILE of them (repeatable). " + PASSWORD_HELP,
    )(func)


def with_role_vars(
    config: BakeConfig, extra_vars: tuple[str, ...], vault_password_files: tuple[Path, ...]
) -> BakeConfig:
    """The config with the command line's role inputs added."""
    pairs, files = parse_extra_vars(extra_vars)
    config = apply(config, {"extra_vars": pairs or None})
    from dataclasses import replace

    return replace(
        config,
        extra_var_files=(*config.extra_var_files, *files),
        vault_password_files=(
            *config.vault_password_files,
            *(Path(p).resolve() for p in vault_password_files),
        ),
    )
