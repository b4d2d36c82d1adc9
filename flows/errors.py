"""Errors the command line prints as one line."""


class UserError(Exception):
    """A mistake in what the user asked for: a missing file, an unknown cluster, a bad query."""
