"""The data spec registry: ``KIND[:PATH][?OPTION=VALUE&...]`` -> a reader, its help and its default architecture.

A reader module registers each kind with ``@data_spec``; ``load_data`` parses a spec, checks its options
and calls the reader. Nothing downloads: every reader reads local files (or scikit-learn's bundled data).

Every kind also takes ``per_class=N`` (and ``seed=S``, default 0): a stratified subset of each split, at
most N samples of each class drawn without replacement by S and kept in file order, e.g.
``imagefolder:cifar10?per_class=1000&seed=0`` for an affordable 10,000-image train split. The subset
says which samples, not how they were read, so a model trained on it accepts the full split too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError, UsageError
from denoise.core.batches import take

from .source import READING, Inputs, readable

SPLITS = ("train", "test")


@dataclass(frozen=True)
class WholeNumber:
    """A query option whose value is a whole number from ``low`` to ``high`` (None: no upper bound)."""

    low: int
    high: int | None = None

    def parse(self, spec: str, name: str, text: str) -> int:
        """``text`` as an int; UsageError naming the spec and option when it is not one in range."""
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < self.low or (self.high is not None and value > self.high):
            bound = f" and at most {self.high}" if self.high is not None else ""
            raise UsageError(f"data spec {spec!r}: {name} must be a whole number of at least {self.low}{bound}")
        return value


SUBSET_OPTIONS = {"per_class": WholeNumber(1), "seed": WholeNumber(0)}  # options every kind takes (module docstring)


@dataclass
class Origin:
    """Where each sample of a split comes from in the user's own data, so that a finding can be acted on."""

    rows: np.ndarray  # (N,) int64: the row in the user's file or manifest (npz: of x; csv: of the data rows)
    paths: list[str] | None = None  # (N,) each sample's file, relative to the spec's path (file-based kinds)
    skipped: list[dict] = field(default_factory=list)  # {"path", "problem"} of files dropped (--skip-unreadable)

    def take(self, rows: np.ndarray) -> "Origin":
        return Origin(self.rows[rows], None if self.paths is None else [self.paths[r] for r in rows], self.skipped)


@dataclass
class Dataset:
    """One split of a data set, as raw (not yet normalized) inputs: a float32 tensor for data held as
    arrays, or a lazy view (``denoise.cli.data.source.Inputs``) of files read when a batch is asked for."""

    inputs: torch.Tensor | Inputs  # (N, *sample_shape) float32 (a view reads uint8 pixels as x/255)
    labels: torch.Tensor  # (N,) int64 in [0, len(classes))
    classes: list[str]
    spec: str
    split: str
    transform: dict = field(default_factory=dict)  # how raw files became ``inputs``; recorded in checkpoints
    origin: Origin | None = None  # None: rows 0..N-1 of the split, no files


@dataclass(frozen=True)
class SpecKind:
    """A registered data spec kind. ``reader(path, split, **options)`` returns ``(inputs (N, ...), labels (N,),
    class names, transform record, Origin)``, inputs a float array or tensor or an ``Inputs`` view; ``path`` is
    None for kinds that take none."""

    name: str
    reader: Callable  # (path, split, **options) -> (inputs, labels, classes, transform, Origin)
    usage: str  # how the spec is written, e.g. "fsdd:DIR"
    arch: str  # the architecture benchmarks and the demo use by default
    options: dict[str, tuple[str, ...] | WholeNumber] = field(default_factory=dict)  # query option -> allowed values
    pattern: bool = False  # the path is a pattern of files (brace ranges), not one file or folder

    @property
    def needs_path(self) -> bool:
        """True when the spec is written ``kind:PATH``."""
        return ":" in self.usage


SPEC_KINDS: dict[str, SpecKind] = {}


def data_spec(usage: str, *, arch: str, options: dict[str, tuple[str, ...] | WholeNumber] | None = None,
              pattern: bool = False) -> Callable:
    """Register the decorated reader for the kind that ``usage`` (e.g. ``"fsdd:DIR"``) names."""
    def register(reader: Callable) -> Callable:
        name = usage.partition(":")[0]
        SPEC_KINDS[name] = SpecKind(name, reader, usage, arch, options or {}, pattern)
        return reader
    return register


def spec_help() -> str:
    """One line listing every kind as it is written, for ``--data`` help texts."""
    return "Data spec: " + ", ".join(kind.usage for kind in SPEC_KINDS.values()) + "."


def default_arch(spec: str) -> str:
    """The default architecture of a spec's kind (``mlp`` for an unknown kind)."""
    kind = SPEC_KINDS.get(_parts(spec)[0])
    return kind.arch if kind else "mlp"


def _parts(spec: str) -> tuple[str, str, str]:
    """``(kind, path, query)`` of ``KIND[:PATH][?QUERY]``."""
    head, _, query = spec.partition("?")
    name, _, location = head.partition(":")
    return name, location, query


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


