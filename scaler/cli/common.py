"""Small helpers for click options, light enough for every command to import."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])
T = TypeVar("T")


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator that applies `options` in the order given (the first is listed first)."""

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def deprecated_name(old: str, new: str) -> Callable[[click.Context, click.Parameter, T], T]:
    """A callback for an old option name: it still works, with a one-line note on stderr."""

    def note(ctx: click.Context, param: click.Parameter, value: T) -> T:
        if value:
            click.echo(f"Warning: {old} is deprecated here; use {new}", err=True)
        return value

    return note
