"""Errors the command line prints as one line."""

import signal
import sys


class UserError(Exception):
    """A mistake in what the user asked for: a missing file, an unknown cluster, a bad query."""


def stop_signal(exc: BaseException) -> int | None:
    """The signal a run was stopped by, when `exc` says it was stopped: Ctrl-C
    (KeyboardInterrupt), SIGTERM outside a flow run (`Stopped`) or inside one
    (Prefect's TerminationSignal, looked up only if Prefect is imported)."""
    prefect_exceptions = sys.modules.get("prefect.exceptions")
    if prefect_exceptions and isinstance(exc, prefect_exceptions.TerminationSignal):
        return exc.signal
    if isinstance(exc, KeyboardInterrupt):
        return getattr(exc, "signal", signal.SIGINT)
    return None


class Stopped(KeyboardInterrupt):
    """The command was asked to stop by a signal (SIGTERM); Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signal: int) -> None:
        super().__init__(signal)
        self.signal = signal
