"""Noise files: synthetic noise injected into a train split (``denoise inject-noise``), and reading one back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoise.core import noise as noise_lib

from ..errors import InputError, UsageError
from ..files.provenance import provenance
from ..files.stage_files import load_npz, save_npz
from .registry import Dataset, load_data


def inject_noise(data: str, kind: str, rate: float, seed: int, out: Path, sigma: float = 4.5) -> dict:
    """Corrupt the train split of ``data``: flip labels, or mark samples for Gaussian input noise (std
    ``sigma`` on normalized inputs). Writes the noise file ``out``; returns its summary."""
    if kind not in noise_lib.NOISE_KINDS:
        raise UsageError(f"--kind must be one of {', '.join(noise_lib.NOISE_KINDS)}, not {kind!r}")
    if not 0 <= rate <= 1:
        raise UsageError(f"--rate must be in [0, 1], got {rate}")
    dataset = load_data(data, "train")
    labels, classes = dataset.labels.numpy(), len(dataset.classes)
    if kind == "symmetric":
        noisy, is_noisy = noise_lib.symmetric_noise(labels, classes, rate, seed)
    elif kind == "asymmetric":
        noisy, is_noisy = noise_lib.asymmetric_noise(labels, classes, rate, seed)
    elif kind == "instance":
        noisy, is_noisy = noise_lib.instance_noise(labels, dataset.inputs[:].numpy(), classes, rate, seed)
    else:
        noisy, is_noisy = labels.copy(), noise_lib.input_noise_mask(len(labels), rate, seed)
    options = {"data": data, "kind": kind, "rate": rate, "seed": seed, "sigma": sigma}
    arrays = {"labels": noisy, "true_labels": labels, "is_noisy": is_noisy, "index": np.arange(len(labels))}
    save_npz(out, arrays, provenance("noise", options, {}))
    return {"out": str(out), "kind": kind, "rate": rate, "samples": len(labels), "noisy": int(is_noisy.sum())}


def read_noise(path: str | Path, dataset: Dataset) -> tuple[dict[str, np.ndarray], dict]:
    """Load a noise file and check it was made for ``dataset``'s train split; returns ``(arrays, meta)``."""
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
