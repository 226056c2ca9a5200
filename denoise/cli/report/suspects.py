"""The suspects of a run (``denoise issues``): each flagged sample with its given and suggested label, as CSV.

The ranking, the class-swap counts and the per-class summary are ``denoise.core.suspects``; this module reads
the score and partition files (checked to belong together), chooses the suggested label and writes the rows.
``suggested_label`` is the prediction of a model given with ``--model`` (the cleaned model of a run: a model
that memorized its labels predicts the given label, so its own prediction in the scores suggests nothing),
else the ``predicted`` class the scores file records (the model that made the scores).

Columns (``COLUMNS``; names as cleanlab's Datalab where the meaning is the same), one row per sample, sorted by
``label_score`` ascending (ties: higher loss first, then ``index``): ``row`` (in the user's own file,
``Dataset.origin.rows``), ``path``, ``index`` (in the train split), ``given_label``, ``suggested_label``,
``suggested_prob``, ``label_score`` (low = likely wrong), ``is_label_issue``, ``clean_prob``, ``loss`` (nats).
The per-class summary (``SUMMARY_COLUMNS``): per given class its samples, the flagged ones, ``noise_rate`` and
the most frequent suggested swap (``swap_to``, ``swap_count``). Every column: docs/report.md, *denoise issues*.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denoise.core.batches import BATCH_SIZE
from denoise.core.partition import CLEAN_THRESHOLD
from denoise.core.relabel import suggestion
from denoise.core.suspects import class_summary, issue_order, label_score
from denoise.core.training import logits_of

from ..data import load_data, read_once
from ..data.registry import labels_fingerprint, read_index
from ..data.samples import Samples, load_samples
from ..device import resolve_device
from ..errors import InputError, UsageError
from ..files.checkpoint import load_checkpoint
from ..files.paths import atomic_write, check_input_path
from ..files.provenance import check_made_from, recorded_input
from ..files.stage_files import check_same_samples, load_npz

COLUMNS = ("row", "path", "index", "given_label", "suggested_label", "suggested_prob", "label_score",
           "is_label_issue", "clean_prob", "loss")
SUMMARY_COLUMNS = ("class", "samples", "flagged", "noise_rate", "swap_to", "swap_count")


@dataclass
class Suspects:
    """A partition's samples with what a person needs to relabel them; arrays over the N samples."""

    index: np.ndarray  # (N,) sample index within the train split
    given: np.ndarray  # (N,) int64 given (possibly noisy) labels
    suggested: np.ndarray  # (N,) int64 suggested labels (see the module docstring)
    clean_prob: np.ndarray  # (N,) float64 in [0, 1]
    loss: np.ndarray  # (N,) float32 nats, against the given label
    classes: list[str]  # class names, by label
    suggested_by: str  # "model PATH" or "scores"
    suggested_prob: np.ndarray | None = None  # (N,) float64 softmax probability of the suggested label
    file_rows: np.ndarray | None = None  # (N,) int64 row in the user's file (origin.rows); None without data
    paths: list[str] | None = None  # (N,) each sample's file (origin.paths); None for array kinds or no data
    fit: float = 1.0  # share of the given labels the scoring model predicts (its regime, for label_score)

    @property
    def flagged(self) -> np.ndarray:
        """(N,) bool: the samples the partition calls noisy."""
        return self.clean_prob < CLEAN_THRESHOLD

    @property
    def label_score(self) -> np.ndarray:
        """(N,) float64 in (0, 1), low = likely mislabeled (``denoise.core.suspects.label_score``)."""
        return label_score(self.clean_prob, self.loss, self.fit)

    def rows(self, every: bool = False) -> np.ndarray:
        """Row numbers of the flagged samples (every sample with ``every``), by ascending label score."""
        order = issue_order(self.label_score, self.loss)
        return order if every else order[self.flagged[order]]

    def records(self, rows: np.ndarray) -> list[dict]:
        """One dict per row, keyed by ``COLUMNS`` (module docstring), labels as class names."""
        score, flagged = self.label_score, self.flagged
        prob = self.suggested_prob if self.suggested_prob is not None else np.full(len(self.given), np.nan)
        return [{"row": None if self.file_rows is None else int(self.file_rows[r]),
                 "path": None if self.paths is None else self.paths[r], "index": int(self.index[r]),
                 "given_label": self.classes[self.given[r]], "suggested_label": self.classes[self.suggested[r]],
                 "suggested_prob": float(prob[r]), "label_score": float(score[r]),
                 "is_label_issue": bool(flagged[r]), "clean_prob": float(self.clean_prob[r]),
                 "loss": float(self.loss[r])} for r in rows]

    def summary(self) -> list[dict]:
        """One dict per class (``SUMMARY_COLUMNS``): its samples, the flagged, the estimated noise rate and the
        most frequent suggested swap of its flagged samples (``swap_to`` None where none is suggested another)."""
        counts = class_summary(self.given, self.suggested, self.flagged, len(self.classes))
        return [{"class": name, "samples": int(counts["size"][c]), "flagged": int(counts["flagged"][c]),
                 "noise_rate": float(counts["noise_rate"][c]),
                 "swap_to": self.classes[counts["swap_to"][c]] if counts["swap_to"][c] >= 0 else None,
                 "swap_count": int(counts["swap_count"][c])} for c, name in enumerate(self.classes)]


