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
import sys
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command was stopped by a signal; ``exit_code`` is 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(_report(signum))
        self.exit_code = 128 + signum


def _report(signum: int) -> str:
    return f"denoise: interrupted ({signal.Signals(signum).name})"


def quiet_until_started() -> None:
    """Until ``interruptible`` takes over, SIGINT and SIGTERM end the process at once with the same one line
    and exit code: while Python imports torch and the rest (a second or more), before any file is touched,
    Ctrl-C would otherwise print a KeyboardInterrupt traceback."""
    def leave(signum: int, _frame) -> None:
        print(_report(signum), file=sys.stderr, flush=True)
        os._exit(128 + signum)

    for signum in HANDLED:
        signal.signal(signum, leave)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted``; the previous handlers are restored after.

    Whatever leaves the block after a signal came is reported as that ``Interrupted``: a signal that lands in
    Python code called from native code (safetensors reading a tensor, say) may reach us converted into that
    library's own error, or be swallowed there.
    """
    received: list[int] = []

    def handle(signum: int, _frame) -> None:
        if received:  # a second signal does not wait for the cleanup of the first
            os._exit(128 + signum)
        received.append(signum)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handle) for signum in HANDLED}
    try:
        yield
    except BaseException:
        if received:
            raise Interrupted(received[0]) from None
        raise
    else:
        if received:
            raise Interrupted(received[0])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
