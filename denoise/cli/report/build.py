"""``denoise report``: what a cleaning run did, as one HTML page (see ``denoise.cli.report.page``) and its figures.

Sections, in order (their ids): ``summary``, ``class-swaps``, ``mixture``, ``gallery-flagged``,
``gallery-borderline``, ``sensitivity``, ``rounds``, ``detection``. A section whose files the run lacks
says which file would fill it. Scores are read one class's rows at a time (``StoredRows``), as partition
reads them: no (N, U) array is held whole.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from denoise.core.metrics import detection_curves, detection_metrics
from denoise.core.partition import CLEAN_THRESHOLD
from denoise.core.selection import HOLDOUT, INPUT
from denoise.core.suspects import borderline_rows, separating_score, swap_counts

from ..data import load_data, read_once
from ..files.checkpoint import read_metadata
from ..files.paths import atomic_write
from ..files.stage_files import load_npz
from ..stage_timing import CHECKED
from . import figures, page
from .run_files import RoundFiles, RunFiles, from_workdir
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
        flagged, run = s.flagged, self.files.run
        first = load_npz(self.files.rounds[0].partition, "partition")[1].get("results", {})
        # round 1 scores the input model (a run's regime, which set its rounds); files given one by one, the scores'
        regime = "input model's regime (round 1)" if run is not None else "regime of the scores' model"
        headline = [("samples", f"{len(flagged):,}"), ("flagged", f"{flagged.sum():,} ({flagged.mean():.1%})"),
                    ("rounds", str(len(self.files.rounds))), (regime, _regime(first)),
                    ("detector (last round)", str(results.get("detector", "?")))]
        if run is not None:
            headline += [("run wall time", _run_time(run)), ("model handed back", str(run.get("chosen")))]
        per_class = [[s.classes[c], int((s.given == c).sum()), int(flagged[s.given == c].sum()),
                      float(flagged[s.given == c].mean())] for c in np.unique(s.given)]
        rounds = [self._round_row(round) for round in self.files.rounds]
        decided = [page.note("What each round decided: the model it scored (round 1 the input model, each later "
                             "round the model the round before fine-tuned) and the regime it found it in, its "
                             "detector and features, the samples it flagged, whether it pruned, and how it "
                             "fine-tuned the input model on the rest."),
                   page.table(["round", "scored model", "regime", "detector", "features", "flagged", "pruned",
                               "fine-tuning", "wall seconds"], rounds)]
        if run is not None:
            decided.append(page.note(_handed_back(run)))
        return page.section("summary", "Summary", page.cards(headline),
                            page.table(["given class", "samples", "flagged", "share"], per_class), *decided)

    def _round_row(self, round: RoundFiles) -> list:
        """One round's row of the summary's table: its partition's record, run.json's summary of its stages, and
        its fine-tuned model's recipe (the model's provenance)."""
        arrays, meta = load_npz(round.partition, "partition")
        results, count = meta.get("results", {}), int((~arrays["is_clean"]).sum())
        scored = "input model" if round.number == 1 else f"round {round.number - 1}'s model"
        if self.files.run is None:  # files given one by one: the partition alone
            scored, pruned = "the scores' model", "n/a"
        else:
            prune = round.summary.get("prune")
            removed = prune.get("removed") if isinstance(prune, dict) else None
            pruned = "no" if prune is None else "yes" if removed is None else f"yes ({removed} units)"
        return [round.number, scored, _regime(results), str(results.get("detector", "?")),
                str(results.get("features") or "-"), f"{count:,} ({count / max(len(arrays['is_clean']), 1):.1%})",
                pruned, _recipe(round.clean), _wall(round.summary)]

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
        score = getattr(s, "label_score", None)
        items = [(figures.thumbnail(self.inputs[int(r)].numpy(), self.speech),
                  f"#{s.index[r]}: given {s.classes[s.given[r]]}, suggested {s.classes[s.suggested[r]]}, "
                  f"clean p {s.clean_prob[r]:.3f}" + (f", label score {score[r]:.3f}" if score is not None else ""))
                 for r in rows]
        return page.section(anchor, title, page.note(what), page.gallery(items))

    def galleries(self) -> list[str]:
        s = self.suspects
        shown = "spectrograms (log-mel, low frequencies at the bottom)" if self.speech else "inputs"
        # the clean probability saturates (most samples at 0 or 1), the label score ranks: where the suspects have
        # one (denoise.cli.report.suspects), the borderline samples are those it puts nearest the flagging boundary
        score = getattr(s, "label_score", None)
        if score is not None:
            boundary = float(s.flagged.mean())  # every flagged sample scores below it, every clean one above
            borderline = np.argsort(np.abs(np.asarray(score) - boundary), kind="stable")[:GALLERY]
            what = (f"The {GALLERY} samples whose label score is nearest the flagging boundary ({boundary:.3f}, the "
                    f"share flagged): the least confidently flagged and the least confidently clean.")
        else:
            borderline = borderline_rows(s.clean_prob, GALLERY)
            what = f"The {GALLERY} samples whose clean probability is nearest the threshold {CLEAN_THRESHOLD}."
        return [self._gallery("gallery-flagged", "Most confidently flagged samples", s.rows()[:GALLERY],
                              f"The {GALLERY} flagged samples with the lowest clean probability, as {shown}."),
                self._gallery("gallery-borderline", "Borderline samples", borderline, what)]

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


def _regime(results: dict) -> str:
    """A partition's record of the scored model's regime, as "memorized (fits 100.0 %)"."""
    fit = results.get("fit")
    return f"{results.get('regime', '?')}" + (f" (fits {fit:.1%})" if isinstance(fit, (int, float)) else "")


def _recipe(clean: Path | None) -> str:
    """How a round fine-tuned, from its model's provenance (the options ``finetune`` records)."""
    if clean is None:
        return "not fine-tuned"
    options = read_metadata(clean).get("provenance", {}).get("options", {})
    if "epochs" not in options:
        return "not recorded"
    text = f"{'head only' if options.get('train') == 'head' else 'all layers'}, {options['epochs']} epochs"
    shrink = options.get("shrink", 1.0)
    return text + (f", shrink {shrink:g}" if shrink != 1 else "") + (", relabeled" if options.get("relabel") else "")


