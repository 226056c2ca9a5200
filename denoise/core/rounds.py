"""The round plan of the method, and the one walk of it that ``denoise run`` and ``bench quality`` share.

Round r attributes with the model fine-tuned in round r-1 (the noisy model in round 1), partitions, and
fine-tunes the *noisy* model on the clean part. Round 1's partition says the model's regime
(``denoise.core.regime``), which sets the rounds: where the model memorized its labels, all-layer rounds from
shrunk weights that forget the noise, so later rounds' models carry evidence; where it generalizes, or its
inputs are corrupted, one round (``schedule``). Only the last
round, whose partition is the cleanest, measures sensitivity and prunes. Before round 1 fine-tunes, ``holdout`` of
its clean samples are held out; at the end they (or validation samples) decide whether the last round's model or
the input is handed back (``denoise.core.selection``). With ``relabel`` only the last round also fine-tunes on
confidently relabeled flagged samples (``denoise.core.relabel``; docs/decisions/0012-relabel-off.md).

``plan(options)`` says what each round does; ``run_rounds`` walks the plan over any ``Steps``: files on
disk (``denoise.cli.stages.FileSteps``, what ``denoise run`` walks) or models in memory (``MemorySteps``, what the
benchmark walks).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from .attribution import attribute_batches, check_target, sample_statistics
from .errors import OptionError
from .layers import apply_unit_masks, default_layer
from .partition import CLEAN_THRESHOLD, check_orientation
from .detectors import method_detector
from .regime import AUTO, GENERALIZING, MEMORIZED, PartitionRecord, check_features, partition_scores, regime_of
from .pruning import check_amount, prune_mask
from .relabel import fine_tuning_set, suggestion
from .selection import HOLDOUT_FRACTION, INPUT, NoHarm, check_holdout, choose, held_out_correct, holdout_mask
from .sensitivity import layer_moments
from .batches import BATCH_SIZE, take
from .training import Recipe, fit


@dataclass(frozen=True)
class Schedule:
    """The rounds a regime calls for, where the options leave them to the data: how many, the fine-tuning
    (``train`` and ``epochs``) of each round before the last, the last round's epochs, and whether it prunes."""

    rounds: int
    round_train: str
    round_epochs: int
    epochs: int
    prune: bool


# A memorized model: all-layer rounds from shrunk weights that forget the noise
# (docs/decisions/0002-memorized-rounds.md).
MEMORIZED_SCHEDULE = Schedule(rounds=4, round_train="all", round_epochs=10, epochs=15, prune=True)
# A model that generalizes (the loss mixture detects): one unpruned round; the input's own loss already shows
# its noise (docs/decisions/0003-generalizing-rounds.md).
GENERALIZING_SCHEDULE = replace(MEMORIZED_SCHEDULE, rounds=1, epochs=10, prune=False)
# Corrupted inputs, in either regime: one longer round; that split comes from the inputs alone, so a later round
# would find it again (docs/decisions/0006-corrupted-round.md). It prunes as the regime's schedule says.
CORRUPTED_ROUNDS, CORRUPTED_EPOCHS = 1, 20


@dataclass(frozen=True)
class Choice:
    """What round 1's partition chose from the data: the ``regime`` it found the model in, the ``features`` its
    mixture saw (None for the loss mixture and the baselines) and the ``detector`` that split it
    (``regime.partition_scores``; None for the baselines). Serializes to the record's keys (``asdict``)."""

    regime: str = MEMORIZED
    features: str | None = None
    detector: str | None = None

    @classmethod
    def of(cls, record: dict) -> "Choice":
        """The choice a partition's JSON record holds (``PartitionRecord.to_json``, kept in its file's meta)."""
        return cls(record["regime"], record.get("features"), record.get("detector"))

    @property
    def corrupted_inputs(self) -> bool:
        """Whether the split is of corrupted inputs rather than of noisy labels."""
        return method_detector(self.detector).corrupted_inputs


