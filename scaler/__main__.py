"""`python -m scaler`: the same as the `scaler` command."""

from scaler.cli import main

main(prog_name="scaler")
