"""Training, fine-tuning and evaluation loops over in-memory batches.

Each epoch's sample order and dropout randomness come from ``(seed, epoch)`` alone, so a run resumed
from the state saved at the end of an epoch continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .attribution import layer_activations
from .layers import classifier_name, default_layer

TRAINABLE = ("all", "head")


def trainable_parameters(model: nn.Module, train: str = "all") -> list[nn.Parameter]:
    """Parameters to optimize: all of them, or only the final classifier layer's (``"head"``)."""
    if train not in TRAINABLE:
        raise ValueError(f"train must be one of {TRAINABLE}, got {train!r}")
    if train == "head":
        return list(classifier(model).parameters())
    return list(model.parameters())


def classifier_inputs(model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(N, D) float32 inputs of the final classifier layer (eval mode, masks applied) over ``batches`` of inputs.

    Training only the head on these cached features equals training it with the backbone frozen in eval
    mode, without a forward pass through the backbone per step.
    """
    model.eval()
    return torch.cat([layer_activations(model, inputs, default_layer(model))[0].cpu() for inputs in batches])


def classifier(model: nn.Module) -> nn.Module:
    """The final classifier layer (the last ``nn.Linear``) of ``model``."""
    return dict(model.named_modules())[classifier_name(model)]


@torch.no_grad()
def shrink_parameters(model: nn.Module, factor: float, train: str = "all") -> None:
    """Multiply the parameters that ``train`` selects by ``factor`` in place (a shrink warm start).

    Fine-tuning a network that memorized noisy labels from its weights scaled toward zero (Ash & Adams'
    shrink-and-perturb, without the perturbation) forgets the memorized noise faster than fine-tuning it
    as it is, while keeping the directions the network learned. ``factor`` 1 leaves the model unchanged;
    zeroed (pruned) units stay zero. BatchNorm running statistics are buffers and are not touched.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"shrink factor must be in (0, 1], got {factor}")
    if factor == 1:
        return
    for parameter in trainable_parameters(model, train):
        parameter.mul_(factor)


def make_optimizer(model: nn.Module, epochs: int, *, train: str = "all", lr: float = 1e-3,
                   weight_decay: float = 0.0):
    """AdamW over the chosen parameters and a per-epoch cosine learning-rate schedule; returns (optimizer, scheduler)."""
    optimizer = torch.optim.AdamW(trainable_parameters(model, train), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1))))
    return optimizer, scheduler


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n,) permutation of sample positions for one epoch, a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def train_epoch(model: nn.Module, optimizer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                *, seed: int, epoch: int, frozen_batchnorm: bool = False,
                on_batch: Callable[[int], None] | None = None) -> float:
    """One pass of cross-entropy training over ``batches`` of ``(inputs (B, ...), labels (B,))``.

    frozen_batchnorm keeps BatchNorm statistics fixed (used when only the head is trained).
    Returns the mean training loss (nats).
    """
    torch.manual_seed(seed * 100_003 + epoch)
    model.train()
    if frozen_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    total, count = 0.0, 0
    for inputs, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError("training loss is not finite")
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(labels)
        count += len(labels)
        if on_batch:
            on_batch(len(labels))
    model.eval()
    return total / max(count, 1)


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(N, C) float logits of the model in eval mode over ``batches`` of inputs."""
    model.eval()
    return torch.cat([model(inputs).float().cpu() for inputs in batches])


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and top-3 accuracy (fractions in [0, 1]) of (N, C) logits vs (N,) labels."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = labels.cpu()
    predicted = logits.argmax(1).cpu()
    k = min(3, logits.shape[1])
    top3 = (logits.topk(k, 1).indices.cpu() == labels[:, None]).any(1).float().mean()
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=present, average="macro",
                                                               zero_division=0)
    return {"accuracy": float((predicted == labels).float().mean()), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "top3": float(top3)}
