"""Models trained from scratch in memory for the benchmarks (noisy, retrained, oracle, cross-validation)."""

from __future__ import annotations

import torch

from denoise.core.training import Recipe, fit


def train_model(info, inputs: torch.Tensor, labels: torch.Tensor, recipe: Recipe, device: torch.device):
    """A fresh ``info.build()`` model (seeded with ``recipe.seed``) trained as ``denoise train`` does on
    (N, ...) inputs and (N,) labels."""
    torch.manual_seed(recipe.seed)
    model = info.build().to(device)
    fit(model, inputs, labels, recipe, device=device)
    return model
