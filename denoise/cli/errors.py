"""Errors the command line reports as one line, and the exit code each one gives.

Exit codes: 0 success, 1 usage error, 2 bad input (a file or data set that can't be used),
3 runtime failure (the work itself failed: out of memory, non-finite training loss, ...), 4 busy (another
denoise process holds the work directory or output file; see denoise.cli.files.lock), 130 / 143 interrupted by
SIGINT / SIGTERM (see denoise.cli.signals).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from denoise.core.errors import OptionError

EXIT_USAGE, EXIT_INPUT, EXIT_RUNTIME, EXIT_BUSY = 1, 2, 3, 4


class DenoiseError(Exception):
    """A failure reported to the user as one line; ``exit_code`` says what kind."""

    exit_code = EXIT_RUNTIME


class UsageError(DenoiseError):
    """Options that contradict each other or are out of range."""

    exit_code = EXIT_USAGE


class InputError(DenoiseError):
    """An input file or data set that is missing, malformed, or does not fit the others."""

    exit_code = EXIT_INPUT

    def __init__(self, source: str | Path, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source, self.problem = str(source), problem

    def __reduce__(self):  # pickled whole from a loader process (denoise.core.batches)
        return type(self), (self.source, self.problem)


class BusyError(InputError):
    """A work directory or output file locked by another live denoise process."""

    exit_code = EXIT_BUSY


@contextlib.contextmanager
def usage_errors(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Within the block, the method's OptionError becomes a UsageError naming the flag: the core checks each
    option once, and the command line reports it as its one-line error. ``flags`` maps the core's option
    names to flags where they differ from ``--name-with-dashes`` (``{"prune_ratio": "--ratio"}``)."""
    try:
        yield
    except OptionError as exc:
        flag = {**FLAGS, **(flags or {})}.get(exc.option, "--" + exc.option.replace("_", "-"))
        raise UsageError(f"{flag} {exc.problem}") from None


FLAGS = {"prune_ratio": "--ratio", "prune_by": "--by"}  # RunOptions fields whose flag is not their name
