"""Ctrl-C (SIGINT) and SIGTERM end any command cleanly: ``denoise: interrupted``, exit code 128 + the signal.

The handler raises ``Interrupted``, a BaseException, so no ``except Exception`` on the way turns it into
another error, while every ``finally`` runs: temporary files are removed (``atomic_write``, ``NpzStream``),
locks released, and the last resume state of ``train``/``finetune`` stays as it was written. A second
signal while that unwinding runs ends the process at once; nothing half-written is left either way, since
outputs only appear by an atomic rename.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command was stopped by a signal; ``exit_code`` is 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def _raise(signum: int, _frame) -> None:
    for other in HANDLED:  # from here on, a second signal does not wait for the cleanup
        signal.signal(other, lambda again, _frame: os._exit(128 + again))
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted``; the previous handlers are restored after."""
    previous = {signum: signal.signal(signum, _raise) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
