"""Checkpoints: safetensors weights plus the metadata that rebuilds the model.

The metadata entry ``denoise`` holds JSON: architecture name and arguments, input shape, class
names, input transform (data description and normalization statistics), unit masks (layer spec ->
removed unit indices) and the provenance of the file. Loading rebuilds the architecture, checks
every tensor's name, shape, dtype and finiteness, and re-applies the masks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from denoise.core.inputs import normalization_stats
from denoise.core.layers import LayerError, apply_unit_masks
from denoise.core.models import ModelError, create_model

from ..errors import InputError
from .paths import atomic_write, check_input_path

FORMAT = 1


@dataclass
class ModelInfo:
    """What rebuilds a model and prepares its inputs."""

    arch: str
    input_shape: list[int]
    classes: list[str]
    input_transform: dict
    arch_kwargs: dict = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # layer spec -> (U,) bool keep mask
    augment: str = "none"  # the augmentation the model was trained with (finetune reuses it by default)

    @classmethod
    def of_dataset(cls, dataset, arch: str, arch_kwargs: dict | None = None,
                   normalization: dict[str, list[float]] | None = None) -> "ModelInfo":
        """The info of a new ``arch`` model for a ``denoise.cli.data.Dataset``: its input shape, classes, the way its
        inputs were read, and ``normalization`` (default: the statistics of its train split's inputs)."""
        return cls(arch=arch, input_shape=list(dataset.inputs.shape[1:]), classes=dataset.classes,
                   input_transform={"data": dataset.transform,
                                    "normalization": normalization or normalization_stats(dataset.inputs)},
                   arch_kwargs=arch_kwargs or {})

    def build(self) -> nn.Module:
        """A fresh, untrained model of this architecture (masks not applied)."""
        return create_model(self.arch, self.input_shape, len(self.classes), **self.arch_kwargs)

    def to_json(self) -> dict:
        """The JSON record stored in the checkpoint's metadata (masks as lists of removed units)."""
        masks = {spec: {"units": int(keep.numel()), "removed": torch.nonzero(~keep).flatten().tolist()}
                 for spec, keep in self.masks.items()}
        return {"format": FORMAT, "arch": self.arch, "arch_kwargs": self.arch_kwargs,
                "input_shape": list(self.input_shape), "classes": list(self.classes),
                "input_transform": self.input_transform, "masks": masks, "augment": self.augment}

    @classmethod
    def from_json(cls, record: dict) -> "ModelInfo":
        """The inverse of ``to_json``."""
        masks = {}
        for spec, entry in record.get("masks", {}).items():
            keep = torch.ones(int(entry["units"]), dtype=torch.bool)
            keep[torch.as_tensor(entry["removed"], dtype=torch.long)] = False
            masks[spec] = keep
        return cls(arch=record["arch"], input_shape=list(record["input_shape"]), classes=list(record["classes"]),
                   input_transform=record["input_transform"], arch_kwargs=record.get("arch_kwargs", {}), masks=masks,
                   augment=record.get("augment", "none"))


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, masks applied) and what rebuilds it."""

    model: nn.Module
    info: ModelInfo


def is_user_arch(arch: str) -> bool:
    """True for ``module:function`` architectures, whose code is imported from the user's modules."""
    return ":" in arch and not arch.startswith("tv:")


def build_model(info: ModelInfo, source: str | Path) -> nn.Module:
    """``info.build()``, with an architecture that can't be built reported as an InputError naming ``source``."""
    try:
        return info.build()
    except ModelError as exc:
        raise InputError(source, str(exc)) from None


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo, meta: dict) -> None:
    """Write the model's weights and ``info`` + ``meta`` atomically as safetensors."""
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in model.state_dict().items()}
    metadata = {"denoise": json.dumps({**info.to_json(), "provenance": meta}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_metadata(path: str | Path) -> dict:
    """The ``denoise`` metadata record of a checkpoint, checked to be one; raises InputError otherwise."""
    path = check_input_path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for every malformed header
        raise InputError(path, f"not a readable safetensors checkpoint ({_first_line(exc)})") from None
    if "denoise" not in metadata:
        raise InputError(path, "safetensors file without denoise metadata; bring plain weights in with `denoise import`")
    try:
        record = json.loads(metadata["denoise"])
        _check_mask_sizes(path, record.get("masks", {}), read_shapes(path))
        ModelInfo.from_json(record)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(path, f"checkpoint metadata is malformed ({_first_line(exc)})") from None
    return record


def _check_mask_sizes(path: str | Path, masks: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a mask that claims more units than the file has weights (before one is allocated for it)."""
    weights = sum(math.prod(shape) for shape in shapes.values())
    for spec, entry in masks.items():
        if int(entry["units"]) > weights:
            raise InputError(path, f"mask of {spec!r} claims {int(entry['units']):,} units but the file holds "
                                   f"{weights:,} weights")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", allow_arch: str | None = None) -> Checkpoint:
    """Rebuild and load a checkpoint; the model is returned in eval mode on ``device`` with masks applied.

    allow_arch: a user ``module:function`` architecture is imported only if it equals this value
    (the ``--arch`` the user typed), never just because a file names it.
    """
    record = read_metadata(path)
    info = ModelInfo.from_json(record)
    if is_user_arch(info.arch) and allow_arch != info.arch:
        raise InputError(path, f"checkpoint names user code {info.arch!r}; pass --arch {info.arch} to import it")
    with torch.device("meta"):  # no memory: metadata claiming a huge input shape can't make us allocate its model
        skeleton = build_model(info, path)
    _check_layout(path, _shapes(skeleton.state_dict()), read_shapes(path))
    model = build_model(info, path)
    load_weights(path, model, read_tensors(path))
    try:
        apply_unit_masks(model, info.masks)
    except LayerError as exc:
        raise InputError(path, f"mask does not fit the model: {exc}") from None
    return Checkpoint(model.to(device).eval(), info)


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a safetensors file by name, from its header (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as exc:
        raise InputError(path, f"not a readable safetensors checkpoint ({_first_line(exc)})") from None


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file by name; InputError if the file is not readable as one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise InputError(path, f"not a readable safetensors checkpoint ({_first_line(exc)})") from None


def load_weights(path: str | Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``model`` after checking names, shapes, dtypes and finiteness against it."""
    expected = model.state_dict()
    _check_layout(path, _shapes(expected), _shapes(tensors))
    for name, want in expected.items():
        got = tensors[name]
        if got.dtype != want.dtype:
            raise InputError(path, f"tensor {name!r} has dtype {got.dtype}, expected {want.dtype}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise InputError(path, f"tensor {name!r} contains NaN or infinite values")
    model.load_state_dict(tensors, strict=True)


def _shapes(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


def _check_layout(path: str | Path, expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> None:
    """Raise InputError unless ``got`` has exactly the tensor names and shapes ``expected`` has."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing:
        raise InputError(path, f"missing tensors for the architecture: {_names(missing)}")
    if extra:
        raise InputError(path, f"tensors the architecture does not have: {_names(extra)}")
    for name, want in expected.items():
        if got[name] != want:
            raise InputError(path, f"tensor {name!r} has shape {got[name]}, expected {want}")


def _names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
