"""The data spec registry: ``KIND[:PATH][?OPTION=VALUE&...]`` -> a reader, its help and its default architecture.

A reader module registers each kind with ``@data_spec``; ``load_data`` parses a spec, checks its options
and calls the reader. Nothing downloads: every reader reads local files (or scikit-learn's bundled data).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import InputError, UsageError

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """One split of a data set, as raw (not yet normalized) float inputs."""

    inputs: torch.Tensor  # (N, *sample_shape) float32
    labels: torch.Tensor  # (N,) int64 in [0, len(classes))
    classes: list[str]
    spec: str
    split: str
    transform: dict = field(default_factory=dict)  # how raw files became ``inputs``; recorded in checkpoints


@dataclass(frozen=True)
class SpecKind:
    """A registered data spec kind. ``reader(path, split, **options)`` returns ``(inputs (N, ...), labels (N,),
    class names, transform record)``; ``path`` is None for kinds that take none."""

    name: str
    reader: Callable
    usage: str  # how the spec is written, e.g. "fsdd:DIR"
    arch: str  # the architecture benchmarks and the demo use by default
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # query option -> allowed values

    @property
    def needs_path(self) -> bool:
        """True when the spec is written ``kind:PATH``."""
        return ":" in self.usage


SPEC_KINDS: dict[str, SpecKind] = {}


def data_spec(usage: str, *, arch: str, options: dict[str, tuple[str, ...]] | None = None) -> Callable:
    """Register the decorated reader for the kind that ``usage`` (e.g. ``"fsdd:DIR"``) names."""
    def register(reader: Callable) -> Callable:
        name = usage.partition(":")[0]
        SPEC_KINDS[name] = SpecKind(name, reader, usage, arch, options or {})
        return reader
    return register


def spec_help() -> str:
    """One line listing every kind as it is written, for ``--data`` help texts."""
    return "Data spec: " + ", ".join(kind.usage for kind in SPEC_KINDS.values()) + "."


def default_arch(spec: str) -> str:
    """The default architecture of a spec's kind (``mlp`` for an unknown kind)."""
    kind = SPEC_KINDS.get(spec.partition(":")[0])
    return kind.arch if kind else "mlp"


_read: dict[tuple[str, str], Dataset] | None = None  # what load_data has read, while ``read_once`` is active


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within the block, ``load_data`` reads each (spec, split) from disk once and returns that same
    Dataset when asked again: ``denoise run`` reads the train split in every stage of every round
    (1.4 s each time for FSDD's log-mel features). No caller modifies a Dataset in place."""
    global _read
    outer = _read
    _read = {} if outer is None else outer
    try:
        yield
    finally:
        _read = outer


def load_data(spec: str, split: str = "train") -> Dataset:
    """Read split ``split`` of the data set named by ``spec`` (kinds: ``SPEC_KINDS``)."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if _read is not None and (spec, split) in _read:
        return _read[spec, split]
    name, _, rest = spec.partition(":")
    location, _, query = rest.partition("?")
    if name not in SPEC_KINDS:
        raise UsageError(f"unknown data spec {spec!r} (kinds: {', '.join(SPEC_KINDS)}; e.g. digits, npz:FILE)")
    kind = SPEC_KINDS[name]
    path = None
    if kind.needs_path:
        if not location:
            raise UsageError(f"data spec {spec!r} needs a path after '{name}:'")
        path = Path(location)
        if not path.exists():
            raise InputError(path, "no such file or directory")
    inputs, labels, classes, transform = kind.reader(path, split, **_query(spec, kind, query))
    if len(labels) == 0:
        raise InputError(spec, f"the {split} split has no samples")
    dataset = Dataset(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
                      [str(c) for c in classes], spec, split, transform)
    if not torch.isfinite(dataset.inputs).all():
        raise InputError(spec, "inputs contain NaN or infinite values")
    if _read is not None:
        _read[spec, split] = dataset
    return dataset


def _query(spec: str, kind: SpecKind, query: str) -> dict[str, str]:
    options = dict(item.partition("=")[::2] for item in query.split("&") if item)
    unknown = set(options) - set(kind.options)
    if unknown:
        known = ", ".join(kind.options) or "none"
        raise UsageError(f"data spec {spec!r}: unknown option(s) {', '.join(sorted(unknown))} (known: {known})")
    for name, value in options.items():
        if value not in kind.options[name]:
            raise UsageError(f"data spec {spec!r}: {name} must be one of {', '.join(kind.options[name])}")
    return options
