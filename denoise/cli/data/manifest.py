"""``csv:FILE``: a manifest of image files and their labels, the form users keep labels in (and ``denoise fix`` writes).

Columns (a header row names them; others are ignored, in any order): ``path``, relative to the CSV's folder (or
absolute), ``label``, a class name or an integer, and optionally ``split``, ``train`` or ``test`` (without it both
splits are the whole file, as for ``npz:``). The classes are the labels that occur in the file, in both splits:
sorted by value when every label is an integer (named by that value, ``07`` as ``7``), else sorted as names. A
sample's ``origin.rows`` is its data row (0-based, the header excluded), ``origin.paths`` its path as written.

Images are decoded as ``imagefolder:`` decodes them (``images.image_inputs``, ``?size=N``, default 32) and the
transform record is imagefolder's: a manifest listing a folder's files gives the data that folder gives (same
classes in the same order, same pixels), so a model trained on the one is scored and fine-tuned on the other.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import over_limit
from .images import SIZE_OPTION, image_inputs
from .registry import SPLITS, Origin, data_spec

REQUIRED = ("path", "label")


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_manifest(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a manifest: its header and every data row as a dict (values stripped of surrounding
    blanks); InputError naming the file when it is not a CSV with the ``path`` and ``label`` columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = [{key: (value or "").strip() for key, value in row.items() if key is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot be read as CSV ({exc})") from None
    if not columns:
        raise InputError(path, "is empty (a manifest needs a header row: path,label[,split])")
    for name in REQUIRED:
        if name not in columns:
            hint = (" (an issues CSV: `denoise fix` writes a manifest of its corrections)"
                    if name == "label" and "given_label" in columns else "")
            raise InputError(path, f"has no column {name!r} (columns: {', '.join(columns)}){hint}")
    return columns, rows


def label_classes(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """``(label (N,) int64, class names)`` of a manifest's label cells: integers keep their value order, else
    names are sorted."""
    values = [_integer(label) for label in labels]
    if labels and all(value is not None for value in values):
        unique, index = np.unique(np.asarray(values, dtype=np.int64), return_inverse=True)
        return index.astype(np.int64), [str(value) for value in unique.tolist()]
    unique, index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return index.astype(np.int64), [str(name) for name in unique.tolist()]


def _where(row: int) -> str:
    return f"row {row} (line {row + 2})"


@data_spec("csv:FILE", arch="cnn", options=SIZE_OPTION)
def _csv(path: Path, split, size: int = 32):
    """A CSV manifest ``path,label[,split]`` of image files (module docstring), resized to ``size`` x ``size`` RGB."""
    if not path.is_file():
        raise InputError(path, "is not a file (csv: needs a CSV manifest with columns path,label[,split])")
    columns, rows = read_manifest(path)
    if not rows:
        raise InputError(path, "has a header but no data rows")
    for k, row in enumerate(rows):
        if not row.get("path"):
            raise InputError(path, f"{_where(k)}: empty path")
        if not row.get("label"):
            raise InputError(path, f"{_where(k)}: empty label")
        if "split" in columns and row.get("split") not in SPLITS:
            raise InputError(path, f"{_where(k)}: split must be train or test, not {row.get('split')!r}")
    labels, classes = label_classes([row["label"] for row in rows])
    problem = over_limit("DENOISE_MAX_CLASSES", len(classes))
    if problem:
        raise InputError(path, f"has {len(classes):,} classes, {problem}")
    chosen = np.asarray([k for k, row in enumerate(rows) if "split" not in columns or row["split"] == split],
                        dtype=np.int64)
    folder = path.parent
    files = [rows[k]["path"] for k in chosen]
    for k, file in zip(chosen, files):
        if not (folder / file).is_file():
            raise InputError(path, f"{_where(int(k))}: {file} does not exist (paths are relative to the CSV's folder)")
    origin = Origin(chosen, files)
    return (image_inputs(folder, files, size), labels[chosen], classes, {"source": "imagefolder", "size": size},
            origin)
