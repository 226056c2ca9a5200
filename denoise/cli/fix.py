"""``denoise fix``: an issues CSV (``denoise issues``, edited by hand or not) applied to a copy of the user's labels.

Each listed row's ``action`` cell, where filled, says what is done (``relabel`` to its ``suggested_label``,
``drop``, ``keep``): a person's word wins over every threshold. A row without one is relabeled when it is a label
issue and passes ``--max-score`` (``label_score`` at most S) and ``--min-suggested-prob`` (``suggested_prob`` at
least P); else it is kept. A relabel to the label the sample already has counts as kept.

Written atomically, never over the input: ``npz:`` the same arrays with ``y`` corrected and dropped rows removed
(``classes`` added where a label value is left with no sample); ``csv:`` the same manifest, paths relative to
``--out``'s folder; ``imagefolder:`` a ``csv:`` manifest of every file, nothing moved. The CSV must match the
data (each ``row`` a train-split row listed once, its ``given_label`` and ``path`` that row's, every relabel a
class name); else one line naming the CSV's line, exit 2. Details: docs/report.md, *denoise fix*.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .files.lock import writes
from .data import spec_help
from .data.manifest import read_manifest
from .data.registry import Dataset, labels_fingerprint, read_index
from .errors import InputError, UsageError
from .files.paths import atomic_write, check_input_path
from .files.stage_files import read_npz_arrays
from .output import emit
from .report.suspects import data_record_path

ACTIONS = ("relabel", "drop", "keep")
KINDS = ("npz", "csv", "imagefolder")
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _float(csv_path: Path, line: int, name: str, text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(csv_path, f"line {line}: {name} {text!r} is not a number") from None


def read_actions(csv_path: Path, data: Dataset, *, max_score: float | None = None,
                 min_suggested_prob: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """What an issues CSV does to the train split ``data`` (module docstring): ``(label (N,) int64: each sample's
    label afterwards, drop (N,) bool, listed: the rows the CSV lists)``; InputError naming the CSV's line where
    it does not match the data."""
    try:
        with open(check_input_path(csv_path), newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            records = [{key: (value or "").strip() for key, value in row.items() if key is not None}
                       for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(csv_path, f"cannot be read as CSV ({exc})") from None
    for name in ("row", "given_label", "suggested_label"):
        if name not in columns:
            raise InputError(csv_path, f"has no column {name!r}: not an issues CSV of `denoise issues` "
                                       f"(columns: {', '.join(columns) or 'none'})")
    for name, given in (("label_score", max_score), ("suggested_prob", min_suggested_prob)):
        if given is not None and name not in columns:
            raise InputError(csv_path, f"has no column {name!r} for the threshold on it")
    count = len(data.labels)
    if len(records) > count:
        raise InputError(csv_path, f"lists {len(records)} rows but the train split of {data.spec} has {count}")
    position = {int(row): k for k, row in enumerate(np.asarray(data.origin.rows).tolist())}
    names = {name: k for k, name in enumerate(data.classes)}
    labels, drop = data.labels.numpy().astype(np.int64).copy(), np.zeros(count, dtype=bool)
    seen: dict[int, int] = {}
    for line, record in enumerate(records, start=2):
        cell = record.get("row", "")
        if not cell:
            raise InputError(csv_path, f"line {line}: no row (write the CSV with `denoise issues --data SPEC`)")
        try:
            row = int(cell)
        except ValueError:
            raise InputError(csv_path, f"line {line}: row {cell!r} is not a whole number") from None
        if row not in position:
            raise InputError(csv_path, f"line {line}: row {row} is not a row of the train split of {data.spec}")
        if row in seen:
            raise InputError(csv_path, f"line {line}: row {row} is listed twice (lines {seen[row]} and {line})")
        seen[row] = line
        at = position[row]
        has = data.classes[int(data.labels[at])]
        if record["given_label"] != has:
            raise InputError(csv_path, f"line {line}: row {row} has given_label {record['given_label']!r} but "
                                       f"{data.spec} labels it {has!r} (an issues CSV of other data, or of a "
                                       f"--noise file's labels)")
        path = record.get("path", "")
        if path and data.origin.paths is not None and path != data.origin.paths[at]:
            raise InputError(csv_path, f"line {line}: row {row} is {path} here but {data.origin.paths[at]} in "
                                       f"{data.spec}")
        action = record.get("action", "").lower()
        if action and action not in ACTIONS:
            raise InputError(csv_path, f"line {line}: action must be one of {', '.join(ACTIONS)} (or empty), "
                                       f"not {action!r}")
        if not action:
            flag = record.get("is_label_issue", "true").lower()
            if flag not in TRUE | FALSE:
                raise InputError(csv_path, f"line {line}: is_label_issue must be True or False, not {flag!r}")
            chosen = flag in TRUE
            if chosen and max_score is not None:
                chosen = _float(csv_path, line, "label_score", record.get("label_score")) <= max_score
            if chosen and min_suggested_prob is not None:
                chosen = _float(csv_path, line, "suggested_prob", record.get("suggested_prob")) >= min_suggested_prob
            action = "relabel" if chosen else "keep"
        if action == "drop":
            drop[at] = True
        elif action == "relabel":
            target = record["suggested_label"]
            if target not in names:
                shown = ", ".join(data.classes[:20]) + (", ..." if len(data.classes) > 20 else "")
                raise InputError(csv_path, f"line {line}: suggested_label {target!r} is not a class of "
                                           f"{data.spec} (classes: {shown})")
            labels[at] = names[target]
    return labels, drop, len(records)


def _spec_parts(spec: str) -> tuple[str, str, str]:
    head, _, query = spec.partition("?")
    kind, _, location = head.partition(":")
    return kind, location, query


def _relative(file: Path, folder: Path) -> str:
    """``file`` as a manifest in ``folder`` names it: relative to it (POSIX separators)."""
    return Path(os.path.relpath(file.resolve(), folder.resolve())).as_posix()


def _manifest_text(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_npz(source: Path, out: Path, data: Dataset, labels: np.ndarray, drop: np.ndarray) -> list[str]:
    """The corrected copy of an ``npz:`` file (module docstring); returns the notes to tell the user."""
    arrays = read_npz_arrays(source)
    y = arrays["y"]
    rows = np.asarray(data.origin.rows, dtype=np.int64)
    notes = []
    if "classes" in arrays:
        new_y = y.copy()
        new_y[rows] = labels.astype(y.dtype)
    else:  # the reader's class k is the k-th smallest value of y
        values = np.unique(y)
        new_y = y.copy()
        new_y[rows] = values[labels].astype(y.dtype)
    keep = np.ones(len(y), dtype=bool)
    keep[rows[drop]] = False
    out_arrays = {}
    for name, array in arrays.items():
        per_row = name != "classes" and array.ndim >= 1 and len(array) == len(y)
        out_arrays[name] = (new_y if name == "y" else array)[keep] if per_row else array
    if "classes" not in arrays and not np.array_equal(np.unique(out_arrays["y"]), np.unique(y)):
        values = np.unique(y)
        out_arrays["classes"] = np.asarray([str(v) for v in values.tolist()])
        out_arrays["y"] = np.searchsorted(values, out_arrays["y"]).astype(y.dtype)
        notes.append("a label value no longer occurs: added `classes` (the file's class names) and y now indexes it")
    with zipfile.ZipFile(source) as archive:
        compressed = any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist())

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compressed else np.savez)(handle, **out_arrays)

    atomic_write(out, write)
    return notes


def _lost(classes: list[str], kept_labels: list[str]) -> list[str]:
    gone = sorted(set(classes) - set(kept_labels), key=classes.index)
    return [f"class {name!r} has no sample left: the data read back has {len(classes) - len(gone)} classes, "
            f"not {len(classes)}" for name in gone[:1]]


def _write_csv(source: Path, out: Path, data: Dataset, labels: np.ndarray, drop: np.ndarray) -> list[str]:
    """The corrected copy of a ``csv:`` manifest (module docstring)."""
    columns, rows = read_manifest(source)
    before = data.labels.numpy()
    for at, row in enumerate(np.asarray(data.origin.rows).tolist()):
        if labels[at] != before[at]:  # a label left as it was stays as written ("07" is not rewritten "7")
            rows[row]["label"] = data.classes[int(labels[at])]
    dropped = set(np.asarray(data.origin.rows)[drop].tolist())
    rows = [row for k, row in enumerate(rows) if k not in dropped]
    if source.parent.resolve() != out.parent.resolve():
        for row in rows:
            if not Path(row["path"]).is_absolute():
                row["path"] = _relative(source.parent / row["path"], out.parent)
    text = _manifest_text(columns, rows)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return _lost(data.classes, [row["label"] for row in rows])


def _write_folder_manifest(folder: Path, out: Path, data: Dataset, test: Dataset, labels: np.ndarray,
                           drop: np.ndarray) -> list[str]:
    """A ``csv:`` manifest of an ``imagefolder:`` with the corrections (module docstring)."""
    split = list(test.origin.paths) != list(data.origin.paths)  # DIR/train and DIR/test: two listings
    entries = [{"path": _relative(folder / path, out.parent), "label": data.classes[int(label)], "split": "train"}
               for path, label, dropped in zip(data.origin.paths, labels, drop) if not dropped]
    if split:
        entries += [{"path": _relative(folder / path, out.parent), "label": test.classes[int(label)], "split": "test"}
                    for path, label in zip(test.origin.paths, test.labels.tolist())]
    text = _manifest_text(["path", "label", "split"] if split else ["path", "label"], entries)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    notes = _lost(data.classes, [entry["label"] for entry in entries])
    numbers = [int(name) for name in data.classes if name.lstrip("-").isdigit()]
    if len(numbers) == len(data.classes) and sorted(numbers) != numbers:
        notes.append("class folders named by numbers: csv: orders them by value, imagefolder: by name, so a model "
                     "trained on the folder does not fit the manifest (train a new one)")
    return notes


def _check_data_record(issues_csv: Path, train: Dataset) -> list[str]:
    """InputError unless the data record ``issues`` wrote beside the CSV (``data_record_path``) names these very
    labels (``labels_fingerprint``); a note when there is none (the CSV is then checked row by row only)."""
    record_file = data_record_path(issues_csv)
    if not record_file.is_file():
        return [f"no {record_file.name} beside the CSV: its rows are checked one by one, not the whole data"]
    try:
        record = json.loads(record_file.read_text())
        recorded = record["labels_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(record_file, "is not the data record of `denoise issues`") from None
    if recorded != labels_fingerprint(train):
        raise InputError(issues_csv, f"was made from other data than {train.spec} (its labels, rows or files "
                                     f"differ from those {record_file.name} records; run `denoise issues` again)")
    return []


def fix(issues_csv: Path, data: str, out: Path, *, max_score: float | None = None,
        min_suggested_prob: float | None = None) -> dict:
    """Write the corrected copy of ``data``'s labels that ``issues_csv`` asks for to ``out`` (module docstring);
    returns the summary: ``out``, ``data`` (the spec that reads it), ``listed``, ``relabeled``, ``dropped``,
    ``kept`` (listed rows left as they were), ``samples`` (of the train split written) and ``notes``."""
    for name, value in (("--max-score", max_score), ("--min-suggested-prob", min_suggested_prob)):
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"{name} must be in [0, 1], got {value}")
    kind, location, query = _spec_parts(data)
    if kind not in KINDS:
        raise UsageError(f"fix writes corrected copies of {', '.join(k + ':' for k in KINDS)} data, not {kind!r} "
                         f"(write your data as an npz: file or a csv: manifest)")
    source, out = Path(location), Path(out)
    for other, what in ((source, "the input data"), (Path(issues_csv), "the issues CSV")):
        if other.exists() and out.resolve() == other.resolve():
            raise UsageError(f"--out must be another file than {what} ({other}): fix never edits it in place")
    train = read_index(data, "train")
    notes = _check_data_record(Path(issues_csv), train)
    labels, drop, listed = read_actions(Path(issues_csv), train, max_score=max_score,
                                        min_suggested_prob=min_suggested_prob)
    changed = (labels != train.labels.numpy()) & ~drop
    if kind == "npz":
        notes += _write_npz(source, out, train, labels, drop)
    elif kind == "csv":
        notes += _write_csv(source, out, train, labels, drop)
    else:
        notes += _write_folder_manifest(source, out, train, read_index(data, "test"), labels, drop)
    written = "npz" if kind == "npz" else "csv"
    return {"out": str(out), "data": f"{written}:{out}" + (f"?{query}" if query else ""), "listed": listed,
            "relabeled": int(changed.sum()), "dropped": int(drop.sum()),
            "kept": listed - int(changed.sum()) - int(drop.sum()), "samples": int((~drop).sum()), "notes": notes}


@writes(out=False)
def fix_command(issues_file: Path = typer.Option(..., "--issues", help="The issues CSV of `denoise issues --data` "
                                                 "(edited by hand or not: an action column of relabel/drop/keep)."),
                data: str = typer.Option(..., "--data", help="The data the issues are of (npz:, csv: or "
                                         "imagefolder:). " + spec_help()),
                out: Path = typer.Option(..., "--out", help="The corrected copy: an .npz for npz:, else a csv: "
                                         "manifest; never the input."),
                max_score: Optional[float] = typer.Option(None, "--max-score", help="Relabel only issues whose "
                                                          "label_score is at most this (low: likely wrong)."),
                min_suggested_prob: Optional[float] = typer.Option(None, "--min-suggested-prob", help="Relabel only "
                                                                   "issues whose suggested_prob is at least this."),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table.")
                ) -> None:
    """Apply an issues CSV: a corrected copy of the data's labels (relabeled, dropped rows removed) that
    --data reads back (train, finetune, run). Rows with an action cell do what it says; others are relabeled
    to suggested_label where is_label_issue and the thresholds allow."""
    result = fix(issues_file, data, out, max_score=max_score, min_suggested_prob=min_suggested_prob)
    if not as_json:
        for note in result["notes"]:
            print(f"denoise: note: {note}", file=sys.stderr)
    emit(result if as_json else {k: v for k, v in result.items() if k != "notes"}, as_json, "fix")