def schedule(choice: Choice | None) -> Schedule:
    """The schedule round 1's ``choice`` calls for (``MEMORIZED_SCHEDULE`` without one)."""
    if choice is None:
        return MEMORIZED_SCHEDULE
    regime = GENERALIZING_SCHEDULE if choice.regime == GENERALIZING else MEMORIZED_SCHEDULE
    if choice.corrupted_inputs:
        return replace(regime, rounds=CORRUPTED_ROUNDS, epochs=CORRUPTED_EPOCHS)
    return regime


@dataclass
class RunOptions:
    """The options of ``denoise run`` that shape its rounds; every default of the method is written here."""

    rounds: int | None = None  # None: by round 1's choice (schedule)
    layer: str | None = None  # attribution and pruning layer (default: the classifier's input)
    target: str = "label"
    per_class: bool = True
    features: str = AUTO  # "auto": by regime (denoise.core.regime), or a comma list for the attribution mixture
    dims: int = 10
    orient: str = "auto"  # how partition picks the noisy component (denoise.core.partition.ORIENTATIONS)
    prune_ratio: float | None = 0.1  # None: no sensitivity and no pruning (fine-tuning only)
    prune_generalizing: bool = False  # prune a model that generalizes too (not by default: GENERALIZING_SCHEDULE)
    prune_by: str = "noisy"
    train: str = "all"  # fine-tuning of the last round
    round_train: str = AUTO  # fine-tuning of the rounds before the last: head, all, or auto (schedule)
    epochs: int | None = None  # of the last round's fine-tuning; None: by round 1's choice (schedule)
    round_epochs: int | None = None  # fine-tuning epochs of each round before the last; None: schedule
    lr: float = Recipe.lr
    shrink: float = 0.5  # shrink warm start of memorized models' last round and all-layer earlier rounds
    batch_size: int = Recipe.batch_size
    seed: int = 0
    holdout: float = HOLDOUT_FRACTION  # of round 1's clean samples, never fine-tuned on, for the no-harm choice
    relabel: bool = False  # the last round fine-tunes on confidently relabeled flagged samples too
    augment: str = "none"  # of every round's fine-tuning (denoise.core.augment.AUGMENTATIONS)

    def check(self, validation: bool = False) -> None:
        """Raise OptionError for the first option out of range, before any round runs (a wrong ``features``
        or ``prune_ratio`` would otherwise surface only after the attributions were made); ``validation``:
        whether validation samples decide the no-harm check (``selection.check_holdout``)."""
        check_features(self.features)
        check_orientation(self.orient)
        check_target(self.target)
        if self.prune_ratio is not None:
            try:
                check_amount(self.prune_ratio, None, self.prune_by)
            except OptionError as exc:  # name the fields as RunOptions calls them
                raise OptionError({"ratio": "prune_ratio", "by": "prune_by"}[exc.option], exc.problem) from None
        if self.rounds is not None and self.rounds < 1:
            raise OptionError("rounds", "must be at least 1")
        check_holdout(self.holdout, validation)
        resolved = self.resolved()
        resolved.recipe(1, last=True).check()
        try:
            resolved.recipe(1, last=False).check()
        except OptionError as exc:  # the early rounds' own fields
            raise OptionError({"epochs": "round_epochs", "train": "round_train"}.get(exc.option, exc.option),
                              exc.problem) from None

    def resolved(self, choice: Choice | None = None) -> "RunOptions":
        """These options with the fields left to the data (``rounds``, ``round_epochs``, ``epochs`` None,
        ``round_train`` auto) set by the ``schedule`` of round 1's ``choice``; unpruned (``prune_ratio`` None)
        where that schedule does not prune, unless ``prune_generalizing``."""
        chosen = schedule(choice)
        return replace(self, round_train=chosen.round_train if self.round_train == AUTO else self.round_train,
                       prune_ratio=self.prune_ratio if chosen.prune or self.prune_generalizing else None,
                       rounds=chosen.rounds if self.rounds is None else self.rounds,
                       round_epochs=chosen.round_epochs if self.round_epochs is None else self.round_epochs,
                       epochs=chosen.epochs if self.epochs is None else self.epochs)

    def recipe(self, number: int, last: bool, regime: str = MEMORIZED) -> Recipe:
        """Round ``number``'s fine-tuning: the last round's ``train``/``epochs`` or those of the rounds before
        it; shrunk in the last round and in all-layer early rounds (shrinking head-only rounds hurt detection),
        where the model memorized its labels (``denoise.core.regime``): shrinking is how it forgets them
        (docs/decisions/0011-shrink-warm-start.md)."""
        shrink = self.shrink if regime == MEMORIZED and (last or self.round_train == "all") else 1.0
        return Recipe(epochs=self.epochs if last else self.round_epochs, lr=self.lr, batch_size=self.batch_size,
                      train=self.train if last else self.round_train, shrink=shrink, seed=self.seed + number,
                      augment=self.augment)