def recorded_noise(scores: Path, meta: dict) -> Path | None:
    """The noise file a scores file was made with (its provenance), checked to be unchanged since."""
    recorded = recorded_input(meta, "noise")
    if recorded is None:
        return None
    path, unchanged = recorded
    if not unchanged:
        raise InputError(scores, f"was made with the noise file {path}, which is missing or has changed since")
    return path


def predictions(model: Path, data: str, scores: Path, meta: dict, index: np.ndarray, *, arch: str | None = None,
                device: str = "auto") -> tuple[np.ndarray, np.ndarray, Samples]:
    """``(predicted (N,) int64, its softmax probability (N,) float64, the prepared train split)`` of ``model``
    over the train split of ``data``, with the noise file the scores were made with; InputError unless its
    samples are the scores' ``index``."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    samples = load_samples(data, "train", checkpoint.info, recorded_noise(scores, meta))
    check_same_samples(scores, index, data, samples.index)
    top = logits_of(checkpoint.model, samples.inputs, BATCH_SIZE, dev).double().softmax(1).max(1)
    return top.indices.numpy(), top.values.numpy(), samples


def load_suspects(scores: Path, partition: Path, *, data: str | None = None, model: Path | None = None,
                  arch: str | None = None, device: str = "auto") -> tuple[Suspects, Samples | None]:
    """The suspects of a partition and the scores it was made from, and the train split prepared for ``model``
    (None without one). ``model`` (needs ``data``) suggests the labels; ``data`` names the classes."""
    if model is not None and data is None:
        raise UsageError("--model needs --data: the model's predictions are made on the data's train split")
    arrays, meta = load_npz(scores, "scores", on_disk=("attribution",))  # only the (N,) arrays are read
    split, split_meta = load_npz(partition, "partition")
    check_same_samples(partition, split["index"], scores, arrays["index"])
    check_made_from(check_input_path(partition), split_meta, "scores", Path(scores))
    given = np.asarray(arrays["label"], dtype=np.int64)
    fit = float(np.mean(np.asarray(arrays["predicted"]) == given)) if len(given) else 1.0
    suggested, suggested_prob = suggestion(given, arrays["predicted"], arrays["confidence"], arrays["margin"])
    samples, suggested_by, classes, file_rows, paths = None, "scores", None, None, None
    index = np.asarray(arrays["index"], dtype=np.int64)
    with read_once():  # the data's train split, read once for its class names and the model's predictions
        if data is not None:
            dataset = load_data(data, "train")
            if len(dataset.labels) != len(given):
                raise InputError(scores, f"covers {len(given)} samples but the train split of {data} has "
                                         f"{len(dataset.labels)}")
            classes = dataset.classes
            origin = dataset.origin
            file_rows = index if origin is None else np.asarray(origin.rows, dtype=np.int64)[index]
            paths = None if origin is None or origin.paths is None else [origin.paths[i] for i in index]
        if model is not None:
            suggested, suggested_prob, samples = predictions(model, data, scores, meta, index, arch=arch,
                                                             device=device)
            suggested_by = f"model {model}"
    count = int(max(given.max(), suggested.max())) + 1
    classes = classes or [str(c) for c in range(count)]
    if count > len(classes):
        raise InputError(scores, f"has label {count - 1} but {data} names {len(classes)} classes")
    suspects = Suspects(index, given, suggested, np.asarray(split["clean_prob"], dtype=np.float64),
                        np.asarray(arrays["loss"]), classes, suggested_by, np.asarray(suggested_prob, np.float64),
                        file_rows, paths, fit)
    return suspects, samples


def _cell(value, digits: int = 6) -> str:
    """A CSV cell: floats with ``digits`` significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


