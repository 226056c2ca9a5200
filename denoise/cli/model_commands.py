"""The commands around the five stages: train a model, evaluate one, bring plain weights in as a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from denoise.core.augment import augmenter
from denoise.core.batches import BATCH_SIZE
from denoise.core.metrics import classification_metrics
from denoise.core.training import Recipe, logits_of

from .data import load_data
from .data.noise import read_noise
from .data.samples import load_samples, normalization, prepare
from .device import resolve_device
from .errors import InputError, UsageError, usage_errors
from .files.checkpoint import (ModelInfo, build_model, is_user_arch, load_checkpoint, load_weights, read_tensors,
                               save_checkpoint)
from .files.provenance import is_current, provenance, skipped
from .fit import finish, fit


def train(data: str, arch: str, out: Path, recipe: Recipe, *, noise: Path | None = None,
          arch_kwargs: dict | None = None, normalize: str = "data", save_every: int = 0, resume: bool = False,
          device: str = "auto", reuse: bool = False) -> dict:
    """Train a model from scratch with ``recipe`` on the train split (noisy labels if ``noise``); writes a checkpoint.

    normalize: the ``--normalize`` choice (``denoise.cli.data.samples.normalization``).
    reuse: return without work if ``out`` was already trained with the same options and noise file.
    """
    with usage_errors():
        recipe.check()
    options = {"data": data, "arch": arch, "arch_kwargs": arch_kwargs or {}, "epochs": recipe.epochs,
               "seed": recipe.seed, "lr": recipe.lr, "weight_decay": recipe.weight_decay,
               "batch_size": recipe.batch_size, "normalize": normalize, "augment": recipe.augment}
    if reuse and is_current(out, "checkpoint", options, {"noise": noise}):
        return skipped(out)
    dev = resolve_device(device)
    dataset = load_data(data, "train")
    info = ModelInfo.of_dataset(dataset, arch, arch_kwargs,
                                normalization(normalize, dataset.inputs.shape[1], dataset.inputs))
    info.augment = recipe.augment
    with usage_errors():
        augmenter(recipe.augment, tuple(info.input_shape))
    torch.manual_seed(recipe.seed)
    model = build_model(info, arch).to(dev)
    samples = prepare(dataset, info, noise)
    if len(torch.unique(samples.labels)) < 2:
        raise InputError(data, "the train split has a single class; a classifier needs at least two")
    meta = provenance("checkpoint", options, {"noise": noise})
    started = time.perf_counter()
    losses = fit(model, samples.inputs, samples.labels, recipe, device=dev, options=options, out=out, resume=resume,
                 save_every=save_every, save_model=lambda path: save_checkpoint(path, model, info, meta),
                 description="train")
    seconds = time.perf_counter() - started
    finish(out, dev, lambda: save_checkpoint(out, model, info, meta))
    fitted = classification_metrics(logits_of(model, samples.inputs, recipe.batch_size, dev), samples.labels)
    return {"out": str(out), "epochs": recipe.epochs, "final_loss": losses[-1],
            "train_accuracy": fitted["accuracy"], "seconds": seconds}


def evaluate(model: Path, data: str, split: str = "test", *, noise: Path | None = None, batch_size: int = BATCH_SIZE,
             device: str = "auto", arch: str | None = None) -> dict:
    """Accuracy, macro precision/recall/F1 and top-3 of a checkpoint on a split (labels as given)."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    samples = load_samples(data, split, checkpoint.info, noise)
    logits = logits_of(checkpoint.model, samples.inputs, batch_size, dev)
    return {"model": str(model), "data": data, "split": split, "samples": len(samples.labels),
            **classification_metrics(logits, samples.labels)}


ACCURACY_TOLERANCE = 0.01  # one point: how far `import --check-accuracy` lets evaluate differ before it warns


def import_weights(arch: str, weights: Path, out: Path, *, data: str | None = None, input_shape: list[int] | None = None,
                   num_classes: int | None = None, arch_kwargs: dict | None = None, noise: Path | None = None,
                   normalize: str | None = None, check_accuracy: float | None = None, augment: str = "none",
                   warn: Callable[[str], None] = lambda message: None) -> dict:
    """Bring a plain state dict (safetensors, or .pt/.pth read with ``torch.load(weights_only=True)``) in as a checkpoint.

    noise: the noise file the weights were trained with (checked against ``data``, recorded in the provenance).
    normalize: the ``--normalize`` choice (default ``data`` with ``data``, else ``none``); the input size is the
    data spec's (``?size=N``). check_accuracy: the test accuracy the owner's own evaluation gave; ``evaluate``
    on the written checkpoint is compared with it and ``warn`` is called when they differ by more than a point.
    augment: the augmentation the weights were trained with (``finetune`` reuses it by default).
    """
    if noise is not None and data is None:
        raise UsageError("--noise needs --data")
    if check_accuracy is not None and data is None:
        raise UsageError("--check-accuracy needs --data (its test split is evaluated)")
    if check_accuracy is not None and not 0 <= check_accuracy <= 1:
        raise UsageError(f"--check-accuracy must be a fraction in [0, 1] (0.19 for 19 %), got {check_accuracy}")
    if data is not None:
        dataset = load_data(data, "train")
        stats = normalization(normalize or "data", dataset.inputs.shape[1], dataset.inputs)
        info = ModelInfo.of_dataset(dataset, arch, arch_kwargs, stats)
        if noise is not None:
            read_noise(noise, dataset)
    elif input_shape and num_classes:
        info = ModelInfo(arch=arch, input_shape=input_shape, classes=[str(c) for c in range(num_classes)],
                         input_transform={"data": None, "normalization": normalization(normalize or "none",
                                                                                       input_shape[0])},
                         arch_kwargs=arch_kwargs or {})
    else:
        raise UsageError("give --data, or both --input-shape and --num-classes")
    weights = Path(weights)
    if not weights.is_file():
        raise InputError(weights, "no such file")
    if weights.suffix in (".pt", ".pth"):
        try:
            tensors = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(weights, f"not loadable with torch.load(weights_only=True): {str(exc).splitlines()[0]}") from None
        if not isinstance(tensors, dict) or not all(torch.is_tensor(v) for v in tensors.values()):
            raise InputError(weights, "is not a plain state dict of tensors")
    else:
        tensors = read_tensors(weights)
    with usage_errors():
        augmenter(augment, tuple(info.input_shape))
    info.augment = augment
    model = build_model(info, arch)
    load_weights(weights, model, tensors)
    save_checkpoint(out, model, info, provenance("checkpoint", {"arch": arch, "imported": True, "normalize": normalize,
                                                                "augment": augment},
                                                 {"weights": weights, "noise": noise}))
    result = {"out": str(out), "arch": arch, "tensors": len(tensors), "user_code": is_user_arch(arch)}
    if check_accuracy is not None:
        evaluated = evaluate(out, data, "test", arch=arch)["accuracy"]
        # rounded: 0.19 - 0.18 is a point, not 0.010000000000000009
        matches = round(abs(evaluated - check_accuracy), 9) <= ACCURACY_TOLERANCE
        result["check"] = {"split": "test", "stated": check_accuracy, "evaluated": evaluated, "matches": matches}
        if not matches:
            warn(f"warning: `denoise evaluate` gives this checkpoint a test accuracy of {evaluated:.3f}, your own "
                 f"evaluation {check_accuracy:.3f}: its inputs are likely prepared unlike those it was trained on "
                 "(check --normalize and the data spec's ?size=)")
    return result
