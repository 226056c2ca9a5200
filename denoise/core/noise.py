"""Synthetic noise for experiments: wrong labels of several kinds, or Gaussian noise on the inputs.

Label functions take ``labels`` (N,) int64 and return ``(noisy_labels (N,), is_noisy (N,) bool)``;
exactly ``round(rate * N)`` samples are corrupted (per class for the class-conditional kind).
"""

from __future__ import annotations

import numpy as np
import torch

NOISE_KINDS = ("symmetric", "asymmetric", "instance", "input-gaussian")


def _check(labels: np.ndarray, num_classes: int, rate: float) -> None:
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")


def symmetric_noise(labels: np.ndarray, num_classes: int, rate: float, seed: int):
    """Flip a random ``rate`` of the labels, each to another class drawn uniformly."""
    _check(labels, num_classes, rate)
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, len(flipped))) % num_classes
    return noisy, noisy != labels


def asymmetric_noise(labels: np.ndarray, num_classes: int, rate: float, seed: int):
    """Class-conditional pair flips: a ``rate`` of each class c is relabeled c + 1 (mod classes)."""
    _check(labels, num_classes, rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        flipped = rng.choice(rows, int(round(rate * len(rows))), replace=False)
        noisy[flipped] = (c + 1) % num_classes
    return noisy, noisy != labels


def instance_noise(labels: np.ndarray, inputs: np.ndarray, num_classes: int, rate: float, seed: int):
    """Instance-dependent flips: a random linear map of each input scores the classes; the ``rate``
    of samples whose best wrong class scores highest against their own are relabeled to that class,
    so which samples flip, and to what, depends on the input (as in part-dependent noise).

    inputs: (N, ...) features, flattened.
    """
    _check(labels, num_classes, rate)
    rng = np.random.default_rng(seed)
    flat = inputs.reshape(len(inputs), -1).astype(np.float64)
    flat = (flat - flat.mean(0)) / (flat.std(0) + 1e-8)
    scores = flat @ rng.standard_normal((flat.shape[1], num_classes)) / np.sqrt(flat.shape[1])
    scores += 0.5 * rng.standard_normal(scores.shape)
    own = scores[np.arange(len(labels)), labels]
    scores[np.arange(len(labels)), labels] = -np.inf
    wrong = scores.argmax(1)
    pull = scores.max(1) - own
    flipped = np.argsort(-pull, kind="stable")[: int(round(rate * len(labels)))]
    noisy = labels.copy()
    noisy[flipped] = wrong[flipped]
    return noisy, noisy != labels


def input_noise_mask(n: int, rate: float, seed: int) -> np.ndarray:
    """(n,) bool: which samples get Gaussian input noise (exactly round(rate * n) of them)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, int(round(rate * n)), replace=False)] = True
    return mask


def gaussian_input_noise(inputs: torch.Tensor, keys: np.ndarray, is_noisy: np.ndarray, sigma: float,
                         seed: int) -> torch.Tensor:
    """Add N(0, sigma^2) noise to those of the (B, ...) normalized ``inputs`` whose key (B,) ``is_noisy`` (N,)
    marks; a sample's noise is drawn from a generator seeded by (seed, key) alone, so it is the same in any
    batch, subset or order the sample is read in.

    keys: (B,) int64 each sample's position in its split; is_noisy: (N,) bool over the split.
    """
    corrupted = inputs.clone()
    generator = torch.Generator()
    for row, key in enumerate(np.asarray(keys).tolist()):
        if is_noisy[key]:
            generator.manual_seed(seed * 1_000_003 + key)
            corrupted[row] += (torch.randn(inputs.shape[1:], generator=generator) * sigma).to(inputs.dtype)
    return corrupted
