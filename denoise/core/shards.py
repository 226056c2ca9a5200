"""Work split across processes by sample index: which samples a shard owns, how one training batch is shared
by the ranks, and whether a set of shards covers every sample exactly once.

A shard ``i`` of ``n`` owns the sample indices ``i, i + n, i + 2n, ...`` (strided, so shard sizes differ by at
most one and no sample is padded in or dropped, unlike ``DistributedSampler``). Pure functions: the processes,
files and collectives are the command line's (``denoise.cli.distributed``, ``denoise.cli.files.shards``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch



def shard_rows(samples: int, number: int, count: int) -> np.ndarray:
    """(ceil((samples - number) / count),) int64: the positions 0..samples-1 that shard ``number`` of ``count``
    owns; the ``count`` shards together hold every position exactly once."""
    if not 0 <= number < count:
        raise ValueError(f"shard {number} of {count} does not exist")
    return np.arange(number, samples, count, dtype=np.int64)


def batch_share(positions: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, float]:
    """Rank ``rank``'s part of one training batch of (B,) sample positions, and the factor its mean loss is
    scaled by: ``world * b / B`` for its b samples, so that averaging the ranks' gradients (as
    DistributedDataParallel does) gives exactly the gradient of the batch's mean loss. A rank whose part is
    empty (B < world) takes the first sample with factor 0: it still joins the gradient all-reduce."""
    mine = positions[rank::world]
    if len(mine) == 0:
        return positions[:1], 0.0
    return mine, world * len(mine) / len(positions)


class CoverageError(ValueError):
    """Parts that do not hold every sample index exactly once: ``part`` (a position in the list of parts)
    holds an index another part (``other``) or none should; ``problem`` says what."""

    def __init__(self, part: int, problem: str, other: int | None = None):
        super().__init__(problem)
        self.part, self.other, self.problem = part, other, problem


def owners(parts: Sequence[np.ndarray], samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each sample index 0..samples-1 is held: ``(part, row)``, two (samples,) int64 arrays (the
    position in ``parts`` of the (M_k,) index array holding it, and the row within that array).

    Raises CoverageError for an index out of range, an index two parts hold (``other``: the earlier one) or
    held twice by one part. Indices held by no part get part -1 (see ``missing``).
    """
    part = np.full(samples, -1, dtype=np.int64)
    row = np.full(samples, -1, dtype=np.int64)
    for k, index in enumerate(parts):
        index = np.asarray(index, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= samples):
            raise CoverageError(k, f"holds sample indices outside 0..{samples - 1}")
        if len(np.unique(index)) != len(index):
            raise CoverageError(k, "holds a sample index twice")
        taken = part[index]
        if (taken >= 0).any():
            other = int(taken[taken >= 0][0])
            raise CoverageError(k, f"holds {int((taken >= 0).sum())} sample indices that another part holds too",
                                other)
        part[index] = k
        row[index] = np.arange(len(index))
    return part, row


def missing(part: np.ndarray) -> np.ndarray:
    """(M,) int64 sample indices no part holds, from the ``part`` array of ``owners``."""
    return np.flatnonzero(part < 0)
