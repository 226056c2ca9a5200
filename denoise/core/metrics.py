"""How good a classifier and a noise detector are, against labels or ground truth (one copy of each)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support, roc_auc_score, roc_curve


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and top-3 accuracy (fractions in [0, 1]) of (N, C) logits vs (N,) labels."""
    labels = labels.cpu()
    predicted = logits.argmax(1).cpu()
    k = min(3, logits.shape[1])
    top3 = (logits.topk(k, 1).indices.cpu() == labels[:, None]).any(1).float().mean()
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=present, average="macro",
                                                               zero_division=0)
    return {"accuracy": float((predicted == labels).float().mean()), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "top3": float(top3)}


def detection_metrics(is_noisy: np.ndarray, is_clean: np.ndarray, clean_score: np.ndarray) -> dict[str, float | None]:
    """Quality of a clean/noisy split against ground truth, positive class = noisy.

    is_noisy: (N,) bool truth; is_clean: (N,) bool split; clean_score: (N,) higher = more likely clean.
    Returns precision, recall, f1 of flagging ``~is_clean``, auroc of ``-clean_score`` (None, JSON null, when
    the truth holds one class only, where it is undefined), and the share ``flagged`` of the samples, to be
    set beside the true noise rate.
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    flagged = ~np.asarray(is_clean, dtype=bool)
    precision, recall, f1, _ = precision_recall_fscore_support(is_noisy, flagged, average="binary", zero_division=0)
    both = 0 < is_noisy.sum() < len(is_noisy)
    auroc = float(roc_auc_score(is_noisy, -np.asarray(clean_score, dtype=np.float64))) if both else None
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "auroc": auroc,
            "flagged": float(flagged.mean())}


def detection_curves(is_noisy: np.ndarray, is_clean: np.ndarray, clean_score: np.ndarray) -> dict:
    """The ROC and precision-recall curves of flagging by ``-clean_score`` and the confusion counts of the
    split, positive class = noisy. is_noisy, is_clean: (N,) bool; clean_score: (N,) higher = more likely clean.

    Returns ``roc`` ``(false positive rate, true positive rate)`` and ``pr`` ``(recall, precision)``, each a
    pair of (K,) float64 arrays (None when the truth holds one class only), and ``confusion`` (ints:
    ``true_positive``, ``false_positive``, ``false_negative``, ``true_negative``).
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    flagged = ~np.asarray(is_clean, dtype=bool)
    confusion = {"true_positive": int((flagged & is_noisy).sum()), "false_positive": int((flagged & ~is_noisy).sum()),
                 "false_negative": int((~flagged & is_noisy).sum()), "true_negative": int((~flagged & ~is_noisy).sum())}
    if not 0 < is_noisy.sum() < len(is_noisy):
        return {"roc": None, "pr": None, "confusion": confusion}
    noisiness = -np.asarray(clean_score, dtype=np.float64)
    false_positive, true_positive, _ = roc_curve(is_noisy, noisiness)
    precision, recall, _ = precision_recall_curve(is_noisy, noisiness)
    return {"roc": (false_positive, true_positive), "pr": (recall, precision), "confusion": confusion}
