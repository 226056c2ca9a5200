"""Batches of a tensor on the compute device, and the precision of forward passes.

Every batch goes through one DataLoader path (``loaded``): in-memory data is sliced in this process on
CPU; a lazy view of files is read by loader processes ahead of use; on CUDA batches land in pinned memory
and the copy to the GPU is non-blocking, so data preparation overlaps with compute.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import OptionError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BATCH_SIZE = 256  # samples per forward pass where nothing trains (scoring, moments, evaluation, reading)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering range(n) in steps of ``batch_size`` (the last one may be shorter)."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class _Failed:
    """An exception raised while making a batch, carried back whole from a loader process (the loader's own
    re-raise rebuilds it from its text, losing its type's fields)."""

    def __init__(self, error: Exception):
        self.error = error


class _Blocks(Dataset):
    """Item i is ``make(i)``: batch i, read (and transformed) by whichever loader process serves it."""

    def __init__(self, count: int, make: Callable[[int], object]):
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        try:
            return self.make(i)
        except Exception as error:
            return _Failed(error)


def loader_workers(inputs, device: torch.device) -> int:
    """Loader processes for ``inputs``: its own ``workers`` attribute when it has one that is set (a lazy
    view of files, see ``denoise.cli.data.source``), else none on CPU (slicing memory costs nothing) and up to 4 on
    CUDA (slicing into pinned memory overlaps with the GPU's work)."""
    workers = getattr(inputs, "workers", None)
    if workers is not None:
        return workers
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def loaded(count: int, make: Callable[[int], object], device: torch.device, workers: int) -> Iterator:
    """``make(0)``, ..., ``make(count - 1)`` in that order, made by ``workers`` loader processes (0: this one)
    ahead of use, into pinned memory on CUDA. The order, and so every result, is the same for any ``workers``."""
    # a generator of its own: the loader's seed draw must not move the global one (dropout, augmentation)
    loader = DataLoader(_Blocks(count, make), batch_size=None, num_workers=workers, generator=torch.Generator(),
                        pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)
    for item in loader:
        if isinstance(item, _Failed):
            raise item.error
        yield item


def device_batches(inputs, batch_size: int, device: torch.device, workers: int | None = None
                   ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(slice, batch)`` in order over ``inputs`` with each ``(B, ...)`` batch on ``device``.

    inputs: anything of length N whose slices are ``(B, ...)`` float tensors (a tensor, or a lazy view of
    files or of synthetic images). workers: loader processes (default: ``loader_workers``).
    """
    slices = batch_slices(len(inputs), batch_size)
    workers = loader_workers(inputs, device) if workers is None else workers
    for s, batch in zip(slices, loaded(len(slices), lambda i: inputs[slices[i]], device, workers)):
        yield s, batch.to(device, non_blocking=True)


def take(inputs, rows):
    """The samples of ``inputs`` at ``rows`` (an index array or tensor, or a bool mask) as the same kind of
    thing: a tensor's rows, or a lazy view's sub-view (its ``take``), so nothing is read yet."""
    return inputs[torch.as_tensor(rows)] if torch.is_tensor(inputs) else inputs.take(rows)


def check_precision(precision: str) -> None:
    """Raise OptionError unless ``precision`` is a key of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def autocast(device: torch.device, precision: str):
    """Context for forward passes in ``precision`` (fp32: no autocast; bf16 or fp16: ``torch.autocast``)."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