@dataclass(frozen=True)
class Round:
    """Everything one round does, so that each store's step reads its arguments here alone: it attributes
    with the previous round's model at ``layer`` (``target``), partitions (``partition_arguments``), holds
    ``holdout`` of round 1's clean samples out, and fine-tunes the noisy model with ``finetune`` (after
    sensitivity and pruning of ``prune_ratio`` of the units by ``prune_by`` when ``prune``: the last round's,
    where it prunes), on the flagged samples too, relabeled, when ``relabel``. ``asdict`` of it is a round of
    ``run.json``'s plan."""

    number: int  # 1-based
    last: bool
    prune: bool
    finetune: Recipe
    relabel: bool
    features: str  # what the round's partition sees (RunOptions.features; later rounds keep round 1's choice)
    layer: str | None
    target: str
    per_class: bool
    dims: int
    orient: str
    seed: int
    prune_ratio: float | None
    prune_by: str
    holdout: float

    def partition_arguments(self) -> dict:
        """The keyword arguments of ``regime.partition_scores`` (and of the ``partition`` stage) this round."""
        return {"features": self.features, "per_class": self.per_class, "dims": self.dims, "seed": self.seed,
                "orient": self.orient, "choose_block": self.number == 1}


def plan(options: RunOptions, choice: Choice | None = None) -> list[Round]:
    """The rounds of ``denoise run`` for ``options``, in order, after round 1's partition made ``choice``: its
    ``schedule`` and regime set the fine-tuning recipes and, where ``options.features`` is auto, its ``features``
    what later rounds' partitions see (the loss mixture records none, and later rounds choose again)."""
    resolved, chosen = options.resolved(choice), choice or Choice()
    later = chosen.features if options.features == AUTO and chosen.features else options.features
    last, ratio = resolved.rounds, resolved.prune_ratio
    return [Round(r, r == last, r == last and bool(ratio), resolved.recipe(r, r == last, chosen.regime),
                  options.relabel and r == last, options.features if r == 1 else later, options.layer, options.target,
                  options.per_class, options.dims, options.orient, options.seed, ratio if r == last else None,
                  options.prune_by, options.holdout)
            for r in range(1, last + 1)]


class Steps(Protocol):
    """The five stages over some representation of models, scores and partitions (files, or memory)."""

    def attribute(self, model: Any, round: Round) -> Any:
        """Per-sample scores of the train split under ``model`` (the previous round's)."""

    def partition(self, scores: Any, round: Round) -> Any:
        """The clean/noisy partition of the train split those scores give."""

    def sensitivity(self, model: Any, partition: Any, round: Round) -> Any:
        """Each unit's regression coefficient on the partition's noisy indicator, under ``model``."""

    def prune(self, model: Any, sensitivity: Any, round: Round) -> Any:
        """``model`` with the most noise-sensitive units removed (``round.prune_ratio`` by ``round.prune_by``)."""

    def choice(self, partition: Any) -> Choice:
        """What the partition chose from the data."""

    def hold_out(self, partition: Any, round: Round) -> Any:
        """The held-out samples: ``round.holdout`` of those the partition calls clean."""

    def finetune(self, model: Any, partition: Any, held: Any, round: Round) -> Any:
        """``model`` fine-tuned with ``round.finetune`` on the partition's clean samples (and with
        ``round.relabel`` the relabeled flagged ones: ``relabel.fine_tuning_set``), held-out ones excepted."""

    def held_out_correct(self, model: Any, held: Any) -> np.ndarray:
        """(M,) bool: whether ``model`` classifies each held-out sample as labelled."""


