"""Batches of a tensor on the compute device, and the precision of forward passes.

On CPU batches are sliced in-process. On CUDA, worker processes slice (or generate) each batch into
pinned memory and the copy to the GPU is non-blocking, so data preparation overlaps with compute.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import OptionError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering range(n) in steps of ``batch_size`` (the last one may be shorter)."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class _Blocks(Dataset):
    """Batch i of ``inputs`` as one item (the loader does no batching of its own)."""

    def __init__(self, inputs, slices: list[slice]):
        self.inputs, self.slices = inputs, slices

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.inputs[self.slices[i]]


def device_batches(inputs, batch_size: int, device: torch.device, workers: int | None = None
                   ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(slice, batch)`` in order over ``inputs`` with each ``(B, ...)`` batch on ``device``.

    inputs: anything of length N whose slices are ``(B, ...)`` float tensors (a tensor, or a lazy source
    of synthetic images). workers: loader processes on CUDA (default: up to 4).
    """
    slices = batch_slices(len(inputs), batch_size)
    if device.type != "cuda":
        for s in slices:
            yield s, inputs[s].to(device)
        return
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = DataLoader(_Blocks(inputs, slices), batch_size=None, num_workers=workers, pin_memory=True)
    for s, batch in zip(slices, loader):
        yield s, batch.to(device, non_blocking=True)


def check_precision(precision: str) -> None:
    """Raise OptionError unless ``precision`` is a key of ``PRECISIONS``."""
    if precision not in PRECISIONS:
        raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def autocast(device: torch.device, precision: str):
    """Context for forward passes in ``precision`` (fp32: no autocast; bf16 or fp16: ``torch.autocast``)."""
    check_precision(precision)
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
