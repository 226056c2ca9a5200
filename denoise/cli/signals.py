"""Ctrl-C (SIGINT) and SIGTERM end any command cleanly: ``denoise: interrupted``, exit code 128 + the signal.

The handler raises ``Interrupted``, a BaseException, so no ``except Exception`` on the way turns it into
another error, while every ``finally`` runs: temporary files are removed, locks released, resume states kept as
written. A second signal during that unwinding ends the process at once; outputs only appear by an atomic rename,
so nothing half-written is left either way. Cleanup after a finished write and taking or releasing a lock are
``deferred``: a signal that lands in them waits until they are done.

A signal whose ``Interrupted`` was swallowed (raised in a finalizer, where Python would print it as ignored, or in
Python code called by native code that dropped its error) still stops the output: ``atomic_write`` calls
``check`` just before its rename. The console
script ends with ``exit_now``, so a signal that lands as the process exits is still reported. Forked processes
(DataLoader workers) ignore SIGINT; this process stops them as it unwinds.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from typing import Callable, Iterator, NoReturn

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


def _leave(signum: int, _frame=None) -> NoReturn:
    """Report ``signum`` on stderr and end the process now. ``os.write``, not ``print``: the signal may have
    landed in a write to ``sys.stderr``, which ``print`` would refuse as a reentrant call."""
    try:
        os.write(sys.stderr.fileno(), f"{_report(signum)}\n".encode())
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(128 + signum)


def quiet_until_started() -> None:
    """Until ``interruptible`` takes over, and again after it (until ``exit_now``), SIGINT and SIGTERM end the
    process at once with the same one line and exit code: while Python imports torch and the rest (a second
    or more), before any file is touched, Ctrl-C would otherwise print a KeyboardInterrupt traceback."""
    for signum in HANDLED:
        signal.signal(signum, _leave)


def exit_now(main: Callable[[], object]) -> NoReturn:
    """Run ``main``, a console entry point, and end the process with its exit code as soon as it returns:
    stdout and stderr flushed, then ``os._exit``, while ``quiet_until_started``'s handlers still report a signal.

    Python's own exit first resets every signal handler to the default (``_PySignal_Fini``), then tears down
    its modules, torch's among them, for most of a second: a signal that landed there, after the command had
    renamed its output into place, killed the process without its line (status -2), or, landing just before
    the reset, was never handled at all (exit 0)."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    code = code or 0
    atexit._run_exitfuncs()  # what Python's exit would run first: multiprocessing stops its children, say
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what Python's own exit would report as 120
            code = code or 120
    os._exit(code)


def check() -> None:
    """Raise ``Interrupted`` if a signal came in the ``interruptible`` block that runs, even one whose own
    ``Interrupted`` was swallowed on its way: called just before an output is renamed into place. Within
    ``deferred`` it leaves the signal to the end of the block."""
    if _received and not _deferring[0]:
        raise Interrupted(_received[0])


def _ours(handler) -> bool:
    return handler is _leave or getattr(handler, "denoise_interrupts", False)


def _in_forked_child() -> None:
    """A forked process (a DataLoader worker) ignores SIGINT and ends at SIGTERM: not this process's handlers,
    which would raise ``Interrupted`` there and print its traceback. Ctrl-C reaches it with this process, which
    stops its workers as it unwinds; alone, it has nothing to clean up."""
    for signum, action in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_DFL)):
        with contextlib.suppress(ValueError, OSError):
            if _ours(signal.getsignal(signum)):
                signal.signal(signum, action)


os.register_at_fork(after_in_child=_in_forked_child)


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
            _leave(signum)
        _received.append(signum)
        if not _deferring[0]:
            raise Interrupted(signum)

    def unraisable(info) -> None:
        if not isinstance(info.exc_value, Interrupted):  # one from a finalizer is recorded: reported, not printed
            hook(info)

    handle.denoise_interrupts = True
    previous = {signum: signal.signal(signum, handle) for signum in HANDLED}
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
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
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()  # no later ``check`` outside the block may take this signal for its own


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
