"""A data split made ready for a model: checked against its checkpoint, normalized, noise file applied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from denoise.core.batches import take
from denoise.core.inputs import IDENTITY_STATS, IMAGENET_STATS, check_stats, normalization_stats

from ..errors import InputError, UsageError, usage_errors
from ..files.checkpoint import ModelInfo
from .noise import read_noise
from .registry import Dataset, load_data
from .source import Inputs, as_inputs


NORMALIZE_HELP = ("How the model expects its inputs normalized: data (mean/std of the train split), imagenet, none, "
                  "or M1,M2,M3/S1,S2,S3 (per-channel mean/std of inputs scaled to [0, 1]).")


def normalization(choice: str, channels: int, train_inputs: torch.Tensor | None = None) -> dict[str, list[float]]:
    """The statistics ``--normalize choice`` names, for inputs of ``channels`` channels (dim 1); ``data`` takes
    them from ``train_inputs`` (N, channels, ...)."""
    if choice == "data":
        if train_inputs is None:
            raise UsageError("--normalize data needs --data (the statistics of its train split)")
        return normalization_stats(train_inputs)
    named = {"imagenet": IMAGENET_STATS, "none": IDENTITY_STATS}
    if choice in named:
        stats = named[choice]
    else:
        mean, _, std = choice.partition("/")
        try:
            stats = {"mean": [float(v) for v in mean.split(",")], "std": [float(v) for v in std.split(",")]}
        except ValueError:
            raise UsageError(f"--normalize must be data, imagenet, none or M1,M2,M3/S1,S2,S3, not {choice!r}") from None
    with usage_errors():
        check_stats(stats, channels)
    return stats


@dataclass
class Samples:
    """A data split ready for a model: normalized inputs (noise applied) and the labels the method uses."""

    inputs: Inputs | torch.Tensor  # (N, *input_shape) float32 batches, normalized, input noise applied
    labels: torch.Tensor  # (N,) int64: the given labels (noisy ones when a noise file is used)
    index: np.ndarray  # (N,) int64 sample index within the split
    is_noisy: np.ndarray | None  # (N,) bool truth from the noise file, if one was given

    def subset(self, rows: np.ndarray) -> "Samples":
        """The samples at ``rows`` (M,), indexed 0..M-1 afresh."""
        return Samples(take(self.inputs, rows), self.labels[torch.as_tensor(rows)], np.arange(len(rows), dtype=np.int64),
                       None if self.is_noisy is None else self.is_noisy[rows])


def prepare(dataset: Dataset, info: ModelInfo, noise: str | Path | None = None) -> Samples:
    """Check ``dataset`` fits the model described by ``info`` (shape, how it was read, class names), normalize it
    and apply a noise file."""
    shape = list(dataset.inputs.shape[1:])
    recorded = info.input_transform.get("data")
    if shape != list(info.input_shape):
        size = (recorded or {}).get("size")
        hint = f" (its data spec read images with ?size={size})" if size else ""
        raise InputError(dataset.spec, f"samples have shape {shape} but the model expects {info.input_shape}{hint}")
    if recorded is not None:  # a model imported with --input-shape/--num-classes records no data, only numbers
        check_alike(dataset, info.classes, recorded, "the model")
    if dataset.labels.numel() and int(dataset.labels.max()) >= len(info.classes):
        raise InputError(dataset.spec, f"labels go up to {int(dataset.labels.max())} but the model has "
                                       f"{len(info.classes)} classes")
    inputs = as_inputs(dataset.inputs).normalized(info.input_transform["normalization"])
    labels, is_noisy = dataset.labels, None
    if noise is not None:
        arrays, meta = read_noise(noise, dataset)
        labels, is_noisy = torch.as_tensor(arrays["labels"], dtype=torch.long), arrays["is_noisy"].astype(bool)
        if meta.get("options", {}).get("kind") == "input-gaussian":
            options = meta["options"]
            inputs = inputs.with_input_noise(is_noisy, float(options["sigma"]), int(options["seed"]))
    return Samples(inputs, labels, np.arange(len(labels), dtype=np.int64), is_noisy)


def check_alike(dataset: Dataset, classes: list[str], transform: dict, other: str) -> None:
    """Raise InputError naming ``dataset``'s spec unless it was read as ``transform`` records and names the
    ``classes`` of ``other`` (what it must fit, in words: "the model", "--data"), in their order."""
    if transform != dataset.transform:
        raise InputError(dataset.spec, f"features are {dataset.transform}, but those of {other} are {transform}")
    if list(dataset.classes) != list(classes):
        # a label is a class's position: under other class names (a checkpoint made before `npz:` labels were
        # renumbered to the values that occur, say) each sample would be scored against another class
        raise InputError(dataset.spec, f"{_class_difference(dataset.classes, classes, other)}; labels would not "
                                       f"mean the classes of {other}")


def _class_difference(ours: list[str], theirs: list[str], other: str) -> str:
    """Where the data's class names first differ from ``other``'s, for a one-line error."""
    first = next((k for k, pair in enumerate(zip(ours, theirs)) if pair[0] != pair[1]), min(len(ours), len(theirs)))
    here, there = (repr(names[first]) if first < len(names) else "none" for names in (ours, theirs))
    return f"has {len(ours)} classes, {other} {len(theirs)}: label {first} is {here} here but {there} in {other}"


def load_samples(spec: str, split: str, info: ModelInfo, noise: str | Path | None = None) -> Samples:
    """``load_data`` + ``prepare``."""
    return prepare(load_data(spec, split), info, noise)


def check_validation(spec: str, data: str, info: ModelInfo) -> None:
    """Raise InputError naming ``spec`` unless its train split, validation samples for the model ``info``
    describes, has the class names of ``data``'s train split, was read alike, and fits the model (``prepare``)."""
    validation, reference = load_data(spec, "train"), load_data(data, "train")
    check_alike(validation, reference.classes, reference.transform, "--data")
    prepare(validation, info)
