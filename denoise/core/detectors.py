"""Baseline noisy-label detectors, as plain-array functions (scored by ``metrics.detection_metrics``).

Our own detectors are in ``regime`` (which one the data calls for) and ``partition``.
"""

from __future__ import annotations

import numpy as np


def disagreement_split(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The simplest detector: flag the samples whose predicted class is not their given label.

    probs: (N, C) predicted class probabilities; labels: (N,) given labels. Returns ``(is_clean (N,) bool,
    clean_score (N,) float64)``, the score being the given label's probability minus the largest other one
    (in [-1, 1]; higher = more likely clean).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    given = probs[np.arange(len(labels)), labels]
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return probs.argmax(1) == labels, given - others.max(1)
