"""What every stage needs around the method: devices, progress bars, and data prepared for a model."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unlearn_core.inputs import normalize
from unlearn_core.noise import gaussian_input_noise

from .checkpoint import ModelInfo
from .data import Dataset, load_data
from .errors import InputError, UsageError
from .files import load_npz

stderr = Console(stderr=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator:
    """A rich progress bar on stderr (silent when stderr is not a terminal); yields ``advance(n)``."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=stderr, disable=not sys.stderr.isatty(), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering range(n) in steps of ``batch_size``."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@dataclass
class StageData:
    """A data split ready for a model: normalized inputs (noise applied) and the labels a stage uses."""

    inputs: torch.Tensor  # (N, *input_shape) float32, normalized, input noise applied
    labels: torch.Tensor  # (N,) int64: the given labels (noisy ones when a noise file is used)
    true_labels: torch.Tensor  # (N,) int64: the data set's own labels
    index: np.ndarray  # (N,) int64 sample index within the split
    is_noisy: np.ndarray | None  # (N,) bool truth from the noise file, if one was given
    dataset: Dataset


def read_noise(path: str | Path, dataset: Dataset) -> tuple[dict[str, np.ndarray], dict]:
    """Load a noise file and check it was made for ``dataset``'s train split."""
    arrays, meta = load_npz(path, "noise")
    if dataset.split != "train":
        raise UsageError("--noise applies to the train split only")
    if len(arrays["labels"]) != len(dataset.labels):
        raise InputError(path, f"covers {len(arrays['labels'])} samples but the train split has {len(dataset.labels)}")
    if not np.array_equal(arrays["true_labels"], dataset.labels.numpy()):
        raise InputError(path, "was made for another data set (its true labels differ)")
    if arrays["labels"].max() >= len(dataset.classes):
        raise InputError(path, f"labels out of range for {len(dataset.classes)} classes")
    return arrays, meta


def prepare(dataset: Dataset, info: ModelInfo, noise: str | Path | None = None, source: str = "--data") -> StageData:
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
    index = np.arange(len(labels), dtype=np.int64)
    return StageData(inputs, labels, dataset.labels, index, is_noisy, dataset)


def load_stage_data(spec: str, split: str, info: ModelInfo, noise: str | Path | None = None) -> StageData:
    """``load_data`` + ``prepare``."""
    return prepare(load_data(spec, split), info, noise)
