"""Every `scaler` command explains itself: help text, an example, help on each option.

The commands are walked from the click root, so commands added later are covered too. The rule
for an example: the `--help` output has an `Example:` or `Examples:` heading followed by an
indented line that runs this very command (`scaler tfvars get ...` for `scaler tfvars get`;
a group's example may run one of its subcommands).
"""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from scaler.cli import main


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{_id(path)} lists {name!r} but cannot load it"
            found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(main)


def _id(path: tuple[str, ...]) -> str:
    return " ".join(("scaler", *path))


def test_the_walk_finds_the_known_commands() -> None:
    # A walk that found nothing would make every test below pass vacuously.
    names = {_id(path) for path, _ in COMMANDS}
    assert {"scaler", "scaler inventory", "scaler tfvars get", "scaler tfvars set"} <= names


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="scaler")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[_id(p) for p, _ in COMMANDS])
def test_help_text_and_example(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"`{_id(path)}` has no help text"
    text = _help(path)
    assert text.startswith(f"Usage: {_id(path)} "), text
    example = re.search(
        r"^ *Examples?:\n(?: +\S.*\n)*? +" + re.escape(_id(path)) + r"(?: |$)", text, re.M
    )
    assert example, f"`{_id(path)} --help` shows no example running `{_id(path)}`:\n{text}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[_id(p) for p, _ in COMMANDS])
def test_every_option_has_help(path: tuple[str, ...], command: click.Command) -> None:
    bare = [
        "/".join(p.opts)
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert bare == [], f"`{_id(path)}` options without help: {bare}"


def test_short_help_flag() -> None:
    assert CliRunner().invoke(main, ["-h"], prog_name="scaler").stdout == _help(())


@pytest.mark.parametrize(
    ("args", "usage", "error"),
    [
        (["bogus"], "Usage: scaler [OPTIONS] COMMAND [ARGS]...", "Error: No such command 'bogus'."),
        (
            ["--bogus"],
            "Usage: scaler [OPTIONS] COMMAND [ARGS]...",
            "Error: No such option '--bogus'.",
        ),
        (
            ["inventory", "--nope"],
            "Usage: scaler inventory [OPTIONS]",
            "Error: No such option '--nope'.",
        ),
        (
            ["tfvars", "get"],
            "Usage: scaler tfvars get [OPTIONS] NAME",
            "Error: Missing argument 'NAME'.",
        ),
    ],
)
def test_usage_errors_exit_2(args: list[str], usage: str, error: str) -> None:
    # click's convention: a usage error is exit 2 with the usage line; a ScalerError is exit 1.
    result = CliRunner().invoke(main, args, prog_name="scaler")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == usage
    assert lines[1].startswith("Try 'scaler")
    assert lines[-1] == error
