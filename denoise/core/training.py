"""Training, fine-tuning and evaluation loops over batches of a tensor or of a lazy view of files.

Each epoch's sample order and dropout randomness come from ``(seed, epoch)`` alone, so a run resumed
from the state saved at the end of an epoch continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attribution import layer_activations
from .augment import augmenter, batch_seed, check_augment
from .batches import batch_slices, device_batches, loaded, loader_workers
from .errors import OptionError
from .layers import classifier_name
from .shards import batch_share

TRAINABLE = ("all", "head")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained or fine-tuned: the one place these defaults are written (``denoise train``,
    ``denoise finetune``, the rounds of ``denoise run`` and the benchmarks all read them from here).

    train: ``"all"`` layers, or the ``"head"`` alone on cached backbone features; shrink: factor in (0, 1]
    the trained parameters are multiplied by first (``shrink_parameters``); lr: AdamW learning rate.
    """

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    train: str = "all"
    shrink: float = 1.0
    seed: int = 0
    augment: str = "none"  # denoise.core.augment.AUGMENTATIONS; the head-only path trains on fixed features

    def check(self) -> None:
        """Raise OptionError for the first field out of range."""
        check_augment(self.augment)
        if self.epochs < 1:
            raise OptionError("epochs", "must be at least 1")
        if self.train not in TRAINABLE:
            raise OptionError("train", f"must be head or all, not {self.train!r}")
        if not 0 < self.shrink <= 1:
            raise OptionError("shrink", f"must be in (0, 1], got {self.shrink}")
        if self.lr <= 0:
            raise OptionError("lr", f"must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise OptionError("batch_size", f"must be at least 1, got {self.batch_size}")


def classifier_inputs(model: nn.Module, head: str, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(N, D) float32 inputs of the classifier layer named ``head`` (eval mode, masks applied) over ``batches``.

    Training only the head on these cached features equals training it with the backbone frozen in eval
    mode, without a forward pass through the backbone per step.
    """
    model.eval()
    return torch.cat([layer_activations(model, inputs, f"{head}:input")[0].cpu() for inputs in batches])


@torch.no_grad()
def shrink_parameters(parameters: Iterable[nn.Parameter], factor: float) -> None:
    """Multiply ``parameters`` (those being trained) by ``factor`` in place (a shrink warm start).

    Fine-tuning a network that memorized noisy labels from its weights scaled toward zero (Ash & Adams'
    shrink-and-perturb, without the perturbation) forgets the memorized noise faster than fine-tuning it
    as it is, while keeping the directions the network learned. ``factor`` 1 leaves the model unchanged;
    zeroed (pruned) units stay zero. BatchNorm running statistics are buffers and are not touched.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"shrink factor must be in (0, 1], got {factor}")
    if factor == 1:
        return
    for parameter in parameters:
        parameter.mul_(factor)


def make_optimizer(parameters: Iterable[nn.Parameter], epochs: int, *, lr: float = 1e-3, weight_decay: float = 0.0):
    """AdamW over ``parameters`` and a per-epoch cosine learning-rate schedule; returns (optimizer, scheduler)."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1))))
    return optimizer, scheduler


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n,) permutation of sample positions for one epoch, a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def train_epoch(model: nn.Module, optimizer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                *, seed: int, epoch: int, frozen_batchnorm: bool = False,
                on_batch: Callable[[int], None] | None = None,
                sum_across: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """One pass of cross-entropy training over ``batches`` of ``(inputs (B, ...), labels (B,))``, or of
    ``(inputs, labels, factor)`` whose mean loss is multiplied by ``factor`` (a rank's share, see ``fit``;
    a share of factor 0 stands in for no samples and is not counted in the mean).

    frozen_batchnorm keeps BatchNorm statistics fixed (used when only the head is trained).
    sum_across: the elementwise sum of a (2,) float64 array over the processes training together (an
    all-reduce), so that the mean is over all their samples; None: this process's alone.
    Returns the mean training loss (nats).
    """
    torch.manual_seed(seed * 100_003 + epoch)
    model.train()
    if frozen_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    total, count = 0.0, 0
    for inputs, labels, *factor in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError("training loss is not finite")
        (loss * factor[0] if factor else loss).backward()
        optimizer.step()
        if not factor or factor[0]:
            total += float(loss.detach()) * len(labels)
            count += len(labels)
        if on_batch:
            on_batch(len(labels))
    model.eval()
    if sum_across is not None:
        total, count = sum_across(np.array([total, count], dtype=np.float64))
    return float(total / max(count, 1))


@torch.no_grad()
def logits_of(model: nn.Module, inputs, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, C) float32 logits (on the CPU) of ``model`` over (N, ...) ``inputs``, in batches on ``device``."""
    return predict_logits(model, (batch for _, batch in device_batches(inputs, batch_size, device)))


def predict_logits(model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(N, C) float logits of the model in eval mode over ``batches`` of inputs."""
    model.eval()
    return torch.cat([model(inputs).float().cpu() for inputs in batches])


def fit(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, recipe: Recipe, *, device: torch.device,
        resume: Callable[[nn.Module, object], int] | None = None,
        on_epoch: Callable[[int, nn.Module, object], None] | None = None,
        on_batch: Callable[[int], None] | None = None, rank: int = 0, world: int = 1,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        sum_across: Callable[[np.ndarray], np.ndarray] | None = None) -> list[float]:
    """Train ``model`` in place on ``(N, ...)`` inputs and ``(N,)`` labels with ``recipe``; returns the
    mean loss (nats) of each epoch run, over the samples of every process (see ``sum_across``).

    ``train="head"`` trains the final classifier layer alone on cached backbone features (eval mode).
    resume(model, optimizer) -> first epoch: restores saved state (0: start afresh, and shrink first).
    on_epoch(epochs_done, model, optimizer, loss) after every epoch, with its mean loss; on_batch(B) after
    every batch.
    Data-parallel, as rank ``rank`` of ``world`` processes that all call ``fit`` with the same arguments:
    ``wrap(learner)`` returns the module that averages gradients across them (DistributedDataParallel),
    ``sum_across`` sums the epoch's loss and sample count across them (see ``train_epoch``); each batch of
    the epoch's order (a function of seed and epoch) is shared out by ``shards.batch_share``, so the averaged
    gradient is the batch mean's. The steps are those of one process up to floating-point reordering for a
    model without BatchNorm or dropout; otherwise only statistically so, unless ``wrap`` synchronizes
    BatchNorm: each rank normalizes over its share of the batch and draws its own dropout masks.
    """
    recipe.check()
    # train="head": the classifier alone (found by tracing a forward pass), on backbone features computed once
    head = classifier_name(model, inputs) if recipe.train == "head" else None
    learner = model.get_submodule(head) if head else model
    optimizer, scheduler = make_optimizer(list(learner.parameters()), recipe.epochs, lr=recipe.lr,
                                          weight_decay=recipe.weight_decay)
    start = resume(model, optimizer) if resume else 0
    if start == 0:
        shrink_parameters(learner.parameters(), recipe.shrink)
    for _ in range(start):
        scheduler.step()
    if head:
        inputs = classifier_inputs(model, head, (batch for _, batch in device_batches(inputs, recipe.batch_size, device)))
    if wrap is not None:
        learner = wrap(learner)
    augment = augmenter(recipe.augment, tuple(inputs.shape[1:])) if head is None else None
    workers = loader_workers(inputs, device)
    losses = []
    for epoch in range(start, recipe.epochs):
        order = epoch_order(len(labels), recipe.seed, epoch)
        shares = [batch_share(order[s], rank, world) for s in batch_slices(len(labels), recipe.batch_size)]

        def make(i: int, shares=shares, epoch=epoch):  # batch i of the epoch, read by a loader process
            mine, factor = shares[i]
            batch = inputs[mine]
            return (augment(batch, batch_seed(recipe.seed, epoch, i)) if augment else batch), labels[mine], factor

        batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True), factor)
                   for x, y, factor in loaded(len(shares), make, device, workers))
        losses.append(train_epoch(learner, optimizer, batches, seed=recipe.seed, epoch=epoch,
                                  frozen_batchnorm=recipe.train == "head", on_batch=on_batch,
                                  sum_across=sum_across))
        scheduler.step()
        if on_epoch:
            on_epoch(epoch + 1, model, optimizer, losses[-1])
    return losses
