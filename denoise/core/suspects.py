"""Which samples to show a person first, and which classes get swapped: the suspects of a partition.

Plain arrays in, plain arrays out, as ``partition`` (in the manner of cleanlab's issue ranking and its
``find_overlapping_classes``). A *suspect* is a sample the partition calls noisy (clean probability below
``partition.CLEAN_THRESHOLD``); its *suggested* label is the class the evidence points to, which the caller
chooses (a model's prediction).

``label_score`` (N,) in (0, 1), low = the given label is likely wrong, ranks the samples by the partition's
evidence without saturating (a mixture posterior sits at exactly 0 or 1 for most samples). Each evidence is
rank-normalized to its mid-rank percentile ``(r + 0.5) / N`` (``r`` the 0-based position in ascending order;
equal values share their mean position), so the score is never exactly 0 or 1. Where the scoring model
generalizes (fits under ``MEMORIZED_FIT`` of its labels) the score is the mean of the percentile of the clean
probability (ties by descending loss) and that of the negative loss; where it memorized them every loss is near
zero, and the score is the posterior's percentile alone (docs/decisions/0013-label-score.md).
"""

from __future__ import annotations

import numpy as np

from .detectors import method_detector
from .partition import CLEAN_THRESHOLD
from .regime import MEMORIZED_FIT


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


def _twice_mid_rank(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """(N,) int64 ``2 r + 1`` of each sample, ``r`` its 0-based position in ascending lexicographic order of
    ``keys`` (least significant first, as ``np.lexsort``); samples equal in every key share their mean position.
    Whole numbers, so that scores made of them are equal exactly where their ranks are."""
    count = len(keys[0])
    order = np.lexsort(keys)
    ordered = np.stack([np.asarray(key, dtype=np.float64)[order] for key in keys])
    starts = np.flatnonzero(np.r_[True, (np.diff(ordered, axis=1) != 0).any(axis=0)])  # first position of each tie
    sizes = np.diff(np.r_[starts, count])
    twice = np.empty(count, dtype=np.int64)
    twice[order] = np.repeat(2 * starts + sizes, sizes)  # 2 (start + (size - 1) / 2) + 1
    return twice


def label_score(clean_prob: np.ndarray, loss: np.ndarray, fit: float) -> np.ndarray:
    """(N,) float64 in (0, 1), low = the given label is likely wrong (module docstring): the posterior's
    mid-rank percentile where the scoring model memorized its labels (``fit >= MEMORIZED_FIT``), else its mean
    with the percentile of the negative loss. Never exactly 0 or 1.

    clean_prob: (N,) in [0, 1]; loss: (N,) nats against the given label; fit: the share of the given labels
    the scoring model predicts (``regime``).
    """
    clean_prob, loss = np.asarray(clean_prob, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    count = len(clean_prob)
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    if fit >= MEMORIZED_FIT:
        return _twice_mid_rank((clean_prob,)) / (2 * count)
    return (_twice_mid_rank((-loss, clean_prob)) + _twice_mid_rank((-loss,))) / (4 * count)


def issue_order(score: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(N,) row order of the issues list: ascending ``label_score``, then descending loss, then ascending row."""
    score, loss = np.asarray(score, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    return np.lexsort((np.arange(len(score)), -loss, score))


def class_summary(given: np.ndarray, suggested: np.ndarray, flagged: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    """Per given class: how many samples it has and the partition flags, the estimated noise rate (flagged /
    size; 0 for an empty class) and the most frequent suggested class among its flagged samples whose
    suggestion is another class (-1 where there is none), with its count (ties: the lower class).

    given, suggested: (N,) ints in [0, classes); flagged: (N,) bool.
    Returns (classes,) arrays ``size``, ``flagged`` (int64), ``noise_rate`` (float64), ``swap_to``, ``swap_count``.
    """
    given, flagged = np.asarray(given, dtype=np.int64), np.asarray(flagged, dtype=bool)
    size = np.bincount(given, minlength=classes)
    flagged_count = np.bincount(given[flagged], minlength=classes)
    swapped = flagged & (np.asarray(suggested, dtype=np.int64) != given)
    counts = swap_counts(given[swapped], np.asarray(suggested)[swapped], classes)
    swap_to = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), -1)
    return {"size": size, "flagged": flagged_count, "noise_rate": flagged_count / np.maximum(size, 1),
            "swap_to": swap_to, "swap_count": counts.max(axis=1)}


def borderline_rows(clean_prob: np.ndarray, count: int) -> np.ndarray:
    """The (<= count,) rows whose (N,) clean probability is nearest ``CLEAN_THRESHOLD``, nearest first."""
    distance = np.abs(np.asarray(clean_prob, dtype=np.float64) - CLEAN_THRESHOLD)
    return np.argsort(distance, kind="stable")[:count]


def swap_counts(given: np.ndarray, suggested: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts: row = given label, column = suggested label, over the (M,) samples
    passed (the suspects); off-diagonal mass says which classes get swapped."""
    given, suggested = np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    return np.bincount(given * classes + suggested, minlength=classes * classes).reshape(classes, classes)


def separating_score(scores: dict, labels: np.ndarray, detector: str | None) -> tuple[str, np.ndarray]:
    """``(name, (N,) float64)``: the score the partition's ``detector`` (its recorded name) splits the samples by,
    higher = more likely noisy (``detectors.MethodDetector.separating_score``): the loss (nats) for the loss
    mixture, the input's high-pass energy (log) for the input-energy mixture, else the prototype margin of the
    (N, U) attributions (read one class's rows at a time, so a ``StoredRows`` is never read whole)."""
    found = method_detector(detector)
    return found.score_name, found.separating_score(scores, labels)
