"""The detectors of ``bench quality`` as ``denoise.core.rounds.MemorySteps``: one class, ``DetectorSteps``,
built from a registered ``denoise.core.detectors.Detector``. The same rounds, another way of telling clean from
noisy: the method's own partition for evidence ``SCORES``; for any other evidence, attribute yields the (N, C)
logits of the round's model and partition hands the evidence made of them (or the out-of-fold probabilities,
whatever the model) to the detector's split.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from denoise.core.batches import BATCH_SIZE, take
from denoise.core.detectors import LOGITS, LOSS, OUT_OF_FOLD, PROBS, SCORES, Detector
from denoise.core.rounds import MemorySteps, Partition, Round
from denoise.core.training import Recipe, logits_of

from .training import train_model




class DetectorSteps(MemorySteps):
    """The in-memory steps of ``detector`` (``out_of_fold``: (N, C) probabilities, for evidence ``OUT_OF_FOLD``)."""

    def __init__(self, detector: Detector, *args, out_of_fold: np.ndarray | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if detector.evidence == OUT_OF_FOLD and out_of_fold is None:
            raise ValueError(f"detector {detector.name!r} needs out-of-fold probabilities")
        self.detector, self.out_of_fold = detector, out_of_fold

    def attribute(self, model, round: Round):
        """The method's scores for ``SCORES``, else the (N, C) logits of ``model`` over the train split (whose
        fit says the regime, and whose predictions are the suggested labels)."""
        if self.detector.evidence == SCORES:
            return super().attribute(model, round)
        return logits_of(model, self.inputs, BATCH_SIZE, self.device)

    def partition(self, scores, round: Round) -> Partition:
        """The method's partition for ``SCORES``, else the detector's split of its evidence."""
        if self.detector.evidence == SCORES:
            return super().partition(scores, round)
        logits = scores
        evidence = {LOGITS: lambda: logits.numpy(), PROBS: lambda: logits.softmax(1).numpy(),
                    LOSS: lambda: F.cross_entropy(logits, self.labels, reduction="none").numpy(),
                    OUT_OF_FOLD: lambda: self.out_of_fold}[self.detector.evidence]()
        split = self.detector.split(evidence, self.labels.numpy(), round.seed)
        return Partition.of(*split, logits, self.labels)


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
        probs[held.numpy()] = logits_of(model, take(inputs, held), BATCH_SIZE, device).softmax(1).numpy()
    return probs
