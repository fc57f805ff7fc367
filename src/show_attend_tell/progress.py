"""Progress bars that are live in a terminal and sparse in a rule's log file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar to stderr; refreshed every 30 s when stderr is a log file rather than a terminal."""
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 30.0)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)
