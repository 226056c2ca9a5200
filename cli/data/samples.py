"""A data split made ready for a model: checked against its checkpoint, normalized, noise file applied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearn_core.inputs import normalize
from unlearn_core.noise import gaussian_input_noise

from ..errors import InputError
from ..files.checkpoint import ModelInfo
from .noise import read_noise
from .registry import Dataset, load_data


@dataclass
class Samples:
    """A data split ready for a model: normalized inputs (noise applied) and the labels the method uses."""

    inputs: torch.Tensor  # (N, *input_shape) float32, normalized, input noise applied
    labels: torch.Tensor  # (N,) int64: the given labels (noisy ones when a noise file is used)
    index: np.ndarray  # (N,) int64 sample index within the split
    is_noisy: np.ndarray | None  # (N,) bool truth from the noise file, if one was given

    def subset(self, rows: np.ndarray) -> "Samples":
        """The samples at ``rows`` (M,), indexed 0..M-1 afresh."""
        picked = torch.as_tensor(rows)
        return Samples(self.inputs[picked], self.labels[picked], np.arange(len(rows), dtype=np.int64),
                       None if self.is_noisy is None else self.is_noisy[rows])


def prepare(dataset: Dataset, info: ModelInfo, noise: str | Path | None = None) -> Samples:
    """Check ``dataset`` fits the model described by ``info``, normalize it and apply a noise file."""
    shape = list(dataset.inputs.shape[1:])
    if shape != list(info.input_shape):
        raise InputError(dataset.spec, f"samples have shape {shape} but the model expects {info.input_shape}")
    recorded = info.input_transform.get("data")
    if recorded is not None and recorded != dataset.transform:
        raise InputError(dataset.spec, f"features are {dataset.transform}, but the model was trained on {recorded}")
    if dataset.labels.numel() and int(dataset.labels.max()) >= len(info.classes):
        raise InputError(dataset.spec, f"labels go up to {int(dataset.labels.max())} but the model has "
                                       f"{len(info.classes)} classes")
    inputs = normalize(dataset.inputs, info.input_transform["normalization"])
    labels, is_noisy = dataset.labels, None
    if noise is not None:
        arrays, meta = read_noise(noise, dataset)
        labels, is_noisy = torch.as_tensor(arrays["labels"], dtype=torch.long), arrays["is_noisy"].astype(bool)
        if meta.get("options", {}).get("kind") == "input-gaussian":
            options = meta["options"]
            inputs = gaussian_input_noise(inputs, is_noisy, float(options["sigma"]), int(options["seed"]))
    return Samples(inputs, labels, np.arange(len(labels), dtype=np.int64), is_noisy)


def load_samples(spec: str, split: str, info: ModelInfo, noise: str | Path | None = None) -> Samples:
    """``load_data`` + ``prepare``."""
    return prepare(load_data(spec, split), info, noise)
