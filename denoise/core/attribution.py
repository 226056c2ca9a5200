"""Per-sample layer attributions, in the manner of captum: one function per method, shared signatures.

Every method is called as ``method(model, inputs, target, layer)``:

* ``model``  an ``nn.Module`` in eval mode mapping ``(B, ...)`` inputs to ``(B, C)`` logits;
* ``inputs`` a ``(B, ...)`` float tensor;
* ``target`` a ``(B,)`` long tensor of classes, or ``"max"`` for each sample's highest logit;
* ``layer``  a layer spec (see ``denoise.core.layers``);

and returns ``(attribution, logits)``: a ``(B, U)`` float tensor, one non-negative score per unit of
the layer (a convolutional layer's scores are averaged over spatial positions, per channel), and the
``(B, C)`` logits of the same forward pass.

gradient x activation = | d logit_target / d a  *  a |, with ``a`` the layer's tensor.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .batches import BATCH_SIZE, autocast, device_batches
from .errors import OptionError
from .layers import applied_linears, layer_hook, output_linear, pool_units, resolve_layer

TARGETS = ("label", "max")


def check_target(target: str) -> None:
    """Raise OptionError unless ``target`` is one of ``TARGETS`` (the given label's logit, or the top one)."""
    if target not in TARGETS:
        raise OptionError("target", f"must be label or max, not {target!r}")


@contextlib.contextmanager
def _parameters_frozen(model: nn.Module):
    """Stop autograd from recording anything that depends only on parameters (no graph through the backbone)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _targets(logits: torch.Tensor, target) -> torch.Tensor:
    if isinstance(target, str):
        if target != "max":
            raise ValueError(f"target must be a tensor of classes or 'max', not {target!r}")
        return logits.argmax(1)
    return target.to(logits.device)


def layer_activations(model: nn.Module, inputs: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass only: the layer's units ``(B, U)`` (spatially averaged per channel) and the ``(B, C)`` logits."""
    seen = {}

    def keep(tensor):
        seen["a"] = tensor

    with torch.no_grad(), layer_hook(model, layer, keep):
        logits = model(inputs)
    return pool_units(seen["a"]).float(), logits.float()


def _leaf_forward(model: nn.Module, inputs: torch.Tensor, layer: str):
    """Forward pass whose graph starts at the layer: returns ``(layer_leaf, logits)``."""
    seen = {}

    def swap(tensor):
        seen["a"] = tensor.detach().requires_grad_(True)
        return seen["a"]

    with layer_hook(model, layer, swap):
        logits = model(inputs)
    return seen["a"], logits


def gradient_x_activation(model: nn.Module, inputs: torch.Tensor, target, layer: str):
    """Batched gradient x activation: ``(B, U)`` attributions and ``(B, C)`` logits.

    The backbone runs without a graph. At the classifier's input (the input of the ``nn.Linear`` whose
    output this very forward pass returns) d logit_c / d a is row c of its weight: no backward pass at
    all. Elsewhere one vector-Jacobian product with one-hot cotangents gives every sample's gradient of
    its target logit in a single backward call over the layers after ``layer``.
    """
    module, at_input = resolve_layer(model, layer)
    with _parameters_frozen(model), torch.enable_grad(), applied_linears(model) as applied:
        leaf, logits = _leaf_forward(model, inputs, layer)
        targets = _targets(logits, target)
        if at_input and output_linear(applied, logits) == layer.partition(":")[0]:
            rows = module.weight.detach().float()[targets]
            return (rows * pool_units(leaf.detach()).float()).abs(), logits.detach().float()
        cotangent = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        (grad,) = torch.autograd.grad(logits, leaf, grad_outputs=cotangent)
    return pool_units((grad * leaf).abs().detach()).float(), logits.detach().float()


def gradient_x_activation_loop(model: nn.Module, inputs: torch.Tensor, target, layer: str):
    """Reference implementation, as the paper's code computes it: one backward call per class.

    Same inputs and outputs as ``gradient_x_activation``; slow, kept for tests and benchmarks.
    """
    with _parameters_frozen(model), torch.enable_grad():
        leaf, logits = _leaf_forward(model, inputs, layer)
        targets = _targets(logits, target)
        grad = torch.zeros_like(leaf)
        for c in range(logits.shape[1]):
            (grad_c,) = torch.autograd.grad(logits[:, c].sum(), leaf, retain_graph=True)
            rows = targets == c
            grad[rows] = grad_c[rows]
    return pool_units((grad * leaf).abs().detach()).float(), logits.detach().float()


def sample_statistics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample statistics of ``(B, C)`` logits against ``(B,)`` given labels.

    Returns ``(B,)`` tensors: ``loss`` (cross-entropy, nats), ``confidence`` (softmax probability of
    the given label), ``margin`` (that probability minus the largest other one, in [-1, 1]) and
    ``predicted`` (argmax class).
    """
    logits = logits.float()
    labels = labels.to(logits.device)
    probs = logits.softmax(1)
    confidence = probs.gather(1, labels[:, None])[:, 0]
    others = probs.scatter(1, labels[:, None], -1.0).max(1).values
    return {
        "loss": F.cross_entropy(logits, labels, reduction="none"),
        "confidence": confidence,
        "margin": confidence - others,
        "predicted": logits.argmax(1),
    }


def input_high_pass(inputs: torch.Tensor) -> torch.Tensor:
    """(B,) float32 natural log of the mean squared difference of neighbouring values along the last axis of each
    of the ``(B, ..., L)`` inputs, as the model receives them (after the input transform): their high-pass energy.

    Natural signals (images, spectrograms) vary smoothly, so little of their energy is in this band, and their
    loudness or contrast moves it no more than their whole energy; additive noise spreads its energy over every
    band and dominates this one (``regime.input_clean_probability``). Inputs of one value have no neighbours:
    their energy stands in."""
    x = inputs.detach().float()
    detail = x[..., 1:] - x[..., :-1] if x.shape[-1] > 1 else x
    return detail.flatten(1).pow(2).mean(1).clamp_min(1e-24).log()


def attribute_batches(model: nn.Module, inputs, labels: torch.Tensor, layer: str, *, target: str = "label",
                      batch_size: int = BATCH_SIZE, device: torch.device = torch.device("cpu"), precision: str = "fp32"
                      ) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """Score every sample of ``(N, ...)`` inputs against ``(N,)`` given labels, one batch at a time.

    target: ``"label"`` attributes each sample's given-label logit, ``"max"`` its top logit.
    Yields ``(slice, scores)`` per batch of ``batch_size`` on ``device`` (autocast in ``precision``):
    ``attribution`` (B, U) float32 (``gradient_x_activation`` at ``layer``), ``input_high_pass`` (B,) float32
    (``input_high_pass``) and the ``sample_statistics`` ``loss``, ``confidence``, ``margin`` (B,) float32 and
    ``predicted`` (B,) int64, all on the CPU.
    The caller keeps or streams each batch: N x U is never held here.
    """
    check_target(target)
    for s, batch in device_batches(inputs, batch_size, device):
        given = labels[s].to(device, non_blocking=True)
        with autocast(device, precision):
            attribution, logits = gradient_x_activation(model, batch, given if target == "label" else "max", layer)
        stats = {**sample_statistics(logits, given), "input_high_pass": input_high_pass(batch)}
        yield s, {"attribution": attribution.float().cpu(), **{name: value.cpu() for name, value in stats.items()}}
