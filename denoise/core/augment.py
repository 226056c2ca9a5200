"""Training-time augmentation of image batches (``Recipe.augment``), drawn from a seed per batch.

``flip-crop`` is the CIFAR recipe (a random crop of the image padded by 4 pixels, then a horizontal flip
half the time); ``imagenet`` the ImageNet one (a random resized crop, scale 0.08-1, then the flip). Both
come from ``torchvision.transforms.v2`` and act on each ``(C, H, W)`` sample of a batch alone. A batch's
draws are a function of its seed only, so a run augments alike with any number of loader processes and
a resumed run as the uninterrupted one did. Scoring (attribute, sensitivity, evaluate) never augments.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import OptionError

AUGMENTATIONS = ("none", "flip-crop", "imagenet")


def check_augment(name: str) -> None:
    """Raise OptionError unless ``name`` is one of ``AUGMENTATIONS``."""
    if name not in AUGMENTATIONS:
        raise OptionError("augment", f"must be one of {', '.join(AUGMENTATIONS)}, not {name!r}")


def augmenter(name: str, sample_shape: tuple[int, ...]) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    """``augment(batch, seed) -> batch`` for (B, C, H, W) float batches of ``sample_shape`` (C, H, W), or None
    for ``"none"``. Raises OptionError for an augmentation of inputs that are not images."""
    check_augment(name)
    if name == "none":
        return None
    if len(sample_shape) != 3:
        raise OptionError("augment", f"{name} needs image inputs (C, H, W), not samples of shape {list(sample_shape)}")
    from torchvision.transforms import v2

    size = tuple(sample_shape[1:])
    crop = v2.RandomCrop(size, padding=4) if name == "flip-crop" else v2.RandomResizedCrop(size, antialias=True)
    transform = v2.Compose([crop, v2.RandomHorizontalFlip()])

    def augment(batch: torch.Tensor, seed: int) -> torch.Tensor:
        # the global generator is torchvision's source of randomness; forked so that dropout draws stay apart
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([transform(sample) for sample in batch])

    return augment


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The augmentation seed of batch ``batch`` of epoch ``epoch`` of a run seeded ``seed``."""
    return (seed * 100_003 + epoch) * 1_000_003 + batch
