"""The detectors, as named objects: what tells clean samples from noisy ones, and what each needs.

Two registries, one per kind:

* ``DETECTORS``: the detectors ``bench quality`` compares (``--detectors``), each a ``Detector``: a split
  over plain arrays (scored by ``metrics.detection_metrics``), the evidence it reads, and whether it runs one
  round and is one of the baselines ours must beat. Registration order is the tables' order and
  ``--detectors``' default. Register one with ``@register_detector``; the benchmark needs nothing else.
* ``METHOD_DETECTORS``: the splits the method itself picks from the regime (``regime.partition_scores``),
  each a ``MethodDetector`` whose ``name`` is what partition files and JSON records write as ``detector``
  (a public interface), with the facts other modules need of it: the score it separates by and whether it
  flags corrupted inputs. Look a recorded name up with ``method_detector``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .partition import CLEAN_THRESHOLD, prototype_margin

# The evidence a detector's split reads, which the benchmark computes for it in every round:
SCORES = "scores"  # the attribute stage's scores: the method's own partition (regime.partition_scores)
LOGITS = "logits"  # (N, C) float32 logits of the round's model over the train split
PROBS = "probs"  # (N, C) float32 softmax of those logits
LOSS = "loss"  # (N,) float32 cross-entropy of each sample against its given label (nats)
OUT_OF_FOLD = "out-of-fold"  # (N, C) float64 out-of-fold probabilities of K models trained from scratch
EVIDENCE = (SCORES, LOGITS, PROBS, LOSS, OUT_OF_FOLD)

# A split: (evidence, labels (N,) given labels, seed) -> (is_clean (N,) bool, clean_score (N,) float64, higher =
# more likely clean).
Split = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Detector:
    """A detector ``bench quality`` runs: in every round ``split`` reads the ``evidence`` of the round's model
    (``EVIDENCE``; None for ``SCORES``: the method's partition, per class or not by ``per_class``)."""

    name: str
    split: Split | None
    evidence: str = PROBS
    baseline: bool = False  # one of the detectors ours must beat with no extra training (the headline table)
    one_round: bool = False  # its split does not depend on the round's model (out-of-fold): one round is enough
    per_class: bool = True  # RunOptions.per_class of its rounds (the method's mixture: per class, or global)
    requires: tuple[str, ...] = ()  # modules it imports that denoise does not depend on (extras)


DETECTORS: dict[str, Detector] = {}


def add_detector(detector: Detector) -> Detector:
    """Register ``detector`` under its name (after those registered before: table order). Raises ValueError
    for a name taken, evidence not of ``EVIDENCE``, or a split missing (or given for ``SCORES``)."""
    if detector.name in DETECTORS:
        raise ValueError(f"detector {detector.name!r} is registered already")
    if detector.evidence not in EVIDENCE:
        raise ValueError(f"detector {detector.name!r}: evidence must be one of {', '.join(EVIDENCE)}")
    if (detector.split is None) != (detector.evidence == SCORES):
        raise ValueError(f"detector {detector.name!r}: a split is needed for every evidence but {SCORES}")
    DETECTORS[detector.name] = detector
    return detector


def register_detector(name: str, *, evidence: str = PROBS, baseline: bool = False, one_round: bool = False,
                      requires: tuple[str, ...] = ()):
    """Decorator: register ``split(evidence, labels, seed) -> (is_clean, clean_score)`` as the detector
    ``name`` of ``bench quality`` (see ``Detector``)."""

    def decorate(split: Split) -> Split:
        add_detector(Detector(name, split, evidence, baseline, one_round, requires=requires))
        return split

    return decorate


add_detector(Detector("attribution", None, SCORES))  # ours: the method's partition, per class
OURS = "attribution"  # the detector the headline table sets against the baselines
add_detector(Detector("attribution-global", None, SCORES, per_class=False))  # its mixture over all classes at once


@register_detector("disagreement", evidence=PROBS, baseline=True)
def disagreement_split(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The simplest detector: flag the samples whose predicted class is not their given label.

    probs: (N, C) predicted class probabilities; labels: (N,) given labels; seed: unused (no randomness).
    Returns ``(is_clean (N,) bool, clean_score (N,) float64)``, the score being the given label's probability
    minus the largest other one (in [-1, 1]; higher = more likely clean).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    given = probs[np.arange(len(labels)), labels]
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return probs.argmax(1) == labels, given - others.max(1)


@register_detector("loss", evidence=LOSS, baseline=True)
def loss_split(loss: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The DivideMix criterion (``regime.loss_clean_probability``) on (N,) per-sample losses: ``(is_clean (N,)
    bool, clean probability (N,) float64)``; labels: (N,) given labels (unused: the loss already saw them)."""
    from .regime import loss_clean_probability  # imported here: regime imports this module's names

    prob = loss_clean_probability(loss, seed)
    return prob >= CLEAN_THRESHOLD, prob


def cleanlab_split(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's ``find_label_issues`` on (N, C) probabilities of the (N,) given labels: ``(is_clean (N,) bool,
    label quality (N,) in [0, 1])``; seed: unused (cleanlab's split is deterministic)."""
    from cleanlab.filter import find_label_issues  # an extra (denoise[bench]): Detector.requires
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    return ~find_label_issues(labels, probs, n_jobs=1), get_label_quality_scores(labels, probs)


register_detector("cleanlab", evidence=PROBS, baseline=True, requires=("cleanlab",))(cleanlab_split)
# cleanlab on out-of-fold probabilities: the split does not depend on the round's model
register_detector("cleanlab-cv", evidence=OUT_OF_FOLD, one_round=True, requires=("cleanlab",))(cleanlab_split)


@dataclass(frozen=True)
class MethodDetector:
    """One of the splits the method picks from the regime (``regime.partition_scores``): ``name`` is the
    ``detector`` its partition records; it separates the samples by the scores array ``score`` (or, with
    ``margin``, by the prototype margin of that (N, U) attribution array), which ``score_name`` names for a
    person; ``corrupted_inputs``: it flags corrupted inputs, not noisy labels (one round:
    docs/decisions/0006-corrupted-round.md)."""

    name: str
    score: str
    score_name: str
    corrupted_inputs: bool = False
    margin: bool = False

    def separating_score(self, scores: dict, labels: np.ndarray) -> np.ndarray:
        """(N,) float64, higher = more likely noisy: the score this detector splits ``scores``' samples by (the
        prototype margin read one class's rows at a time, so a ``StoredRows`` is never read whole)."""
        if self.margin:
            return prototype_margin(scores[self.score], labels)
        return np.asarray(scores[self.score], dtype=np.float64)


ATTRIBUTION_MIXTURE = MethodDetector("attribution-mixture", "attribution", "prototype margin", margin=True)
LOSS_MIXTURE = MethodDetector("loss-mixture", "loss", "loss (nats)")
INPUT_ENERGY_MIXTURE = MethodDetector("input-energy-mixture", "input_high_pass", "input high-pass energy (log)",
                                      corrupted_inputs=True)
METHOD_DETECTORS = {d.name: d for d in (ATTRIBUTION_MIXTURE, LOSS_MIXTURE, INPUT_ENERGY_MIXTURE)}


def method_detector(name: str | None, default: MethodDetector | None = ATTRIBUTION_MIXTURE) -> MethodDetector | None:
    """The method's detector a partition record names (its ``detector``), or ``default`` for None or a name
    this version does not know (a baseline's partition records none)."""
    return METHOD_DETECTORS.get(name, default)
