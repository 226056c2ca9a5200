"""Data sets held as arrays: scikit-learn's bundled ``digits`` and ``npz:FILE``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files.stage_files import read_npz_arrays
from ..limits import over_limit
from .registry import Origin, data_spec


@data_spec("digits", arch="mlp")
def _digits(_path, split):
    """scikit-learn's bundled 8x8 digits, fixed stratified 80/20 split (1,437 / 360): (N, 1, 8, 8) float32
    pixels x/16 in [0, 1]; a sample's row is its position in ``sklearn.datasets.load_digits()``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    order = np.arange(len(digits.target))
    train, test = train_test_split(order, test_size=0.2, stratify=digits.target, random_state=0)
    chosen = np.sort(train if split == "train" else test)
    inputs = (digits.data[chosen] / 16.0).reshape(-1, 1, 8, 8)
    return (inputs, digits.target[chosen], [str(c) for c in range(10)], {"source": "digits", "scale": "x/16"},
            Origin(chosen.astype(np.int64)))

@data_spec("npz:FILE", arch="mlp")
def _npz(path: Path, split):
    """Arrays ``x`` (N, ...) and ``y`` (N,) ints, optional ``split`` (N,) of "train"/"test" (without it both
    splits are the whole file) and ``classes`` (K,) strings. Without ``classes`` the classes are the label
    values that occur in the file (in both splits), named by their value."""
    if not path.is_file():
        raise InputError(path, "is not a file (npz: needs an .npz file)")
    arrays = read_npz_arrays(path)
    for name in ("x", "y"):
        if name not in arrays:
            raise InputError(path, f"has no array {name!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise InputError(path, f"x must be a numeric array (N, ...), got {x.dtype} with shape {x.shape}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise InputError(path, f"y must be a 1-d integer array, got {y.dtype} with shape {y.shape}")
    if len(x) != len(y):
        raise InputError(path, f"x has {len(x)} samples but y has {len(y)}")
    if len(y) and y.min() < 0:
        raise InputError(path, "y has negative labels")
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
        if len(y) and y.max() >= len(classes):
            raise InputError(path, f"y has label {int(y.max())} but only {len(classes)} classes are named")
    else:  # never range(max + 1): one absurd label value would make that list take the machine's memory
        values, y = np.unique(y, return_inverse=True)
        classes = [str(value) for value in values.tolist()]
    problem = over_limit("DENOISE_MAX_CLASSES", len(classes))
    if problem:
        raise InputError(path, f"has {len(classes):,} classes, {problem}")
    rows = np.arange(len(y), dtype=np.int64)
    if "split" in arrays:
        split_names = arrays["split"].astype(str)
        if split_names.shape != y.shape:
            raise InputError(path, f"split has shape {split_names.shape} but y has {y.shape}")
        chosen = split_names == split
        x, y, rows = x[chosen], y[chosen], rows[chosen]
    return x.astype(np.float32), y.astype(np.int64), classes, {"source": "npz"}, Origin(rows)
