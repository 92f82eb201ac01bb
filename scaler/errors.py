"""Expected failures. Each message is one line: what went wrong, and what to do about it."""

from __future__ import annotations


class ScalerError(Exception):
    """An expected failure. str(err) is one line: what went wrong, and what to do."""


class StateNotFound(ScalerError):
    def __init__(self, tried: list[str]) -> None:
        super().__init__(
            f"no Terraform state found (tried {', '.join(tried)}); "
            "pass --state PATH or set TF_STATE"
        )


class StateError(ScalerError):
    """A state file exists but cannot be used (unreadable, not JSON, not a state, bad version)."""


class HostNotFound(ScalerError):
    def __init__(self, name: str, have: list[str]) -> None:
        shown = ", ".join(have[:10]) + (", ..." if len(have) > 10 else "")
        super().__init__(f"no host {name!r} in the inventory (have: {shown or 'none'})")
