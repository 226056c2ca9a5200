"""Wall-clock timing of one call (the demo's and the benchmarks' one copy)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """Run ``call()``; returns ``(its result, wall seconds it took)``."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started
