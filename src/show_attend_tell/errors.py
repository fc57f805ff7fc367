"""User-facing errors: the CLI prints their message alone, without a traceback."""


class SatError(Exception):
    """A problem with the user's input or environment, explained in the message."""
