"""Exit codes a script can tell apart, shared by `scaler rollout` and `scaler rebake`."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a command ended, for scripts and schedulers (`help_text()` says it in one line)."""

    DONE = 0  # done: every target runs the image (or there was nothing to do)
    ERROR = 1  # an error before anything changed (no state, lock held, no image, ...)
    USAGE = 2  # bad command line (click's own code for usage errors)
    ROLLED_OUT = 3  # rebake: baked and rolled out
    ROLLED_BACK = 4  # failed, rolled back, and the droplets put back are healthy
    NEEDS_PERSON = 5  # failed, paused, rollback unhealthy: look, then --resume or --abort
    DUE = 6  # rebake --check: a rebake is due
    REFUSED = 7  # the guard refused the plan: nothing was applied
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as the shell says): --resume or --abort

    @property
    def meaning(self) -> str:
        """The one-line meaning of the code."""
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.DONE: "done",
    ExitCode.ERROR: "error, nothing changed",
    ExitCode.USAGE: "bad command line",
    ExitCode.ROLLED_OUT: "rolled out",
    ExitCode.ROLLED_BACK: "failed and rolled back, healthy (the site runs as before)",
    ExitCode.NEEDS_PERSON: "needs a person: failed, paused, or the rollback is not healthy",
    ExitCode.DUE: "due (--check only)",
    ExitCode.REFUSED: "refused by the guard, nothing applied",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C), resumable",
}


def help_text(codes: tuple[ExitCode, ...]) -> str:
    """`0 done; 4 failed and rolled back, ...`: the codes a command uses, for its --help."""
    return "; ".join(f"{int(code)} {code.meaning}" for code in codes) + "."