@dataclass
class Outcome:
    """What ``run_rounds`` hands back: ``model`` (the chosen one: the last round's, or the input's) and its
    ``chosen`` name (``"input"`` or ``"round{r}"``), the last round's partition, the no-harm record
    (``selection.choose``; None when ``holdout`` is 0 and no validation samples were given: then the last
    round's model is chosen unchecked), and the options the rounds ran with (``RunOptions.resolved`` by
    round 1's choice)."""

    model: Any
    chosen: str
    partition: Any
    no_harm: NoHarm | None
    options: RunOptions


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


def run_rounds(steps: Steps, options: RunOptions, noisy: Any,
               validation: Callable[[Any], np.ndarray] | None = None) -> Outcome:
    """The rounds of ``plan(options)`` from the ``noisy`` model, then the no-harm choice between the input and
    the last round's model (``denoise.core.selection``) on the held-out samples or, given ``validation``, on
    samples the input model was not trained on: ``validation(model)`` is (M,) bool, whether ``model`` classifies
    each of those samples as labelled; then nothing is held out (``options.holdout`` must be 0)."""
    options.check(validation=validation is not None)
    partition = detect(steps, plan(options)[0], noisy)  # round 1 detects alike in every regime
    choice = steps.choice(partition)
    rounds, regime, used = plan(options, choice), choice.regime, options.resolved(choice)
    held = steps.hold_out(partition, rounds[0]) if options.holdout else None
    current = noisy
    for round in rounds:
        if round.number > 1:
            partition = detect(steps, round, current)
        current = clean(steps, round, noisy, partition, held)
    last = f"round{len(rounds)}"
    if validation is None and not options.holdout:
        return Outcome(current, last, partition, None, used)
    correct = validation or (lambda model: steps.held_out_correct(model, held))
    chosen, record = choose(correct(noisy), last, correct(current), regime, trained_on=validation is None)
    return Outcome(noisy if chosen == INPUT else current, chosen, partition, record, used)


@dataclass
class Partition:
    """A partition: ``is_clean`` (N,) bool, ``clean_prob`` (N,) float64 (higher = more likely clean), the class
    each sample's scores suggest with its probability (``relabel.suggestion``: ``suggested`` (N,) int64,
    ``suggested_prob`` (N,) float64), and the ``choice`` it made: the regime the model was found in, the
    features and the detector (None for the baselines)."""

    is_clean: np.ndarray
    clean_prob: np.ndarray
    suggested: np.ndarray
    suggested_prob: np.ndarray
    choice: Choice

    @classmethod
    def split(cls, scores: dict[str, np.ndarray], labels: np.ndarray, **arguments
              ) -> tuple["Partition", PartitionRecord]:
        """The method's partition of the scores of the (N,) given ``labels`` (``partition_scores`` with the
        ``arguments``, as ``Round.partition_arguments``), and its record: the one split both stores make."""
        prob, record = partition_scores(scores, labels, **arguments)
        suggested = suggestion(labels, scores["predicted"], scores["confidence"], scores["margin"])
        return cls(prob >= CLEAN_THRESHOLD, prob, *suggested, Choice(record.regime, record.features,
                                                                     record.detector)), record

    @classmethod
    def of(cls, is_clean: np.ndarray, clean_prob: np.ndarray, logits: torch.Tensor, labels: torch.Tensor
           ) -> "Partition":
        """A baseline detector's split, with the regime and the suggestions of the model whose (N, C)
        ``logits`` of the (N,) given ``labels`` it saw."""
        stats = {name: value.numpy() for name, value in sample_statistics(logits, labels).items()}
        labels = labels.numpy()
        return cls(is_clean, clean_prob, *suggestion(labels, stats["predicted"], stats["confidence"], stats["margin"]),
                   Choice(regime_of(stats["predicted"], labels)[0]))


