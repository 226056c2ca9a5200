"""``denoise report``: what a cleaning run did, as one HTML page (see ``cli.report.page``) and its figures.

Sections, in order (their ids): ``summary``, ``class-swaps``, ``mixture``, ``gallery-flagged``,
``gallery-borderline``, ``sensitivity``, ``rounds``, ``detection``. A section whose files the run lacks
says which file would fill it. Scores are read one class's rows at a time (``StoredRows``), as partition
reads them: no (N, U) array is held whole.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from unlearn_core.metrics import detection_curves, detection_metrics
from unlearn_core.partition import CLEAN_THRESHOLD
from unlearn_core.regime import INPUT_DETECTOR
from unlearn_core.suspects import borderline_rows, separating_score, swap_counts

from ..data import load_data, read_once
from ..errors import InputError
from ..files.checkpoint import read_metadata
from ..files.paths import atomic_write
from ..files.stage_files import load_npz
from . import figures, page
from .run_files import RunFiles, from_workdir
from .suspects import Suspects, load_suspects

SECTIONS = ("summary", "class-swaps", "mixture", "gallery-flagged", "gallery-borderline", "sensitivity", "rounds",
            "detection")
GALLERY = 16  # thumbnails in each gallery
TOP_SWAPS = 8  # class pairs listed under the swap matrix


class Report:
    """The sections of one report, built from a checked ``RunFiles``; ``figures`` keeps every PNG by name."""

    def __init__(self, files: RunFiles, suspects: Suspects, inputs, speech: bool):
        self.files, self.suspects, self.inputs, self.speech = files, suspects, inputs, speech
        self.partition, self.partition_meta = load_npz(files.last.partition, "partition")
        self.figures: dict[str, bytes] = {}

    def _figure(self, name: str, png: bytes, alt: str) -> str:
        self.figures[name] = png
        return page.image(png, alt)

    def summary(self) -> str:
        s, results = self.suspects, self.partition_meta.get("results", {})
        flagged = s.flagged
        headline = [("samples", f"{len(flagged):,}"), ("flagged", f"{flagged.sum():,} ({flagged.mean():.1%})"),
                    ("rounds", str(len(self.files.rounds))), ("detector", str(results.get("detector", "?"))),
                    ("regime", f"{results.get('regime', '?')} (fits {results.get('fit', float('nan')):.1%})")]
        run = self.files.run
        if run is not None:
            headline += [("run wall time", f"{run.get('seconds', float('nan')):.1f} s"),
                         ("model handed back", str(run.get("chosen")))]
        per_class = [[s.classes[c], int((s.given == c).sum()), int(flagged[s.given == c].sum()),
                      float(flagged[s.given == c].mean())] for c in np.unique(s.given)]
        rounds = []
        for round in self.files.rounds:
            meta = load_npz(round.partition, "partition")
            stages = [v for v in round.summary.values() if isinstance(v, dict) and "wall_seconds" in v]
            wall = f"{sum(v['wall_seconds'] for v in stages):.2f}" if stages else "not recorded"
            rounds.append([round.number, wall, int((~meta[0]["is_clean"]).sum()),
                           meta[1].get("results", {}).get("detector", "?")])
        return page.section("summary", "Summary", page.cards(headline),
                            page.table(["given class", "samples", "flagged", "share"], per_class),
                            page.table(["round", "wall seconds", "flagged", "detector"], rounds))

    def class_swaps(self) -> str:
        s = self.suspects
        flagged = s.flagged
        counts = swap_counts(s.given[flagged], s.suggested[flagged], len(s.classes))
        off = counts.copy()
        np.fill_diagonal(off, 0)
        pairs = [divmod(int(i), len(s.classes)) for i in np.argsort(off, axis=None)[::-1][:TOP_SWAPS]]
        rows = [[s.classes[g], s.classes[p], int(off[g, p])] for g, p in pairs if off[g, p]]
        return page.section(
            "class-swaps", "Class swaps: given x suggested label of the flagged samples",
            page.note(f"Suggested label: the prediction of the {s.suggested_by}. Off the diagonal: the flagged "
                      f"samples whose suggested label differs from their given one "
                      f"({int(off.sum())} of {int(flagged.sum())})."),
            self._figure("class-swaps", figures.swap_matrix(counts, s.classes), "class swap matrix"),
            page.table(["given", "suggested", "flagged samples"], rows),
            page.table(["given \\ suggested", *s.classes],
                       [[name, *counts[row].tolist()] for row, name in enumerate(s.classes)]))

    def mixture(self) -> str:
        s = self.suspects
        detector = self.partition_meta.get("results", {}).get("detector", "")
        scores = load_npz(self.files.last.scores, "scores", on_disk=("attribution",))[0]
        if detector == INPUT_DETECTOR and "input_high_pass" not in scores:  # an older version's input check
            raise InputError(self.files.last.scores, "has no input_high_pass for its partition's input-energy "
                                                     "split (written by an older denoise): run the rounds again")
        name, score = separating_score(scores, s.given, detector)
        return page.section(
            "mixture", "The mixture",
            page.note(f"Per given class, the {name} (the score the {detector or 'partition'} separates by; higher "
                      f"= more likely noisy) of the samples called clean and of those flagged."),
            self._figure("mixture", figures.mixture(score, name, s.given, s.flagged, s.classes), "mixture by class"),
            self._figure("clean-probability", figures.clean_probability(s.clean_prob, CLEAN_THRESHOLD),
                         "clean probability histogram"))

    def _gallery(self, anchor: str, title: str, rows: np.ndarray, what: str) -> str:
        if self.inputs is None:
            return page.section(anchor, title, page.note("No samples to show: give --data."))
        s = self.suspects
        items = [(figures.thumbnail(self.inputs[int(r)].numpy(), self.speech),
                  f"#{s.index[r]}: given {s.classes[s.given[r]]}, suggested {s.classes[s.suggested[r]]}, "
                  f"clean p {s.clean_prob[r]:.3f}") for r in rows]
        return page.section(anchor, title, page.note(what), page.gallery(items))

    def galleries(self) -> list[str]:
        s = self.suspects
        shown = "spectrograms (log-mel, low frequencies at the bottom)" if self.speech else "inputs"
        return [self._gallery("gallery-flagged", "Most confidently flagged samples", s.rows()[:GALLERY],
                              f"The {GALLERY} flagged samples with the lowest clean probability, as {shown}."),
                self._gallery("gallery-borderline", "Borderline samples", borderline_rows(s.clean_prob, GALLERY),
                              f"The {GALLERY} samples whose clean probability is nearest the threshold "
                              f"{CLEAN_THRESHOLD}.")]

    def sensitivity(self) -> str:
        title = "Sensitivity of the units"
        if self.files.sensitivity is None:
            return page.section("sensitivity", title, page.note("No sensitivity file: the run did not prune "
                                                                "(give --sensitivity)."))
        arrays, meta = load_npz(self.files.sensitivity, "sensitivity")
        layer = meta.get("results", {}).get("layer")
        removed = np.zeros(len(arrays["coefficient"]), dtype=bool)
        if self.files.masked is not None:
            mask = read_metadata(self.files.masked).get("masks", {}).get(layer)
            if mask is not None and int(mask["units"]) == len(removed):
                removed[mask["removed"]] = True
        return page.section(
            "sensitivity", title,
            page.note(f"Layer {layer}: {len(removed)} units, R\u00b2 {float(arrays['r2']):.3f}; {int(removed.sum())} "
                      f"pruned (red)" + ("" if self.files.masked else " (give --model, the pruned model, to mark them)")),
            self._figure("sensitivity", figures.sensitivity(arrays["coefficient"], removed), "sorted coefficients"))

    def rounds(self) -> str:
        losses, accuracy = {}, {}
        for round in self.files.rounds:
            if round.clean is not None:
                curve = read_metadata(round.clean).get("provenance", {}).get("results", {}).get("losses")
                if curve:
                    losses[round.number] = curve
            for record in round.evaluations:
                accuracy.setdefault(str(record["split"]), {})[round.number] = float(record["accuracy"])
        if not losses and not accuracy:
            return page.section("rounds", "Rounds", page.note("No fine-tuning loss recorded (a report of files "
                                                              "given one by one has no rounds)."))
        table = [[split, number, value] for split, by_round in accuracy.items() for number, value in by_round.items()]
        return page.section(
            "rounds", "Rounds",
            page.note("Fine-tuning loss per epoch of each round's model; accuracy from `denoise evaluate --json` "
                      "records saved as .json in a round's folder" + ("" if accuracy else " (none found)") + "."),
            self._figure("rounds", figures.round_curves(losses, accuracy), "round curves"),
            page.table(["split", "round", "accuracy"], table) if table else "")

    def detection(self) -> str:
        title = "Detection against the truth"
        if self.files.truth is None:
            return page.section("detection", title, page.note("No truth: give --truth noise.npz."))
        truth = load_npz(self.files.truth, "noise")[0]["is_noisy"]
        curves, rows = {}, []
        for round in self.files.rounds:
            split = load_npz(round.partition, "partition")[0]
            figures_of_round = detection_metrics(truth, split["is_clean"], split["clean_prob"])
            curves[round.number] = detection_curves(truth, split["is_clean"], split["clean_prob"])
            rows.append([round.number, *(figures_of_round[k] for k in ("precision", "recall", "f1")),
                         figures_of_round["auroc"] if figures_of_round["auroc"] is not None else "n/a"])
        confusion = curves[self.files.last.number]["confusion"]
        drawn = {n: c for n, c in curves.items() if c["roc"] is not None}
        return page.section(
            "detection", title,
            page.note(f"Positive = mislabeled in {self.files.truth}; F1 at the threshold {CLEAN_THRESHOLD}."),
            page.table(["round", "precision", "recall", "F1", "AUROC"], rows),
            page.table(["", "truly noisy", "truly clean"],
                       [["flagged", confusion["true_positive"], confusion["false_positive"]],
                        ["called clean", confusion["false_negative"], confusion["true_negative"]]]),
            self._figure("detection", figures.detection_curves(drawn), "ROC and precision-recall curves")
            if drawn else page.note("The truth holds one class only: no curves."))

    def html(self) -> str:
        sections = [self.summary(), self.class_swaps(), self.mixture(), *self.galleries(), self.sensitivity(),
                    self.rounds(), self.detection()]
        source = self.files.last.partition.parent
        return page.document("denoise report", f"{source} (data: {self.files.data or 'not given'})", sections)


def report(files: RunFiles, out: Path, *, figures_dir: Path | None = None, arch: str | None = None,
           device: str = "auto") -> dict:
    """Write the report of ``files`` to ``out`` (and each figure as ``figures_dir/NAME.png``); returns a summary."""
    started = time.perf_counter()
    with read_once():  # the train split is read once, for the suggestions and the galleries
        model = files.model if files.data is not None else None
        suspects, samples = load_suspects(files.last.scores, files.last.partition, data=files.data, model=model,
                                          arch=arch, device=device)
        dataset = load_data(files.data, "train") if files.data is not None else None
    inputs = samples.inputs if samples is not None else dataset.inputs if dataset is not None else None
    speech = dataset is not None and "features" in dataset.transform  # the speech readers record their features
    built = Report(files, suspects, inputs, speech)
    text = built.html()
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        for name, png in built.figures.items():
            atomic_write(figures_dir / f"{name}.png", lambda tmp, png=png: tmp.write_bytes(png))
    return {"out": str(out), "samples": len(suspects.given), "flagged": int(suspects.flagged.sum()),
            "suggested_by": suspects.suggested_by, "sections": list(SECTIONS),
            "seconds": time.perf_counter() - started}


def report_of_run(workdir: Path, out: Path, *, data: str | None = None, arch: str | None = None,
                  device: str = "auto") -> str:
    """Write the report of the run in ``workdir`` (``denoise run --report``, the demo) to ``out``; returns its path."""
    return report(from_workdir(workdir, data=data), out, arch=arch, device=device)["out"]
