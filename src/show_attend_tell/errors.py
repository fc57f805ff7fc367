"""User-facing errors: the CLI prints their message alone, without a traceback."""


class SatError(Exception):
    """A problem with the user's input or environment, explained in the message."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message, else its type's name: some errors (torch's ``EOFError()``
    on an empty file) have no message, and a one-line report must still say something."""
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
