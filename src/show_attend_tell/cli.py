"""``sat``: the command line the workflow's rules call, one sub-command per stage.

Each sub-command is a thin wrapper over a package function, so every stage can also be run (and
debugged) by hand outside Snakemake. A user-facing problem ends with one ``error:`` line, exit code 1.
The sub-commands' arguments are defined in ``cli_arguments``, what they run in ``cli_commands``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .cli_arguments import add_commands
from .errors import SatError, first_line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sat", description=__doc__.splitlines()[0])
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args) or 0
    except (SatError, OSError) as e:
        # The OS errors: an input named on the command line that is missing or cannot be opened, or a place
        # that cannot take an output (disk full, read-only): the user's to fix, so no traceback.
        message = e if isinstance(e, SatError) else os_error_message(e)
        rank = os.environ.get("RANK", "0")  # under torchrun every process reports; say which
        print(f"error{'' if rank == '0' else f' (process {rank})'}: {message}", file=sys.stderr)
        return 1


def os_error_message(e: OSError) -> str:
    """``FILE: reason``, or the reason alone when the error names no file (``e.filename`` is None)."""
    reason = e.strerror or first_line(e)
    return reason if e.filename is None else f"{e.filename}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
