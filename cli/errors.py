"""Errors the command line reports as one line, and the exit code each one gives.

Exit codes: 0 success, 1 usage error, 2 bad input (a file or data set that can't be used),
3 runtime failure (the work itself failed: out of memory, non-finite training loss, ...).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_RUNTIME = 0, 1, 2, 3


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
