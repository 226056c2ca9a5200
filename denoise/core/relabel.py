"""Relabel instead of drop: which samples a round fine-tunes on, and with which labels.

A round fine-tunes on the samples its partition calls clean and drops the flagged ones. A flagged sample
whose evidence (the prediction of the model that made the round's scores) points confidently to another
class can instead join the fine-tuning with that class as its label. In round 1 a model that memorized its
labels predicts the given label, so nothing is relabeled there; from round 2 on that model is a cleaned one,
and how often it is right depends on how much of the noise it forgot (docs/relabel.md,
docs/decisions/0012-relabel-off.md).

Notation: N samples, C classes; labels are the given (possibly noisy) ones.
"""

from __future__ import annotations

import numpy as np

# A flagged sample is relabeled only when the suggested class holds at least this share of the softmax. A wrong
# relabel teaches a wrong label, worse than dropping the sample, so the rule asks for a confident model
# (docs/decisions/0012-relabel-off.md).
RELABEL_PROBABILITY = 0.9


def suggestion(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, margin: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The class each sample's scores point to, and its softmax probability.

    labels, predicted: (N,) ints; confidence: (N,) softmax probability of the given label; margin: (N,) that
    probability minus the largest other one (``attribution.sample_statistics``). Where the prediction is not
    the given label, the largest other probability is the predicted class's: ``confidence - margin``.
    Returns ``(suggested (N,) int64, probability (N,) float64 in [0, 1])``.
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted, dtype=np.int64)
    confidence, margin = np.asarray(confidence, dtype=np.float64), np.asarray(margin, dtype=np.float64)
    probability = np.where(predicted == labels, confidence, confidence - margin)
    return predicted, np.clip(probability, 0.0, 1.0)


def fine_tuning_set(labels: np.ndarray, is_clean: np.ndarray, held: np.ndarray | None = None,
                    suggested: np.ndarray | None = None, suggested_prob: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples a round fine-tunes on and their targets: the clean ones with their given labels, and, when
    ``suggested`` is given (relabeling), the flagged ones whose suggested class is another than the given
    label with at least ``RELABEL_PROBABILITY``, with the suggested label. Held-out samples are never in it.

    labels: (N,) given labels; is_clean: (N,) bool partition; held: (N,) bool held-out samples or None;
    suggested, suggested_prob: (N,) of ``suggestion``, or None to drop every flagged sample.
    Returns ``(rows (N,) bool: fine-tuned on, targets (N,) int64: their labels, relabeled (N,) bool)``.
    """
    labels, is_clean = np.asarray(labels, dtype=np.int64), np.asarray(is_clean, dtype=bool)
    kept = ~np.asarray(held, dtype=bool) if held is not None else np.ones(len(labels), dtype=bool)
    relabeled = np.zeros(len(labels), dtype=bool)
    if suggested is not None:
        suggested = np.asarray(suggested, dtype=np.int64)
        relabeled = ~is_clean & kept & (suggested != labels) & (np.asarray(suggested_prob) >= RELABEL_PROBABILITY)
    targets = np.where(relabeled, suggested if suggested is not None else labels, labels)
    return (is_clean & kept) | relabeled, targets, relabeled
