"""Stopping between batches when asked (SIGTERM from a cluster about to pre-empt the job, or Ctrl-C)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class StopRequested:
    """Turns SIGTERM and SIGINT into a flag checked between batches, so a checkpoint is never torn."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequested]:
        def handler(signum: int, frame: object) -> None:
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def describe(self) -> str:
        """The signal's name, for the message that says where the checkpoint is."""
        return signal.Signals(self.signal).name if self.signal is not None else "a signal to another process"
