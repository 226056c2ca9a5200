"""``denoise inspect``: what a checkpoint or stage file holds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from denoise.core.models import ModelError

from .files.checkpoint import ModelInfo, is_user_arch, read_metadata, read_tensors
from .files.paths import check_input_path
from .files.stage_files import read_meta, read_npz_arrays


def describe(path: Path) -> dict:
    """A JSON-able description: for a checkpoint its architecture, classes, layers (usable as ``--layer``),
    masks and tensors; for an .npz its kind, provenance and each array's shape, dtype and summary statistics."""
    path = check_input_path(path)
    if zipfile.is_zipfile(path):
        arrays = read_npz_arrays(path)
        meta = read_meta(path, arrays.pop("meta", None))
        return {"file": str(path), "kind": meta.get("kind", "npz"),
                "arrays": {name: _summary(array) for name, array in arrays.items()}, "provenance": meta}
    record = read_metadata(path)
    tensors = read_tensors(path)
    masks = {spec: {"units": m["units"], "removed": len(m["removed"])} for spec, m in record.get("masks", {}).items()}
    return {"file": str(path), "kind": "checkpoint", "arch": record["arch"], "arch_kwargs": record.get("arch_kwargs", {}),
            "input_shape": record["input_shape"], "input_transform": record["input_transform"],
            "classes": record["classes"], "masks": masks,
            "layers": _layers(ModelInfo.from_json(record)),
            "parameters": int(sum(t.numel() for t in tensors.values())),
            "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                        for name, t in tensors.items()},
            "provenance": record.get("provenance", {})}


def _layers(info: ModelInfo) -> dict[str, str] | str:
    """Leaf module name -> type and width, for built-in and torchvision architectures (user code is not imported)."""
    if is_user_arch(info.arch):
        return f"not listed: {info.arch} is user code, which inspect never imports"
    try:
        with torch.device("meta"):  # layer names only: no weights allocated for what the metadata claims
            model = info.build()
    except ModelError as exc:
        return f"not listed: {exc}"
    layers = {}
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            width = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
            layers[name] = type(module).__name__ + (f"({width})" if width else "")
    return layers


def _summary(array: np.ndarray) -> dict:
    entry = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.size and array.dtype.kind in "biuf":
        values = array.astype(np.float64)
        entry.update(min=float(values.min()), mean=float(values.mean()), max=float(values.max()))
    return entry
