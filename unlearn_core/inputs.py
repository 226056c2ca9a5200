"""Input normalization: statistics from the training split, applied to every split alike."""

from __future__ import annotations

import torch


def normalization_stats(inputs: torch.Tensor) -> dict[str, list[float]]:
    """Mean and std of (N, *shape) inputs: per channel (dim 1) for images/spectrograms (N, C, ...),
    per feature for flat (N, D) inputs. Returns ``{"mean": [...], "std": [...]}``, std floored at 1e-6."""
    flat = inputs.float().transpose(0, 1).reshape(inputs.shape[1], -1) if inputs.dim() > 2 else inputs.float().T
    return {"mean": flat.mean(1).tolist(), "std": flat.std(1).clamp_min(1e-6).tolist()}


def normalize(inputs: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """(N, *shape) inputs standardized with ``normalization_stats`` output."""
    shape = (1, -1) + (1,) * (inputs.dim() - 2)
    mean = torch.tensor(stats["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(stats["std"], dtype=torch.float32).view(shape)
    return (inputs.float() - mean) / std
