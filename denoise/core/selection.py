"""First, do no harm: hand back the input model, not the cleaned one, when samples no round fine-tuned on show it worse.

The deciding samples are held out of the training set (``HOLDOUT_FRACTION`` of those round 1's partition calls
clean; no round fine-tunes on them) or, where the user has one, a validation set the input model never trained on
(then nothing is held out). The input model and the last round's model (the method's product) are scored on them
against their given labels. The rule is non-inferiority: the cleaned model is handed back unless
``accuracy(cleaned) < accuracy(input) - tolerance``. The tolerance is the paired (McNemar) sampling error
``NO_HARM_Z * sqrt(b + c) / n`` (b, c: the samples only the input, or only the cleaned model, classifies right),
plus ``MEMORIZED_MARGIN`` where the input memorized its labels and was trained on the samples (its score there is
its fit, not its accuracy; docs/decisions/0007-no-harm.md), and 0 where a generalizing input is scored on held-out
samples, which favour it (docs/decisions/0008-no-slack-generalizing.md). It catches a cleaning that lost what the
input knew, not harm smaller than its tolerance; with a memorized input a pass only rules out a wreck, and the
caller says so (docs/decisions/0009-memorized-pass.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import OptionError
from .regime import MEMORIZED
from .batches import take
from .training import logits_of

HOLDOUT_FRACTION = 0.1  # of the samples round 1 calls clean
NO_HARM_Z = 2.0
MEMORIZED_MARGIN = 0.2
INPUT = "input"
HOLDOUT, VALIDATION = "holdout", "validation"  # the samples that decide: held out of the training set, or not of it


def check_holdout(fraction: float, validation: bool = False) -> None:
    """Raise OptionError unless ``fraction`` is in [0, 0.5] (0 turns the held-out check off), and 0 where
    ``validation`` samples decide (nothing is held out of the training set then)."""
    if not 0 <= fraction <= 0.5:
        raise OptionError("holdout", f"must be in [0, 0.5], got {fraction}")
    if validation and fraction:
        raise OptionError("holdout", f"must be 0 with validation samples (they decide; nothing is held out), got "
                                     f"{fraction}")


def holdout_fraction(given: float | None, validation: bool) -> float:
    """The fraction held out: ``given`` or, left out, ``HOLDOUT_FRACTION`` (0 where ``validation`` samples
    decide), checked by ``check_holdout``."""
    fraction = (0.0 if validation else HOLDOUT_FRACTION) if given is None else given
    check_holdout(fraction, validation)
    return fraction


def holdout_mask(is_clean: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: ``round(fraction * clean)`` of the (N,) ``is_clean`` samples, drawn by ``seed``."""
    check_holdout(fraction)
    clean = np.flatnonzero(is_clean)
    chosen = np.random.default_rng(seed).permutation(clean)[:int(round(fraction * len(clean)))]
    held = np.zeros(len(is_clean), dtype=bool)
    held[chosen] = True
    return held


def held_out_correct(model: nn.Module, inputs, labels: torch.Tensor, held: np.ndarray, batch_size: int,
                     device: torch.device) -> np.ndarray:
    """(M,) bool: whether ``model`` classifies each of the M (N,) ``held`` samples of (N, ...) inputs as its given
    label of the (N,) ``labels``, in row order."""
    rows = torch.as_tensor(np.flatnonzero(held))
    predicted = logits_of(model, take(inputs, rows), batch_size, device).argmax(1)
    return (predicted == labels[rows]).numpy()


@dataclass(frozen=True)
class NoHarm:
    """The no-harm check's record (``asdict``: run's ``no_harm``): the number of deciding samples
    (``held_out``), the ``accuracy`` of the input and of the cleaned model on them (None without samples),
    ``only_right`` (how many samples each model alone classifies right), the input's ``regime``, the
    ``tolerance`` (None without samples), the ``chosen`` model's name and the ``source`` of the samples
    (``HOLDOUT`` or ``VALIDATION``)."""

    held_out: int
    accuracy: dict[str, float | None]
    only_right: dict[str, int]
    regime: str
    tolerance: float | None
    chosen: str
    source: str


def choose(input_correct: np.ndarray, cleaned: str, cleaned_correct: np.ndarray, regime: str = "generalizing",
           trained_on: bool = True) -> tuple[str, NoHarm]:
    """``INPUT`` or ``cleaned`` (the name of the cleaned model), by the module's rule, from whether each model
    classifies each of the M deciding samples as labelled ((M,) bool each, the same samples in the same order),
    the input model's ``regime`` and whether it was ``trained_on`` them (held-out samples; False: validation
    samples). Returns ``(chosen name, its NoHarm record)``."""
    input_correct, cleaned_correct = np.asarray(input_correct, dtype=bool), np.asarray(cleaned_correct, dtype=bool)
    samples = len(input_correct)
    accuracy = {INPUT: float(input_correct.mean()) if samples else None,
                cleaned: float(cleaned_correct.mean()) if samples else None}
    only_right = {INPUT: int((input_correct & ~cleaned_correct).sum()),
                  cleaned: int((cleaned_correct & ~input_correct).sum())}
    source = HOLDOUT if trained_on else VALIDATION
    if samples == 0:  # no evidence either way: the method's own output
        return cleaned, NoHarm(samples, accuracy, only_right, regime, None, cleaned, source)
    if trained_on and regime != MEMORIZED:  # held-out samples of a generalizing input: no slack
        tolerance = 0.0
    else:  # paired sampling error, plus the input's fit where it memorized the held-out samples
        tolerance = NO_HARM_Z * math.sqrt(sum(only_right.values())) / samples
        tolerance += MEMORIZED_MARGIN if trained_on else 0.0
    chosen = cleaned if accuracy[cleaned] >= accuracy[INPUT] - tolerance else INPUT
    return chosen, NoHarm(samples, accuracy, only_right, regime, tolerance, chosen, source)
