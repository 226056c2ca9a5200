"""Moving batches from host memory to the compute device, and the forward-pass precision.

On CPU batches are sliced in-process. On CUDA, worker processes slice (or generate) each batch into
pinned memory and the copy to the GPU is non-blocking, so data preparation overlaps with compute.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import UsageError
from .runtime import batch_slices

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    """Yield ``(slice, batch)`` in order over ``inputs`` with each batch on ``device``.

    inputs: anything of length N whose slices are ``(B, ...)`` float tensors (a tensor, or a lazy source
    such as ``cli.synthetic.SyntheticImages``). workers: loader processes on CUDA (default: up to 4).
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


def autocast(device: torch.device, precision: str):
    """Context for forward passes in ``precision`` (fp32: no autocast; bf16 or fp16: ``torch.autocast``)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
