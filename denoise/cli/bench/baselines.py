"""The baseline detectors of ``bench quality``, as ``denoise.core.rounds.MemorySteps`` whose attribute and
partition steps are replaced: the same rounds, another way of telling clean from noisy.

* ``disagreement``: flag where the current model's prediction is not the given label;
* ``loss``: the DivideMix criterion on the current model's per-sample losses;
* ``cleanlab``: ``find_label_issues`` on the current model's own softmax probabilities;
* ``cleanlab-cv``: ``find_label_issues`` on out-of-fold probabilities of K models trained from scratch
  (the split does not depend on the model: one round).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from denoise.core.detectors import disagreement_split
from denoise.core.regime import loss_clean_probability
from denoise.core.partition import CLEAN_THRESHOLD
from denoise.core.rounds import MemoryPartition, MemorySteps, Round
from denoise.core.batches import take
from denoise.core.training import Recipe, logits_of

from ..errors import UsageError
from .training import train_model

EVAL_BATCH = 256


def cleanlab_split(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's split of (N,) given labels under (N, C) probabilities: ``(is_clean (N,) bool, label quality
    (N,) in [0, 1])``."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise UsageError("the cleanlab detectors need cleanlab: pip install 'denoise[bench]' "
                         "(or leave them out with --detectors)") from None
    issues = find_label_issues(labels, probs, n_jobs=1)
    return ~issues, get_label_quality_scores(labels, probs)


class LossSteps(MemorySteps):
    """Detect by per-sample loss: attribute yields the (N, C) logits, partition a 1-D loss mixture."""

    def attribute(self, model, round: Round) -> torch.Tensor:
        """(N, C) logits of ``model`` over the train split."""
        return logits_of(model, self.inputs, EVAL_BATCH, self.device)

    def partition(self, logits: torch.Tensor, round: Round) -> MemoryPartition:
        """A 2-component mixture over the per-sample losses."""
        loss = F.cross_entropy(logits, self.labels, reduction="none").numpy()
        prob = loss_clean_probability(loss, self.options.seed)
        return MemoryPartition.of(prob >= CLEAN_THRESHOLD, prob, logits, self.labels)


class DisagreementSteps(LossSteps):
    """Detect by disagreement of the current model's prediction with the given label."""

    def partition(self, logits: torch.Tensor, round: Round) -> MemoryPartition:
        """``disagreement_split`` under the softmax of the (N, C) logits."""
        split = disagreement_split(logits.softmax(1).numpy(), self.labels.numpy())
        return MemoryPartition.of(*split, logits, self.labels)


class CleanlabSteps(LossSteps):
    """Detect with cleanlab on the current model's softmax probabilities."""

    def partition(self, logits: torch.Tensor, round: Round) -> MemoryPartition:
        """``cleanlab_split`` under the softmax of the (N, C) logits."""
        split = cleanlab_split(self.labels.numpy(), logits.softmax(1).numpy())
        return MemoryPartition.of(*split, logits, self.labels)


class CrossValidatedSteps(CleanlabSteps):
    """Detect with cleanlab on out-of-fold probabilities (``probs`` (N, C)), whatever the model."""

    def __init__(self, *args, probs: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.probs = probs

    def attribute(self, model, round: Round) -> tuple[np.ndarray, torch.Tensor]:
        """The out-of-fold (N, C) probabilities, whatever ``model`` is, and the (N, C) logits of ``model``
        (whose fit says the regime, and whose predictions are the suggested labels)."""
        return self.probs, super().attribute(model, round)

    def partition(self, scores: tuple[np.ndarray, torch.Tensor], round: Round) -> MemoryPartition:
        """``cleanlab_split`` under the out-of-fold probabilities."""
        probs, logits = scores
        return MemoryPartition.of(*cleanlab_split(self.labels.numpy(), probs), logits, self.labels)


def cross_validated_probs(info, inputs: torch.Tensor, labels: torch.Tensor, recipe: Recipe, folds: int, seed: int,
                          device) -> np.ndarray:
    """(N, C) out-of-fold softmax probabilities: ``folds`` models trained from scratch with ``recipe``, each on
    the other folds of (N, ...) inputs and (N,) labels."""
    n = len(labels)
    fold = np.random.default_rng(seed).permutation(n) % folds
    probs = np.zeros((n, len(info.classes)))
    for k in range(folds):
        held, kept = torch.as_tensor(np.flatnonzero(fold == k)), torch.as_tensor(np.flatnonzero(fold != k))
        model = train_model(info, take(inputs, kept), labels[kept], replace(recipe, seed=seed + 10 + k), device)
        probs[held.numpy()] = logits_of(model, take(inputs, held), EVAL_BATCH, device).softmax(1).numpy()
    return probs
