"""First, do no harm: hand back the input model, not the cleaned one, when samples no round fine-tuned on show it worse.

Those samples are held out of the training set (a seeded fraction of those round 1's partition calls clean;
no round fine-tunes on them) or, where the user has one, a validation set the input model was never trained
on (then nothing is held out). The input model and the last round's model (the method's product; earlier
rounds only sharpen the detection) are scored by their accuracy on them against their given labels. The
input model was trained on the held-out samples, so its score there is biased upward: a model that
memorized its training set scores 1.0 on them whatever it does on new data (measured on digits: input 1.000
and the cleaned model 0.976 on 84 held-out samples, while their test accuracies are 0.65 and 0.93). So a tie
can't ask the cleaned model to beat the input; the rule is non-inferiority: the cleaned model is handed back
unless it is worse than the input beyond a tolerance, ``accuracy(cleaned) < accuracy(input) - tolerance``.
The tolerance is sampling error, ``Z * sqrt(p (1 - p) / n)`` with p the cleaned model's accuracy and n the
samples (Z = ``NO_HARM_Z``), plus ``MEMORIZED_MARGIN`` where the input model memorized its labels
(``regime``) and was trained on the samples (held-out ones): there its score is its fit, not its accuracy.
Measured with memorized inputs (held-out accuracy, input vs cleaned, and test accuracy): digits 1.000 vs
0.976 (test 0.64 -> 0.93), fsdd 1.000 vs 0.865 on 111 samples (test 0.71 -> 0.89); a fine-tune wrecked by a
learning rate of 30 scores about a third. Where the input model generalizes (CIFAR-10 CNN) the tolerance is
sampling error alone, and so it is on validation samples: the input never saw them. The held-out samples
still favour a generalizing input, since round 1 calls clean the samples it fits (CIFAR-10: input 0.686 and
cleaned 0.624 on them, 0.328 and 0.3245 on a split neither trained on). Otherwise the input model is kept,
and the caller says so. It catches a cleaning that lost what the input model knew; it can't see harm
smaller than its tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .errors import OptionError
from .regime import MEMORIZED
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


def holdout_mask(is_clean: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: ``round(fraction * clean)`` of the (N,) ``is_clean`` samples, drawn by ``seed``."""
    check_holdout(fraction)
    clean = np.flatnonzero(is_clean)
    chosen = np.random.default_rng(seed).permutation(clean)[:int(round(fraction * len(clean)))]
    held = np.zeros(len(is_clean), dtype=bool)
    held[chosen] = True
    return held


def held_out_correct(model: nn.Module, inputs, labels: torch.Tensor, held: np.ndarray, batch_size: int,
                     device: torch.device) -> tuple[int, int]:
    """``(correct, samples)``: how many of the (N,) ``held`` samples of (N, ...) inputs ``model`` classifies as
    their (N,) given labels, and how many samples are held out."""
    rows = torch.as_tensor(np.flatnonzero(held))
    predicted = logits_of(model, inputs[rows], batch_size, device).argmax(1)
    return int((predicted == labels[rows]).sum()), len(rows)


def choose(input_correct: int, cleaned: str, cleaned_correct: int, samples: int, regime: str = "generalizing",
           trained_on: bool = True) -> tuple[str, dict]:
    """``INPUT`` or ``cleaned`` (the name of the cleaned model), by the module's rule, from how many of the
    ``samples`` deciding samples each classifies as labelled, the input model's ``regime`` and whether it was
    ``trained_on`` them (held-out samples; False: validation samples). Returns ``(chosen name, record)``; the
    JSON-able record holds ``held_out`` (samples), ``accuracy`` of both, ``regime``, ``tolerance``,
    ``chosen`` and ``source`` (``HOLDOUT`` or ``VALIDATION``)."""
    accuracy = {INPUT: input_correct / samples if samples else None,
                cleaned: cleaned_correct / samples if samples else None}
    record = {"held_out": samples, "accuracy": accuracy, "regime": regime, "tolerance": None,
              "source": HOLDOUT if trained_on else VALIDATION}
    if samples == 0:  # no evidence either way: the method's own output
        return cleaned, {**record, "chosen": cleaned}
    tolerance = NO_HARM_Z * math.sqrt(accuracy[cleaned] * (1 - accuracy[cleaned]) / samples)
    tolerance += MEMORIZED_MARGIN if trained_on and regime == MEMORIZED else 0.0
    chosen = cleaned if accuracy[cleaned] >= accuracy[INPUT] - tolerance else INPUT
    return chosen, {**record, "tolerance": tolerance, "chosen": chosen}
