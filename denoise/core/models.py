"""Model registry: architecture names -> factories (in the manner of timm's registry).

Every factory is called as ``factory(input_shape=..., num_classes=..., **arch_kwargs)`` where
``input_shape`` is the shape of one sample without the batch dimension, e.g. ``(64,)`` or ``(1, 40, 32)``.
Names:

* built-ins registered below: ``mlp``, ``cnn``, ``kws``, ``resnet18-cifar``;
* ``tv:NAME``: any torchvision classification model, built with random weights (its first convolution
  takes the data's channel count);
* ``module:function``: a user factory, imported only because the user named it.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ModelError(ValueError):
    """An architecture name or its arguments cannot build a model."""


def register_model(name: str):
    """Decorator: make ``factory`` buildable by ``create_model(name, ...)``."""

    def decorate(factory):
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """Names of the built-in architectures."""
    return sorted(_REGISTRY)


def _call_factory(factory, input_shape, num_classes, kwargs):
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    call = dict(kwargs)
    if accepts_any or "num_classes" in params:
        call["num_classes"] = num_classes
    if accepts_any or "input_shape" in params:
        call["input_shape"] = tuple(input_shape)
    try:
        return factory(**call)
    except TypeError as exc:
        raise ModelError(f"bad arguments for the architecture: {exc}") from None


def create_model(arch: str, input_shape, num_classes: int, **kwargs) -> nn.Module:
    """Build an untrained model.

    arch: a registered name, ``tv:NAME`` or ``module:function``.
    input_shape: shape of one sample, without the batch dimension.
    num_classes: number of output logits.
    Returns an ``nn.Module`` mapping ``(B, *input_shape)`` floats to ``(B, num_classes)`` logits.
    """
    if arch in _REGISTRY:
        model = _call_factory(_REGISTRY[arch], input_shape, num_classes, kwargs)
    elif arch.startswith("tv:"):
        import torchvision

        name = arch[3:]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ModelError(f"unknown torchvision classification model {name!r}")
        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        except TypeError as exc:
            raise ModelError(f"bad arguments for {arch}: {exc}") from None
        if len(input_shape) == 3:
            _match_input_channels(model, input_shape[0])
    elif ":" in arch:
        module_name, _, function_name = arch.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelError(f"cannot import module {module_name!r} for architecture {arch!r}: {exc} (put the folder "
                             f"holding it on PYTHONPATH, e.g. PYTHONPATH=. denoise ...)") from None
        factory = getattr(module, function_name, None)
        if not callable(factory):
            raise ModelError(f"module {module_name!r} has no factory function {function_name!r}")
        model = _call_factory(factory, input_shape, num_classes, kwargs)
    else:
        raise ModelError(f"unknown architecture {arch!r} (built-ins: {', '.join(list_models())}; or tv:NAME, module:function)")
    if not isinstance(model, nn.Module):
        raise ModelError(f"architecture {arch!r} did not return a torch.nn.Module")
    return model


def _match_input_channels(model: nn.Module, channels: int) -> None:
    """Rebuild the first Conv2d of a torchvision model (made for RGB) for ``channels`` input channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != channels:
                parent_name, _, attribute = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attribute, nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride,
                                                     module.padding, module.dilation, module.groups,
                                                     module.bias is not None))
            return


@register_model("mlp")
def mlp(input_shape, num_classes: int, hidden=(256, 128), dropout: float = 0.0) -> nn.Module:
    """Multi-layer perceptron over the flattened input; the classifier is ``head``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return _with_head(layers, width, num_classes)


def _with_head(feature_layers, width, num_classes) -> nn.Module:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*feature_layers))
    model.add_module("head", nn.Linear(width, num_classes))
    return model


def _conv_block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


@register_model("cnn")
def cnn(input_shape, num_classes: int, width: int = 32, hidden: int = 128) -> nn.Module:
    """Small image CNN: two conv blocks with pooling, global average pool, a hidden layer, ``head``."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    layers = [*_conv_block(channels, width), nn.MaxPool2d(2), *_conv_block(width, 2 * width),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, hidden), nn.ReLU()]
    if len(input_shape) == 2:
        layers.insert(0, nn.Unflatten(1, (1, *input_shape)))
    return _with_head(layers, hidden, num_classes)


@register_model("kws")
def kws(input_shape, num_classes: int, width: int = 32, hidden: int = 64) -> nn.Module:
    """Keyword-spotting CNN for ``(1, mel_bins, frames)`` spectrograms: three conv blocks, global pool, ``head``."""
    channels = input_shape[0] if len(input_shape) == 3 else 1
    layers = [*_conv_block(channels, width), nn.MaxPool2d(2), *_conv_block(width, 2 * width), nn.MaxPool2d(2),
              *_conv_block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
              nn.Linear(2 * width, hidden), nn.ReLU()]
    if len(input_shape) == 2:
        layers.insert(0, nn.Unflatten(1, (1, *input_shape)))
    return _with_head(layers, hidden, num_classes)


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool) with the paper's 512 -> 256 -> classes head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            stages.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = nn.Linear(cin, 256)
        self.relu = nn.ReLU()
        self.head = nn.Linear(256, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(self.relu(self.fc1(self.pool(x))))


@register_model("resnet18-cifar")
def resnet18_cifar(input_shape, num_classes: int, width: int = 64) -> nn.Module:
    """CIFAR-style ResNet-18 (the paper's model); ``width`` scales every stage (64 is the standard network)."""
    return ResNet18Cifar(input_shape[0], num_classes, width)
