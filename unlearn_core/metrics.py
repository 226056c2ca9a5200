"""How good a classifier and a noise detector are, against labels or ground truth (one copy of each)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score


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
