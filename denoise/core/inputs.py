"""Input normalization: per-channel statistics (from the training split, or the ones a model was trained
with elsewhere), applied to every split alike."""

from __future__ import annotations

import math

import torch

from .errors import OptionError

IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # torchvision's, inputs in [0, 1]
IDENTITY_STATS = {"mean": [0.0], "std": [1.0]}  # inputs as read


def normalization_stats(inputs, batch_size: int = 1024) -> dict[str, list[float]]:
    """Mean and std of (N, *shape) inputs: per channel (dim 1) for images/spectrograms (N, C, ...),
    per feature for flat (N, D) inputs. Returns ``{"mean": [...], "std": [...]}``, std floored at 1e-6.

    inputs: a tensor, or a lazy view of files (``denoise.cli.data.source.Inputs``), whose moments are summed in
    float64 over batches of ``batch_size`` read in order (so never held whole)."""
    if torch.is_tensor(inputs):
        flat = inputs.float().transpose(0, 1).reshape(inputs.shape[1], -1) if inputs.dim() > 2 else inputs.float().T
        return {"mean": flat.mean(1).tolist(), "std": flat.std(1).clamp_min(1e-6).tolist()}
    from .batches import device_batches

    channels = inputs.shape[1]
    total, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    for _, batch in device_batches(inputs, batch_size, torch.device("cpu")):
        flat = batch.double().transpose(0, 1).reshape(channels, -1)
        total, squares, count = total + flat.sum(1), squares + flat.pow(2).sum(1), count + flat.shape[1]
    mean = total / count
    variance = (squares - count * mean.pow(2)).clamp_min(0) / max(count - 1, 1)
    return {"mean": mean.tolist(), "std": variance.sqrt().clamp_min(1e-6).tolist()}


def normalize(inputs: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    """(N, *shape) inputs standardized with ``normalization_stats`` output."""
    shape = (1, -1) + (1,) * (inputs.dim() - 2)
    mean = torch.tensor(stats["mean"], dtype=torch.float32).view(shape)
    std = torch.tensor(stats["std"], dtype=torch.float32).view(shape)
    return (inputs.float() - mean) / std


def check_stats(stats: dict[str, list[float]], channels: int) -> None:
    """Raise OptionError (option ``normalize``) unless ``stats`` holds one finite mean and one positive finite
    std per channel (``channels`` = dim 1 of the inputs), or a single one for every channel."""
    mean, std = stats["mean"], stats["std"]
    if len(mean) != len(std) or len(mean) not in (1, channels):
        raise OptionError("normalize", f"needs one mean and one std per input channel ({channels}), or one of each "
                                       f"for all, got {len(mean)} means and {len(std)} stds")
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise OptionError("normalize", "needs finite means and positive finite stds")
