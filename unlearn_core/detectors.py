"""Baseline noisy-label detectors, as plain-array functions (scored by ``metrics.detection_metrics``).

Our own detector is ``partition.clean_probability``.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture


def loss_clean_probability(loss: np.ndarray, seed: int = 0) -> np.ndarray:
    """The DivideMix criterion: a 2-component 1-D Gaussian mixture over min-max-normalized per-sample losses.

    loss: (N,) cross-entropy of each sample against its given label (nats).
    Returns (N,) float64 posterior of the low-mean (clean) component, in [0, 1].
    """
    loss = np.asarray(loss, dtype=np.float64)
    span = loss.max() - loss.min() if len(loss) else 0.0
    if len(loss) < 4 or span <= 0:
        return np.ones(len(loss))
    scaled = ((loss - loss.min()) / span)[:, None]
    mixture = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed).fit(scaled)
    return mixture.predict_proba(scaled)[:, int(np.argmin(mixture.means_[:, 0]))]


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
