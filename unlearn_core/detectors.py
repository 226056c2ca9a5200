"""Baseline noisy-label detectors and their scoring, as plain-array functions.

Each detector returns ``(is_clean (N,) bool, clean_score (N,) float)``: the hard split and a score that
is higher for samples more likely clean (for AUROC). Our own detector is ``partition.clean_probability``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
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


def split_metrics(is_noisy: np.ndarray, is_clean: np.ndarray, clean_score: np.ndarray) -> dict[str, float]:
    """Detection quality against ground truth, positive class = noisy.

    is_noisy: (N,) bool truth; is_clean: (N,) bool split; clean_score: (N,) higher = more likely clean.
    Returns precision, recall, f1 of flagging ``~is_clean`` and auroc of ``-clean_score`` (nan if one class).
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    flagged = ~np.asarray(is_clean, dtype=bool)
    precision, recall, f1, _ = precision_recall_fscore_support(is_noisy, flagged, average="binary", zero_division=0)
    both = 0 < is_noisy.sum() < len(is_noisy)
    auroc = roc_auc_score(is_noisy, -np.asarray(clean_score, dtype=np.float64)) if both else float("nan")
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "auroc": float(auroc)}
