"""Which samples to show a person first, and which classes get swapped: the suspects of a partition.

Plain arrays in, plain arrays out, as ``partition`` (in the manner of cleanlab's issue ranking and its
``find_overlapping_classes``). A *suspect* is a sample the partition calls noisy (clean probability below
``partition.CLEAN_THRESHOLD``); its *suggested* label is the class the evidence points to, which the caller
chooses (a model's prediction).
"""

from __future__ import annotations

import numpy as np

from .partition import CLEAN_THRESHOLD, prototype_margin
from .regime import INPUT_DETECTOR, LOSS_DETECTOR


TIED_BELOW = 1e-6  # clean probabilities are compared to this precision (see suspect_order)


def suspect_order(clean_prob: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(N,) row order, most confidently flagged first: ascending clean probability to ``TIED_BELOW``, then
    descending loss, then ascending row. Far in its tail a mixture posterior (1e-270 against 1e-30) says
    how tight one class's Gaussian fit is, not which sample is likelier mislabeled: ranked by it, the
    first rows all came from one class (digits).

    clean_prob: (N,) in [0, 1]; loss: (N,) nats.
    """
    clean_prob, loss = np.asarray(clean_prob, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    return np.lexsort((np.arange(len(clean_prob)), -loss, np.round(clean_prob / TIED_BELOW)))


def borderline_rows(clean_prob: np.ndarray, count: int) -> np.ndarray:
    """The (<= count,) rows whose (N,) clean probability is nearest ``CLEAN_THRESHOLD``, nearest first."""
    distance = np.abs(np.asarray(clean_prob, dtype=np.float64) - CLEAN_THRESHOLD)
    return np.argsort(distance, kind="stable")[:count]


def swap_counts(given: np.ndarray, suggested: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts: row = given label, column = suggested label, over the (M,) samples
    passed (the suspects); off-diagonal mass says which classes get swapped."""
    given, suggested = np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    return np.bincount(given * classes + suggested, minlength=classes * classes).reshape(classes, classes)


def separating_score(scores: dict, labels: np.ndarray, detector: str) -> tuple[str, np.ndarray]:
    """``(name, (N,) float64)``: the score the partition's detector splits the samples by, higher = more
    likely noisy: the loss (nats) for the loss mixture, the input's high-pass energy (log) for the input-energy
    mixture, else the prototype margin of the (N, U) attributions (read one class's rows at a time, so a
    ``StoredRows`` is never read whole)."""
    if detector == LOSS_DETECTOR:
        return "loss (nats)", np.asarray(scores["loss"], dtype=np.float64)
    if detector == INPUT_DETECTOR:
        return "input high-pass energy (log)", np.asarray(scores["input_high_pass"], dtype=np.float64)
    return "prototype margin", prototype_margin(scores["attribution"], labels)
