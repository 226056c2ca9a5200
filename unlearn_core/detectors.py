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
