"""Naming a hidden layer, reading it during a forward pass, and masking its units.

A *layer spec* is a string naming one point of the network:

* ``"NAME"``       the output of the module ``NAME`` (as in ``model.named_modules()``);
* ``"NAME:input"`` the input of that module.

The *units* of a layer are the entries of dimension 1 of the tensor there: the features of a
``(B, U)`` tensor or the channels of a ``(B, C, H, W)`` tensor. A *keep mask* is a bool tensor of
shape ``(U,)``; units whose entry is False are removed: the tensor there is multiplied by the mask
on every forward pass, so no amount of training can revive them.

The *classifier* is the ``nn.Linear`` whose output the model returns, found by tracing a forward pass
(``classifier_name``); its input is the default layer.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


class LayerError(ValueError):
    """A layer spec that does not name a usable point of the model."""


@contextlib.contextmanager
def applied_linears(model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Within the block, list ``(name, output)`` of every ``nn.Linear`` each forward pass applies, in order."""
    applied: list[tuple[str, torch.Tensor]] = []
    handles = [module.register_forward_hook(lambda _m, _a, out, name=name: applied.append((name, out)))
               for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    try:
        yield applied
    finally:
        for handle in handles:
            handle.remove()


def output_linear(applied: list[tuple[str, torch.Tensor]], output) -> str | None:
    """The name of the last applied ``nn.Linear`` (from ``applied_linears``) whose output the model returned as
    ``output`` (that tensor, or a view of it with the same shape); None when the output comes from elsewhere."""
    if not torch.is_tensor(output):
        return None
    for name, out in reversed(applied):
        if out is output or (torch.is_tensor(out) and out.shape == output.shape
                             and out.data_ptr() == output.data_ptr()):
            return name
    return None


def classifier_name(model: nn.Module, inputs: torch.Tensor) -> str:
    """Name of the final classifier layer: the ``nn.Linear`` whose output the model returns, found by tracing one
    forward pass of ``inputs[:1]`` (``inputs``: (B, ...), any batch the model takes) in eval mode.

    Registration order says nothing (a head may be defined before its backbone, an auxiliary classifier
    after it); the forward pass does. Raises LayerError naming the Linear layers applied when the output
    does not come from one.
    """
    parameter = next(model.parameters(), None)
    example = inputs[:1].to(parameter.device if parameter is not None else "cpu")
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), applied_linears(model) as applied:
            output = model(example)
    finally:
        model.train(training)
    name = output_linear(applied, output)
    if name is None:
        what = "a tensor" if torch.is_tensor(output) else f"a {type(output).__name__}, not a tensor"
        candidates = ", ".join(dict.fromkeys(n for n, _ in applied)) or "none"
        raise LayerError(f"the model's output ({what}) does not come from an nn.Linear layer (Linear layers "
                         f"applied: {candidates}); name a layer explicitly")
    return name


def default_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The default attribution layer: the input of the final classifier layer (``classifier_name``)."""
    return f"{classifier_name(model, inputs)}:input"


def resolve_layer(model: nn.Module, spec: str) -> tuple[nn.Module, bool]:
    """Return ``(module, at_input)`` for a layer spec; raise LayerError if the module does not exist."""
    name, _, where = spec.partition(":")
    if where not in ("", "input", "output"):
        raise LayerError(f"layer {spec!r}: expected NAME, NAME:input or NAME:output")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        close = [n for n in modules if n and (n.startswith(name) or name in n)][:5]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise LayerError(f"unknown layer {spec!r}{hint}")
    return modules[name], where == "input"


@contextlib.contextmanager
def layer_hook(model: nn.Module, spec: str, transform: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Within the block, call ``transform(tensor)`` on the tensor at ``spec`` during every forward pass.

    If ``transform`` returns a tensor, it replaces the one at the layer. Raises LayerError if the
    layer is reached more than once in one forward pass (a module reused inside the network).
    """
    module, at_input = resolve_layer(model, spec)
    calls = {"n": 0}

    def reset(_module, _args):
        calls["n"] = 0

    def apply(tensor):
        calls["n"] += 1
        if calls["n"] > 1:
            raise LayerError(f"layer {spec!r} is used more than once per forward pass; name another layer")
        if not torch.is_tensor(tensor):
            raise LayerError(f"layer {spec!r} does not carry a single tensor")
        return transform(tensor)

    if at_input:
        def hook(_module, args):
            replaced = apply(args[0])
            return None if replaced is None else (replaced, *args[1:])

        handle = module.register_forward_pre_hook(hook)
    else:
        handle = module.register_forward_hook(lambda _module, _args, out: apply(out))
    root = model.register_forward_pre_hook(reset)
    try:
        yield
    finally:
        handle.remove()
        root.remove()


def pool_units(tensor: torch.Tensor) -> torch.Tensor:
    """Reduce ``(B, U, *spatial)`` to ``(B, U)`` by the mean over spatial positions; ``(B, U)`` is returned as is."""
    if tensor.dim() < 2:
        raise LayerError(f"layer tensor has shape {tuple(tensor.shape)}; expected (batch, units, ...)")
    return tensor.flatten(2).mean(2) if tensor.dim() > 2 else tensor


def _broadcast(mask: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() < 2 or tensor.shape[1] != mask.numel():
        raise LayerError(f"mask of {mask.numel()} units does not fit a tensor of shape {tuple(tensor.shape)}")
    return mask.to(tensor.dtype).view(1, -1, *([1] * (tensor.dim() - 2)))


def apply_unit_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> list:
    """Remove masked units for good: register hooks that zero them on every forward pass.

    masks: layer spec -> bool keep mask of shape ``(U,)``.
    The parameters that produce or consume the removed units (rows of a Linear / channels of a Conv2d
    whose output is the layer, columns / input channels of one whose input is the layer) are zeroed too.
    Returns the hook handles.
    """
    handles = []
    for spec, keep in masks.items():
        module, at_input = resolve_layer(model, spec)
        keep = keep.bool()
        with torch.no_grad():
            _zero_parameters(module, keep, at_input)

        factors: dict = {}  # the mask as a broadcastable factor, per (device, dtype, rank): made once

        def multiply(tensor, keep=keep, factors=factors):
            key = (tensor.device, tensor.dtype, tensor.dim())
            if key not in factors or factors[key].shape[1] != tensor.shape[1]:
                factors[key] = _broadcast(keep.to(tensor.device), tensor)
            return tensor * factors[key]

        if at_input:
            handles.append(module.register_forward_pre_hook(lambda _m, args, f=multiply: (f(args[0]), *args[1:])))
        else:
            handles.append(module.register_forward_hook(lambda _m, _a, out, f=multiply: f(out)))
    return handles


def _zero_parameters(module: nn.Module, keep: torch.Tensor, at_input: bool) -> None:
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return
    weight = module.weight
    units = weight.shape[1] if at_input else weight.shape[0]
    if units != keep.numel():
        raise LayerError(f"mask of {keep.numel()} units does not fit {type(module).__name__} with {units}")
    removed = ~keep.to(weight.device)
    if at_input:
        weight[:, removed] = 0
    else:
        weight[removed] = 0
        if module.bias is not None:
            module.bias[removed] = 0
