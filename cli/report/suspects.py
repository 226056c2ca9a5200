"""The suspects of a run (``denoise issues``): each flagged sample with its given and suggested label, as CSV.

The ranking and the class-swap counts are ``unlearn_core.suspects``; this module reads the score and
partition files (checked to belong together), chooses the suggested label and writes the rows.
``suggested_label`` is the prediction of a model given with ``--model`` (the cleaned model of a run: a model
that memorized its labels predicts the given label, so its own prediction in the scores suggests nothing),
else the ``predicted`` class the scores file records (the model that made the scores).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn_core.partition import CLEAN_THRESHOLD
from unlearn_core.suspects import suspect_order
from unlearn_core.training import logits_of

from ..data import load_data, read_once
from ..data.samples import Samples, load_samples
from ..device import resolve_device
from ..errors import InputError, UsageError
from ..files.checkpoint import load_checkpoint
from ..files.paths import atomic_write, check_input_path
from ..files.provenance import check_made_from, recorded_input
from ..files.stage_files import check_same_samples, load_npz

COLUMNS = ("index", "given_label", "suggested_label", "clean_prob", "loss")


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

    @property
    def flagged(self) -> np.ndarray:
        """(N,) bool: the samples the partition calls noisy."""
        return self.clean_prob < CLEAN_THRESHOLD

    def rows(self, every: bool = False) -> np.ndarray:
        """Row numbers of the flagged samples (every sample with ``every``), most confidently flagged first."""
        order = suspect_order(self.clean_prob, self.loss)
        return order if every else order[self.flagged[order]]

    def records(self, rows: np.ndarray) -> list[dict]:
        """One dict per row, keyed by ``COLUMNS``, labels as class names."""
        return [{"index": int(self.index[r]), "given_label": self.classes[self.given[r]],
                 "suggested_label": self.classes[self.suggested[r]], "clean_prob": float(self.clean_prob[r]),
                 "loss": float(self.loss[r])} for r in rows]


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
                device: str = "auto") -> tuple[np.ndarray, Samples]:
    """``(predicted (N,) int64, the prepared train split)`` of ``model`` over the train split of ``data``, with
    the noise file the scores were made with; InputError unless its samples are the scores' ``index``."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    samples = load_samples(data, "train", checkpoint.info, recorded_noise(scores, meta))
    check_same_samples(scores, index, data, samples.index)
    return logits_of(checkpoint.model, samples.inputs, 256, dev).argmax(1).numpy(), samples


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
    suggested, samples, suggested_by, classes = np.asarray(arrays["predicted"], dtype=np.int64), None, "scores", None
    with read_once():  # the data's train split, read once for its class names and the model's predictions
        if data is not None:
            dataset = load_data(data, "train")
            if len(dataset.labels) != len(given):
                raise InputError(scores, f"covers {len(given)} samples but the train split of {data} has "
                                         f"{len(dataset.labels)}")
            classes = dataset.classes
        if model is not None:
            suggested, samples = predictions(model, data, scores, meta, arrays["index"], arch=arch, device=device)
            suggested_by = f"model {model}"
    count = int(max(given.max(), suggested.max())) + 1
    classes = classes or [str(c) for c in range(count)]
    if count > len(classes):
        raise InputError(scores, f"has label {count - 1} but {data} names {len(classes)} classes")
    suspects = Suspects(np.asarray(arrays["index"]), given, suggested,
                        np.asarray(split["clean_prob"], dtype=np.float64), np.asarray(arrays["loss"]), classes,
                        suggested_by)
    return suspects, samples


def csv_text(records: list[dict]) -> str:
    """The records as CSV with a header row (``COLUMNS``); probabilities and losses with 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({**record, "clean_prob": f"{record['clean_prob']:.6g}", "loss": f"{record['loss']:.6g}"})
    return buffer.getvalue()


def issues(scores: Path, partition: Path, *, out: Path | None = None, data: str | None = None,
           model: Path | None = None, every: bool = False, arch: str | None = None, device: str = "auto") -> dict:
    """``denoise issues``: the flagged samples (every sample with ``every``), most confident first; written as
    CSV to ``out`` when given. Returns the summary with the ``rows`` as dicts and the ``csv`` text."""
    suspects, _ = load_suspects(scores, partition, data=data, model=model, arch=arch, device=device)
    records = suspects.records(suspects.rows(every))
    text = csv_text(records)
    if out is not None:
        atomic_write(out, lambda tmp: tmp.write_text(text))
    return {"out": None if out is None else str(out), "samples": len(suspects.given),
            "flagged": int(suspects.flagged.sum()), "suggested_by": suspects.suggested_by, "rows": records,
            "csv": text}
