"""The round plan of the method, and the one walk of it that ``denoise run`` and ``bench quality`` share.

Round r attributes with the model fine-tuned in round r-1 (the noisy model in round 1), partitions, and
fine-tunes the *noisy* model on the clean part. Rounds before the last fine-tune only the head
(``round_train``; cheap, on cached features): their model only has to forget enough of the noise to
separate it better in the next round. The last round, whose partition is the cleanest, also measures
sensitivity on the noisy model and prunes it before fine-tuning (pruning on an early, rougher partition
removed the wrong units and made the rounds diverge), and fine-tunes from weights shrunk toward zero
(``shrink``), which forgets the memorized noise faster; so do all-layer early rounds.

Before round 1 fine-tunes, a fraction of the samples its partition calls clean is held out (``holdout``):
no round fine-tunes on them, and at the end they decide whether the last round's model or the input model
is handed back (``unlearn_core.selection``: first, do no harm). With ``relabel`` the last round also
fine-tunes on the flagged samples whose evidence points confidently to another class, with that class as
their label (``unlearn_core.relabel``); held-out samples stay out. Earlier rounds always drop them: their
model detects in the next round, and one trained on relabels detected worse (digits, 40 % asymmetric: the
next round flagged 210 samples instead of 583, of 575 mislabeled ones).

``plan(options)`` says what each round does; ``run_rounds`` walks the plan over any ``Steps``: files on
disk (``cli.stages.FileSteps``, what ``denoise run`` walks) or models in memory (``MemorySteps``, what the
benchmark walks).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .attribution import attribute_batches, check_target, sample_statistics
from .errors import OptionError
from .layers import apply_unit_masks, default_layer
from .partition import CLEAN_THRESHOLD, check_orientation
from .regime import AUTO, MEMORIZED, check_features, partition_scores, regime_of
from .pruning import check_amount, prune_mask
from .relabel import fine_tuning_set, suggestion
from .selection import HOLDOUT_FRACTION, INPUT, check_holdout, choose, held_out_correct, holdout_mask
from .sensitivity import layer_moments
from .training import Recipe, fit


@dataclass
class RunOptions:
    """The options of ``denoise run`` that shape its rounds; every default of the method is written here."""

    rounds: int = 3
    layer: str | None = None  # attribution and pruning layer (default: the classifier's input)
    target: str = "label"
    per_class: bool = True
    features: str = AUTO  # "auto": by regime (unlearn_core.regime), or a comma list for the attribution mixture
    dims: int = 10
    orient: str = "auto"  # how partition picks the noisy component (unlearn_core.partition.ORIENTATIONS)
    prune_ratio: float | None = 0.1  # None: no sensitivity and no pruning (fine-tuning only)
    prune_by: str = "noisy"
    train: str = "all"  # fine-tuning of the last round
    round_train: str = "head"  # fine-tuning of the rounds before the last (cheap: the head on cached features)
    epochs: int = Recipe.epochs  # fine-tuning epochs of the last round
    round_epochs: int = 30  # fine-tuning epochs of each round before the last
    lr: float = Recipe.lr
    shrink: float = 0.5  # shrink warm start of memorized models' last round and all-layer earlier rounds
    batch_size: int = Recipe.batch_size
    seed: int = 0
    holdout: float = HOLDOUT_FRACTION  # of round 1's clean samples, never fine-tuned on, for the no-harm choice
    relabel: bool = False  # the last round fine-tunes on confidently relabeled flagged samples too

    def check(self) -> None:
        """Raise OptionError for the first option out of range, before any round runs (a wrong ``features``
        or ``prune_ratio`` would otherwise surface only after the attributions were made)."""
        check_features(self.features)
        check_orientation(self.orient)
        check_target(self.target)
        if self.prune_ratio is not None:
            try:
                check_amount(self.prune_ratio, None, self.prune_by)
            except OptionError as exc:  # name the fields as RunOptions calls them
                raise OptionError({"ratio": "prune_ratio", "by": "prune_by"}[exc.option], exc.problem) from None
        if self.rounds < 1:
            raise OptionError("rounds", "must be at least 1")
        check_holdout(self.holdout)
        self.recipe(1, last=True).check()
        try:
            self.recipe(1, last=False).check()
        except OptionError as exc:  # the early rounds' own fields
            raise OptionError({"epochs": "round_epochs", "train": "round_train"}.get(exc.option, exc.option),
                              exc.problem) from None

    def recipe(self, number: int, last: bool, regime: str = MEMORIZED) -> Recipe:
        """Round ``number``'s fine-tuning: the last round's ``train``/``epochs`` or those of the rounds before
        it; shrunk in the last round and in all-layer early rounds (shrinking head-only rounds hurt detection),
        where the model memorized its labels (``unlearn_core.regime``): shrinking is how it forgets them."""
        shrink = self.shrink if regime == MEMORIZED and (last or self.round_train == "all") else 1.0
        return Recipe(epochs=self.epochs if last else self.round_epochs, lr=self.lr, batch_size=self.batch_size,
                      train=self.train if last else self.round_train, shrink=shrink, seed=self.seed + number)


@dataclass(frozen=True)
class Round:
    """What one round does: it attributes with the previous round's model, partitions, and fine-tunes the
    noisy model with ``finetune`` (after sensitivity and pruning when ``prune``), on the flagged samples too,
    relabeled, when ``relabel``."""

    number: int  # 1-based
    last: bool
    prune: bool
    finetune: Recipe
    relabel: bool = False


def plan(options: RunOptions, regime: str = MEMORIZED) -> list[Round]:
    """The rounds of ``denoise run`` for ``options``, in order, for a model in ``regime`` (round 1's partition
    tells it; only the fine-tuning recipes depend on it)."""
    return [Round(r, r == options.rounds, bool(options.prune_ratio) and r == options.rounds,
                  options.recipe(r, r == options.rounds, regime), options.relabel and r == options.rounds)
            for r in range(1, options.rounds + 1)]


class Steps(Protocol):
    """The five stages over some representation of models, scores and partitions (files, or memory)."""

    def attribute(self, model: Any, round: Round) -> Any:
        """Per-sample scores of the train split under ``model`` (the previous round's)."""

    def partition(self, scores: Any, round: Round) -> Any:
        """The clean/noisy partition of the train split those scores give."""

    def sensitivity(self, model: Any, partition: Any, round: Round) -> Any:
        """Each unit's regression coefficient on the partition's noisy indicator, under ``model``."""

    def prune(self, model: Any, sensitivity: Any, round: Round) -> Any:
        """``model`` with the most noise-sensitive units removed (``RunOptions.prune_ratio``)."""

    def regime(self, partition: Any) -> str:
        """The regime (``unlearn_core.regime.REGIMES``) the partition found the model in."""

    def hold_out(self, partition: Any, round: Round) -> Any:
        """The held-out samples: ``RunOptions.holdout`` of those the partition calls clean."""

    def finetune(self, model: Any, partition: Any, held: Any, round: Round) -> Any:
        """``model`` fine-tuned with ``round.finetune`` on the partition's clean samples (and with
        ``round.relabel`` the relabeled flagged ones: ``relabel.fine_tuning_set``), held-out ones excepted."""

    def held_out_correct(self, model: Any, held: Any) -> tuple[int, int]:
        """``(held-out samples that model classifies as labelled, held-out samples)``."""


@dataclass
class Outcome:
    """What ``run_rounds`` hands back: ``model`` (the chosen one: the last round's, or the input's) and its
    ``chosen`` name (``"input"`` or ``"round{r}"``), the last round's partition, and the held-out record (None
    when ``holdout`` is 0: then the last round's model is chosen unchecked)."""

    model: Any
    chosen: str
    partition: Any
    no_harm: dict | None


def detect(steps: Steps, round: Round, model: Any) -> Any:
    """The first half of a round: attribute with ``model`` (the previous round's), then partition."""
    return steps.partition(steps.attribute(model, round), round)


def clean(steps: Steps, round: Round, noisy: Any, partition: Any, held: Any) -> Any:
    """The second half of a round: (sensitivity and pruning of the noisy model, when the round prunes, then)
    fine-tuning on the partition's clean samples but the held-out ones. Returns the round's model."""
    start = noisy
    if round.prune:
        start = steps.prune(noisy, steps.sensitivity(noisy, partition, round), round)
    return steps.finetune(start, partition, held, round)


def run_rounds(steps: Steps, options: RunOptions, noisy: Any) -> Outcome:
    """The rounds of ``plan(options)`` from the ``noisy`` model, then the no-harm choice between the input and
    the last round's model on the held-out samples (``unlearn_core.selection``)."""
    partition = detect(steps, plan(options)[0], noisy)  # round 1 detects alike in every regime
    regime = steps.regime(partition)
    rounds = plan(options, regime)
    held = steps.hold_out(partition, rounds[0]) if options.holdout else None
    current = noisy
    for round in rounds:
        if round.number > 1:
            partition = detect(steps, round, current)
        current = clean(steps, round, noisy, partition, held)
    last = f"round{options.rounds}"
    if not options.holdout:
        return Outcome(current, last, partition, None)
    (input_correct, samples), (cleaned_correct, _) = (steps.held_out_correct(model, held) for model in (noisy, current))
    chosen, record = choose(input_correct, last, cleaned_correct, samples, regime)
    return Outcome(noisy if chosen == INPUT else current, chosen, partition, record)


@dataclass
class MemoryPartition:
    """A partition held in memory: ``is_clean`` (N,) bool, ``clean_prob`` (N,) float64 (higher = more likely
    clean), the ``regime`` the model was found in, and the class each sample's scores suggest with its
    probability (``relabel.suggestion``: ``suggested`` (N,) int64, ``suggested_prob`` (N,) float64)."""

    is_clean: np.ndarray
    clean_prob: np.ndarray
    regime: str
    suggested: np.ndarray
    suggested_prob: np.ndarray

    @classmethod
    def of(cls, is_clean: np.ndarray, clean_prob: np.ndarray, logits: torch.Tensor, labels: torch.Tensor
           ) -> "MemoryPartition":
        """A detector's split, with the regime and the suggestions of the model whose (N, C) ``logits`` of
        the (N,) given ``labels`` it saw."""
        stats = {name: value.numpy() for name, value in sample_statistics(logits, labels).items()}
        labels = labels.numpy()
        return cls(is_clean, clean_prob, regime_of(stats["predicted"], labels)[0],
                   *suggestion(labels, stats["predicted"], stats["confidence"], stats["margin"]))


class MemorySteps:
    """The steps on models held in memory over one prepared train split (what ``bench quality`` walks).

    inputs: (N, ...) normalized float inputs; labels: (N,) given labels. A partition is a ``MemoryPartition``,
    the held-out samples an (N,) bool mask; models are copied, never changed in place.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, options: RunOptions, device: torch.device,
                 batch_size: int = 256):
        self.inputs, self.labels, self.options, self.device, self.batch_size = inputs, labels, options, device, batch_size

    def _layer(self, model: nn.Module) -> str:
        return self.options.layer or default_layer(model, self.inputs)

    def attribute(self, model: nn.Module, round: Round) -> dict[str, np.ndarray]:
        """The scores of every sample (see ``attribute_batches``), concatenated: arrays over N."""
        parts = [scores for _, scores in attribute_batches(model, self.inputs, self.labels, self._layer(model),
                                                           target=self.options.target, batch_size=self.batch_size,
                                                           device=self.device)]
        return {name: torch.cat([part[name] for part in parts]).numpy() for name in parts[0]}

    def partition(self, scores: dict[str, np.ndarray], round: Round) -> "MemoryPartition":
        """``partition_scores`` of the scores."""
        options, labels = self.options, self.labels.numpy()
        prob, choice = partition_scores(scores, labels, features=options.features,
                                        per_class=options.per_class, dims=options.dims, seed=options.seed,
                                        orient=options.orient)
        return MemoryPartition(prob >= CLEAN_THRESHOLD, prob, choice["regime"],
                               *suggestion(labels, scores["predicted"], scores["confidence"], scores["margin"]))

    def regime(self, partition: "MemoryPartition") -> str:
        """The regime recorded with the partition."""
        return partition.regime

    def sensitivity(self, model: nn.Module, partition, round: Round) -> dict[str, np.ndarray]:
        """``UnitMoments.solve`` of the units at the layer: ``coefficient`` (U,) and the rest."""
        return layer_moments(model, self.inputs, ~partition.is_clean, self._layer(model), batch_size=self.batch_size,
                             device=self.device).solve()

    def prune(self, model: nn.Module, sensitivity: dict[str, np.ndarray], round: Round) -> nn.Module:
        """A copy of ``model`` with the ``prune_mask`` of the coefficients applied for good."""
        keep = prune_mask(sensitivity["coefficient"], ratio=self.options.prune_ratio, by=self.options.prune_by)
        pruned = copy.deepcopy(model)
        apply_unit_masks(pruned, {self._layer(model): torch.as_tensor(keep)})
        return pruned

    def hold_out(self, partition, round: Round) -> np.ndarray:
        """``holdout_mask`` of the partition's clean samples."""
        return holdout_mask(partition.is_clean, self.options.holdout, self.options.seed)

    def finetune(self, model: nn.Module, partition, held: np.ndarray | None, round: Round) -> nn.Module:
        """A copy of ``model`` trained with ``round.finetune`` on the (M, ...) samples of ``fine_tuning_set``."""
        suggestions = (partition.suggested, partition.suggested_prob) if round.relabel else ()
        rows, targets, _ = fine_tuning_set(self.labels.numpy(), partition.is_clean, held, *suggestions)
        keep = torch.as_tensor(rows)
        tuned = copy.deepcopy(model)
        fit(tuned, self.inputs[keep], torch.as_tensor(targets)[keep], round.finetune, device=self.device)
        return tuned

    def held_out_correct(self, model: nn.Module, held: np.ndarray) -> tuple[int, int]:
        """``selection.held_out_correct`` of ``model``."""
        return held_out_correct(model, self.inputs, self.labels, held, self.batch_size, self.device)
