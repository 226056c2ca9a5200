"""What denoise prints: summaries as a table or strict JSON on stdout, progress bars and log lines on stderr."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def strict(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, so ``json.dumps`` writes ``null``
    and strict parsers such as jq accept the output."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def to_json(value) -> str:
    """Strict JSON text of ``value`` (numpy scalars as numbers, non-finite floats as null)."""
    return json.dumps(strict(json.loads(json.dumps(value, default=float))), allow_nan=False)


def emit(result: dict, as_json: bool, title: str) -> None:
    """Print a summary: strict JSON on stdout, or a two-column rich table."""
    if as_json:
        print(to_json(result))
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, json.dumps(value, default=float) if isinstance(value, (dict, list)) else _fmt(value))
    stdout.print(table)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def stderr_log(quiet: bool = False, prefix: str = "") -> Callable[[str], None]:
    """A ``log(line)`` that prints to stderr (nothing when ``quiet``, e.g. under ``--json``)."""
    if quiet:
        return lambda _line: None
    return lambda line: print(f"{prefix}{line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (silent when stderr is not a terminal); yields ``advance(n=1)``."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=stderr, disable=not sys.stderr.isatty(), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
