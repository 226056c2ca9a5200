"""Ctrl-C (SIGINT) and SIGTERM end any command cleanly: ``denoise: interrupted``, exit code 128 + the signal.

The handler raises ``Interrupted``, a BaseException, so no ``except Exception`` on the way turns it into
another error, while every ``finally`` runs: temporary files are removed (``atomic_write``, ``NpzStream``),
locks released, and the last resume state of ``train``/``finetune`` stays as it was written. A second
signal while that unwinding runs ends the process at once; nothing half-written is left either way, since
outputs only appear by an atomic rename. Cleanup that runs after a finished write (``NpzStream`` removing its
parts), and taking and releasing a lock (``cli.files.lock.hold``), are ``deferred``: a signal that lands in them
waits until they are done, so they can't leave their files behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal that interrupts the command ``interruptible`` runs
_deferring = [0]  # depth of ``deferred`` blocks


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
    _received.clear()

    def handle(signum: int, _frame) -> None:
        if _received:  # a second signal does not wait for the cleanup of the first
            os._exit(128 + signum)
        _received.append(signum)
        if not _deferring[0]:
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handle) for signum in HANDLED}
    try:
        yield
    except BaseException:
        if _received:
            raise Interrupted(_received[0]) from None
        raise
    else:
        if _received:
            raise Interrupted(_received[0])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a SIGINT or SIGTERM that ``interruptible`` handles waits: its ``Interrupted`` is raised
    when the block ends, so cleanup in it runs whole. (Masking the signals would not do: another thread, say
    one of torch's, can take the signal, and Python still runs the handler in the main thread.)"""
    came = len(_received)
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not _deferring[0] and len(_received) > came:
        raise Interrupted(_received[0])
