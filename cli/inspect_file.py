"""``denoise inspect``: what a checkpoint or stage file holds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .checkpoint import read_metadata, read_tensors
from .errors import InputError
from .files import check_input_path


def describe(path: Path) -> dict:
    """A JSON-able description: for a checkpoint its architecture, classes, masks and tensors; for an
    .npz its kind, provenance and each array's shape, dtype and summary statistics."""
    path = check_input_path(path)
    if zipfile.is_zipfile(path):
        return _describe_npz(path)
    record = read_metadata(path)
    tensors = read_tensors(path)
    masks = {spec: {"units": m["units"], "removed": len(m["removed"])} for spec, m in record.get("masks", {}).items()}
    return {"file": str(path), "kind": "checkpoint", "arch": record["arch"], "arch_kwargs": record.get("arch_kwargs", {}),
            "input_shape": record["input_shape"], "classes": record["classes"], "masks": masks,
            "parameters": int(sum(t.numel() for t in tensors.values())),
            "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                        for name, t in tensors.items()},
            "provenance": record.get("provenance", {})}


def _describe_npz(path: Path) -> dict:
    import json

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError:
        raise InputError(path, "contains object arrays, which are never loaded") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"unreadable .npz ({exc})") from None
    meta = {}
    if "meta" in arrays and arrays["meta"].dtype.kind == "U":
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except json.JSONDecodeError:
            meta = {}
    return {"file": str(path), "kind": meta.get("kind", "npz"),
            "arrays": {name: _summary(array) for name, array in arrays.items()}, "provenance": meta}


def _summary(array: np.ndarray) -> dict:
    entry = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.size and array.dtype.kind in "biuf":
        values = array.astype(np.float64)
        entry.update(min=float(values.min()), mean=float(values.mean()), max=float(values.max()))
    return entry