def _read_split(spec: str, split: str) -> tuple[tuple, tuple[int, int] | None]:
    """The reader's ``(inputs, labels, classes, transform, origin)`` of split ``split`` of ``spec`` (labels as
    an int64 tensor), and the spec's subset ``(per_class, seed)`` (None: the whole split), not yet applied."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    name, location, query = _parts(spec)
    if name not in SPEC_KINDS:
        raise UsageError(f"unknown data spec {spec!r} (kinds: {', '.join(SPEC_KINDS)}; e.g. digits, npz:FILE)")
    kind = SPEC_KINDS[name]
    path = None
    if kind.needs_path:
        if not location:
            raise UsageError(f"data spec {spec!r} needs a path after '{name}:'")
        path = Path(location)
        if not kind.pattern and not path.exists():  # a pattern's reader names its first missing file
            raise InputError(path, "no such file or directory")
    options, subset = _query(spec, kind, query)
    inputs, labels, classes, transform, origin = kind.reader(path, split, **options)
    return (inputs, torch.as_tensor(np.asarray(labels), dtype=torch.long), [str(c) for c in classes], transform,
            origin), subset


def load_data(spec: str, split: str = "train") -> Dataset:
    """Read split ``split`` of the data set named by ``spec`` (kinds: ``SPEC_KINDS``)."""
    if _read is not None and (spec, split) in _read:
        return _read[spec, split]
    (inputs, labels, classes, transform, origin), subset = _read_split(spec, split)
    if len(labels) == 0:
        raise InputError(spec, f"the {split} split has no samples")
    if not isinstance(inputs, Inputs):
        inputs = torch.as_tensor(inputs, dtype=torch.float32)
        if not torch.isfinite(inputs).all():  # pixels decoded from files are bytes: always finite
            raise InputError(spec, "inputs contain NaN or infinite values")
    if subset is not None:
        rows = stratified_rows(labels.numpy(), *subset)
        inputs, labels, origin = take(inputs, rows), labels[torch.as_tensor(rows)], origin.take(rows)
    if isinstance(inputs, Inputs):  # files: each checked before any work starts, then read into memory or streamed
        kept, skipped = readable(inputs, origin.paths or [str(r) for r in origin.rows])
        if skipped:
            if len(kept) == 0:
                raise InputError(spec, f"no file of the {split} split can be read")
            inputs, labels, origin = take(inputs, kept), labels[torch.as_tensor(kept)], origin.take(kept)
            origin.skipped = READING.skipped[spec] = skipped
        inputs = inputs.decoded()
    dataset = Dataset(inputs, labels, classes, spec, split, transform, origin)
    if _read is not None:
        _read[spec, split] = dataset
    return dataset


def read_index(spec: str, split: str = "train") -> Dataset:
    """Split ``split`` of ``spec`` as its reader gives it, for ``denoise fix``, which maps rows of the user's own
    file: whole (``?per_class=`` not applied: its rows are rows of the file all the same) and its files neither
    checked nor decoded (``inputs`` as the reader returned them). Spec errors as ``load_data``'s."""
    (inputs, labels, classes, transform, origin), _subset = _read_split(spec, split)
    return Dataset(inputs, labels, classes, spec, split, transform, origin)


def labels_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of what ``denoise fix`` acts on in a split: its class names, labels, and each sample's row and file
    (``read_index``'s view). Equal for the same labels of the same samples; any relabeling, reordering or added
    file changes it."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([dataset.classes, dataset.origin.paths]).encode())
    digest.update(np.ascontiguousarray(dataset.labels.numpy(), dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(dataset.origin.rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def stratified_rows(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of (N,) ``labels``: at most ``per_class`` rows of each label, drawn without
    replacement by ``seed`` (a function of the labels, ``per_class`` and ``seed`` only)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _query(spec: str, kind: SpecKind, query: str) -> tuple[dict, tuple[int, int] | None]:
    """The reader's options of a spec's query, and its subset ``(per_class, seed)`` (None: the whole split)."""
    options: dict = dict(item.partition("=")[::2] for item in query.split("&") if item)
    allowed = {**kind.options, **SUBSET_OPTIONS}
    unknown = set(options) - set(allowed)
    if unknown:
        raise UsageError(f"data spec {spec!r}: unknown option(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(allowed)})")
    for name, value in options.items():
        if isinstance(allowed[name], WholeNumber):
            options[name] = allowed[name].parse(spec, name, value)
        elif value not in allowed[name]:
            raise UsageError(f"data spec {spec!r}: {name} must be one of {', '.join(allowed[name])}")
    per_class, seed = (options.pop(name, None) for name in SUBSET_OPTIONS)
    if per_class is None:
        if seed is not None:
            raise UsageError(f"data spec {spec!r}: seed= chooses a per_class= subset; give per_class too")
        return options, None
    return options, (per_class, seed or 0)