DIGITS = {"label_score": 10}  # a rank over up to millions of samples: enough digits that the CSV keeps its order


def csv_text(records: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """The records as CSV with a header row (``columns``); floats with 6 significant digits (``label_score``
    10), None as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: _cell(record[name], DIGITS.get(name, 6)) for name in columns})
    return buffer.getvalue()


def summary_path(out: Path) -> Path:
    """Where the per-class summary of an issues CSV ``out`` goes by default (``issues.csv``: ``issues.summary.csv``)."""
    return out.with_name(f"{out.stem}.summary.csv")


def data_record_path(out: Path) -> Path:
    """Where ``issues`` records the data an issues CSV ``out`` was made from (``issues.csv``: ``issues.data.json``),
    which ``denoise fix`` checks the data it corrects against."""
    return out.with_name(f"{out.stem}.data.json")


def issues(scores: Path, partition: Path, *, out: Path | None = None, data: str | None = None,
           model: Path | None = None, every: bool = False, summary: Path | None = None, arch: str | None = None,
           device: str = "auto") -> dict:
    """``denoise issues``: the flagged samples (every sample with ``every``) by ascending label score; written as
    CSV to ``out`` when given, and the per-class summary to ``summary`` (default with ``out``: beside it,
    ``summary_path``). Returns the summary with the ``rows`` and ``classes`` as dicts and the ``csv`` text."""
    if summary is None and out is not None:
        summary = summary_path(Path(out))
    if summary is not None and out is not None and Path(summary).resolve() == Path(out).resolve():
        raise UsageError("--summary must be another file than --out")
    suspects, _ = load_suspects(scores, partition, data=data, model=model, arch=arch, device=device)
    records = suspects.records(suspects.rows(every))
    per_class = suspects.summary()
    text = csv_text(records)
    if out is not None:
        atomic_write(out, lambda tmp: tmp.write_text(text))
    if summary is not None:
        summary_text = csv_text(per_class, SUMMARY_COLUMNS)
        atomic_write(summary, lambda tmp: tmp.write_text(summary_text))
    if out is not None and data is not None:
        split = read_index(data, "train")
        record = json.dumps({"data": data, "samples": len(split.labels), "classes": split.classes,
                             "labels_sha256": labels_fingerprint(split)}, indent=2)
        atomic_write(data_record_path(Path(out)), lambda tmp: tmp.write_text(record))
    return {"out": None if out is None else str(out), "summary": None if summary is None else str(summary),
            "samples": len(suspects.given), "flagged": int(suspects.flagged.sum()),
            "suggested_by": suspects.suggested_by, "classes": per_class, "rows": records, "csv": text}