def _stages(summary: dict) -> list[dict]:
    return [v for v in summary.values() if isinstance(v, dict) and "wall_seconds" in v]


def _wall(summary: dict) -> str:
    """A round's wall seconds from run.json: a stage a re-run reused counts with the seconds of the run that
    made its output (``denoise.cli.stage_timing``), and says so."""
    stages = _stages(summary)
    if not stages:
        return "not recorded"
    text = f"{sum(v['wall_seconds'] for v in stages):.2f}"
    if any(v.get("wall_seconds_of") == CHECKED for v in stages):
        return text + " (reused outputs, some untimed)"
    return text + (" (reused)" if any(v.get("reused") for v in stages) else "")


def _run_time(run: dict) -> str:
    """The run's wall time; for a re-run that reused outputs, the seconds of the runs that made them too."""
    stages = [stage for entry in run.get("rounds", []) if isinstance(entry, dict) for stage in _stages(entry)]
    seconds = run.get("seconds", float("nan"))
    reused = sum(1 for stage in stages if stage.get("reused"))
    if not reused:
        return f"{seconds:.1f} s"
    total = sum(stage["wall_seconds"] for stage in stages)
    return f"{total:.1f} s in its stages, {reused} of {len(stages)} reused (this re-run: {seconds:.1f} s)"


def _handed_back(run: dict) -> str:
    """Which model the run handed back, and the no-harm figures that chose it (run.json's ``chosen``, ``no_harm``)."""
    chosen, record = run.get("chosen"), run.get("no_harm")
    if not isinstance(record, dict):
        return f"Handed back: {chosen}, the last round's model, unchecked (nothing held out, no --validation)."
    accuracy = ", ".join(f"{name} {value:.3f}" for name, value in record.get("accuracy", {}).items()
                         if value is not None)
    samples = f"{record.get('held_out')} {'held-out' if record.get('source') == HOLDOUT else 'validation'} samples"
    tolerance = record.get("tolerance")
    slack = f"; the cleaned model may be at most {tolerance:.3f} below the input" if tolerance else ""
    verdict = ("the input model, unchanged: the cleaned model failed" if chosen == INPUT
               else f"{chosen}'s model, which passed")
    return f"Handed back: {verdict} the no-harm check on {samples} (accuracy {accuracy}{slack})."


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
