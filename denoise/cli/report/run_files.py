"""The files a report is made from: a ``denoise run`` (or ``demo``) work directory, or files given one by one.

Everything is checked before anything is drawn: the files must exist and be of their kind (the checked
readers of ``denoise.cli.files``) and belong to one run (each partition made from its round's scores, the
sensitivity from the partition, the truth for the same samples and labels); else an InputError names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files.paths import check_input_path
from ..files.provenance import check_made_from, recorded_input
from ..files.stage_files import check_same_samples, load_npz

EVALUATION_KEYS = {"model", "split", "accuracy"}  # what tells an `evaluate --json` record among a round's .json files


@dataclass
class RoundFiles:
    """One round's files (None where the round did not make one) and what run.json says of it."""

    number: int
    scores: Path
    partition: Path
    clean: Path | None = None  # the round's fine-tuned model
    summary: dict = field(default_factory=dict)  # the round's stage summaries in run.json
    evaluations: list[dict] = field(default_factory=list)  # `evaluate --json` records saved in the round's folder


@dataclass
class RunFiles:
    """What the report shows: the last round's scores and partition, and what else there is."""

    rounds: list[RoundFiles]  # in order; the last one's samples are the report's
    sensitivity: Path | None = None
    masked: Path | None = None  # a checkpoint whose unit mask marks the pruned units
    model: Path | None = None  # the model whose predictions suggest labels
    data: str | None = None
    truth: Path | None = None
    run: dict | None = None  # run.json

    @property
    def last(self) -> RoundFiles:
        """The last round (the report's samples)."""
        return self.rounds[-1]


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _evaluations(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not every .json in a folder is ours to read
        if isinstance(record, dict) and EVALUATION_KEYS <= set(record):
            found.append(record)
    return found


def _recorded_truth(partition: Path) -> Path | None:
    """The noise file the partition was scored against (``--truth``), when it is still there unchanged."""
    path, unchanged = recorded_input(load_npz(partition, "partition")[1], "truth") or (None, False)
    return path if unchanged else None


def run_directory(workdir: Path) -> Path:
    """The folder holding run.json: ``workdir`` itself, or the ``denoise`` run of a demo's work directory."""
    for folder in (workdir, workdir / "denoise"):
        if (folder / "run.json").is_file():
            return folder
    if not workdir.is_dir():
        raise InputError(workdir, "no such directory")
    raise InputError(workdir, "holds no denoise run (no run.json, nor denoise/run.json of a demo); "
                              "run `denoise run --workdir` first")


def from_workdir(workdir: Path, *, data: str | None = None, truth: Path | None = None) -> RunFiles:
    """The files of the run in ``workdir`` (see ``run_directory``); ``data`` and ``truth`` override what the
    run recorded (the data spec of its scores, the noise file its partitions were scored against)."""
    folder = run_directory(workdir)
    try:
        run = json.loads((folder / "run.json").read_text())
        numbers = [int(entry["round"]) for entry in run["rounds"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(folder / "run.json", f"is not a denoise run record ({type(exc).__name__})") from None
    if not numbers:
        raise InputError(folder / "run.json", "records no round")
    rounds = []
    for number, summary in zip(numbers, run["rounds"]):
        directory = folder / f"round{number}"
        rounds.append(RoundFiles(number, check_input_path(directory / "scores.npz"),
                                 check_input_path(directory / "partition.npz"),
                                 _existing(directory / "clean.safetensors"), summary, _evaluations(directory)))
    last = folder / f"round{numbers[-1]}"
    # Labels are suggested by the last round's fine-tuned model, found from the workdir wherever the run was: the
    # model handed back, or, when the run handed back its noisy input (which predicts the labels it memorized, so
    # suggests nothing), still the cleaned one.
    model = check_input_path(last / "clean.safetensors")
    files = RunFiles(rounds, sensitivity=_existing(last / "sensitivity.npz"),
                     masked=_existing(last / "pruned.safetensors"), model=model, data=data, truth=truth, run=run)
    scores_meta = load_npz(files.last.scores, "scores", on_disk=("attribution",))[1]  # the (N, U) array stays on disk
    files.data = data or scores_meta.get("options", {}).get("data")
    files.truth = truth or _recorded_truth(files.last.partition)
    check(files)
    return files


def from_files(scores: Path, partition: Path, *, sensitivity: Path | None = None, model: Path | None = None,
               data: str | None = None, truth: Path | None = None) -> RunFiles:
    """A one-round report of files given one by one; ``model`` suggests labels and, pruned, marks the units."""
    files = RunFiles([RoundFiles(1, scores, partition)], sensitivity=sensitivity, masked=model, model=model,
                     data=data, truth=truth)
    check(files)
    return files


def check(files: RunFiles) -> None:
    """Raise InputError naming the first file that does not belong with the others (see the module docstring)."""
    first = files.rounds[0].partition
    first_index = load_npz(first, "partition")[0]["index"]
    for round in files.rounds:
        arrays, meta = load_npz(round.partition, "partition")
        check_made_from(round.partition, meta, "scores", round.scores)
        check_same_samples(round.partition, arrays["index"], first, first_index)
    split = load_npz(files.last.partition, "partition")[0]
    if files.sensitivity is not None:
        check_made_from(files.sensitivity, load_npz(files.sensitivity, "sensitivity")[1], "partition",
                        files.last.partition)
    if files.truth is not None:
        noise = load_npz(files.truth, "noise")[0]
        check_same_samples(files.truth, noise["index"], files.last.partition, split["index"])
        if not np.array_equal(noise["labels"], split["label"]):
            raise InputError(files.truth, f"gives other labels than {files.last.partition} was made with "
                                          "(a noise file of another run?)")