class MemorySteps:
    """The steps on models held in memory over one prepared train split (what ``bench quality`` walks).

    inputs: (N, ...) normalized float inputs; labels: (N,) given labels. A partition is a ``Partition``, the
    held-out samples an (N,) bool mask; models are copied, never changed in place. Every argument of a step
    comes from its ``Round``.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device,
                 batch_size: int = BATCH_SIZE):
        self.inputs, self.labels, self.device, self.batch_size = inputs, labels, device, batch_size

    def _layer(self, model: nn.Module, round: Round) -> str:
        return round.layer or default_layer(model, self.inputs)

    def attribute(self, model: nn.Module, round: Round) -> dict[str, np.ndarray]:
        """The scores of every sample (see ``attribute_batches``), concatenated: arrays over N."""
        parts = [scores for _, scores in attribute_batches(model, self.inputs, self.labels, self._layer(model, round),
                                                           target=round.target, batch_size=self.batch_size,
                                                           device=self.device)]
        return {name: torch.cat([part[name] for part in parts]).numpy() for name in parts[0]}

    def partition(self, scores: dict[str, np.ndarray], round: Round) -> Partition:
        """``Partition.split`` of the scores."""
        return Partition.split(scores, self.labels.numpy(), **round.partition_arguments())[0]

    def choice(self, partition: Partition) -> Choice:
        """The choice the partition made."""
        return partition.choice

    def sensitivity(self, model: nn.Module, partition: Partition, round: Round) -> dict[str, np.ndarray]:
        """``UnitMoments.solve`` of the units at the layer: ``coefficient`` (U,) and the rest."""
        return layer_moments(model, self.inputs, ~partition.is_clean, self._layer(model, round),
                             batch_size=self.batch_size, device=self.device).solve()

    def prune(self, model: nn.Module, sensitivity: dict[str, np.ndarray], round: Round) -> nn.Module:
        """A copy of ``model`` with the ``prune_mask`` of the coefficients applied for good."""
        keep = prune_mask(sensitivity["coefficient"], ratio=round.prune_ratio, by=round.prune_by)
        pruned = copy.deepcopy(model)
        apply_unit_masks(pruned, {self._layer(model, round): torch.as_tensor(keep)})
        return pruned

    def hold_out(self, partition: Partition, round: Round) -> np.ndarray:
        """``holdout_mask`` of the partition's clean samples."""
        return holdout_mask(partition.is_clean, round.holdout, round.seed)

    def finetune(self, model: nn.Module, partition: Partition, held: np.ndarray | None, round: Round) -> nn.Module:
        """A copy of ``model`` trained with ``round.finetune`` on the (M, ...) samples of ``fine_tuning_set``."""
        suggestions = (partition.suggested, partition.suggested_prob) if round.relabel else ()
        rows, targets, _ = fine_tuning_set(self.labels.numpy(), partition.is_clean, held, *suggestions)
        keep = torch.as_tensor(rows)
        tuned = copy.deepcopy(model)
        fit(tuned, take(self.inputs, keep), torch.as_tensor(targets)[keep], round.finetune, device=self.device)
        return tuned

    def held_out_correct(self, model: nn.Module, held: np.ndarray) -> np.ndarray:
        """``selection.held_out_correct`` of ``model``."""
        return held_out_correct(model, self.inputs, self.labels, held, self.batch_size, self.device)
