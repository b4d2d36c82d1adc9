"""Errors the command line prints as one line."""


class UserError(Exception):
    """A mistake in what the user asked for: a missing file, an unknown cluster, a bad query."""


class Stopped(KeyboardInterrupt):
    """The command was asked to stop by a signal (SIGTERM); Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signal: int) -> None:
        super().__init__(signal)
        self.signal = signal
