"""Synthetic inputs for benchmarks: generated on demand, never held whole in memory."""

from __future__ import annotations

import numpy as np
import torch


class SyntheticImages:
    """N deterministic standard-normal samples of ``shape``, made when indexed.

    Sample i is drawn from its own generator seeded by ``(seed, i)``, so any slice, index tensor or
    bool mask gives the same values whatever batches it is read in. Indexing returns a float32 tensor.
    """

    def __init__(self, n: int, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0):
        self.n, self.shape, self.seed = n, tuple(shape), seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> torch.Tensor:
        rows = range(*index.indices(self.n)) if isinstance(index, slice) else np.arange(self.n)[np.asarray(index)].tolist()
        out = torch.empty(len(rows), *self.shape)
        generator = torch.Generator()
        for k, row in enumerate(rows):
            generator.manual_seed(self.seed * 1_000_003 + row)
            out[k] = torch.randn(self.shape, generator=generator)
        return out


def synthetic_labels(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    """(n,) int64 labels drawn uniformly from ``range(classes)``."""
    return torch.as_tensor(np.random.default_rng(seed).integers(0, classes, n), dtype=torch.long)
