"""Inputs read a batch at a time: a data set too large to hold decoded is read from its files as it is used.

A *source* holds N samples of one shape and reads any of them on demand (``read(rows) -> (B, *shape)``
tensor, uint8 pixels or float features). ``Inputs`` is a view of a source that the stages index like a
tensor: ``inputs[i:j]`` or ``inputs[rows]`` reads those samples and applies its steps (pixels to [0, 1],
normalization, Gaussian input noise), so no stage holds more decoded samples than the batches in flight.
``denoise.core.batches`` feeds such views to the model through a DataLoader whose workers do the reading.

A small set of decoded files is kept whole as uint8 (``cached``) when it fits ``DENOISE_CACHE_MB``:
reading it again then costs no decoding, and the values are those the files give, so the cached and the
streamed paths give the same batches bit for bit.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from denoise.core.batches import BATCH_SIZE, batch_slices, loaded
from denoise.core.inputs import normalize
from denoise.core.noise import gaussian_input_noise




class Source(Protocol):
    """N samples of ``sample_shape``; ``read(rows)`` returns the (B, *sample_shape) samples at ``rows`` (B,)."""

    sample_shape: tuple[int, ...]
    dtype: torch.dtype  # of what ``read`` returns: uint8 pixels (scaled to [0, 1] by Inputs) or float32
    decodes: bool  # True when reading a sample costs decoding (loader workers pay off)

    def __len__(self) -> int: ...

    def read(self, rows: np.ndarray) -> torch.Tensor: ...


@dataclass
class TensorSource:
    """Samples already in memory: a (N, ...) uint8 or float32 tensor."""

    tensor: torch.Tensor
    decodes: bool = False

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return self.tensor.dtype

    def __len__(self) -> int:
        return len(self.tensor)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        return self.tensor[torch.as_tensor(rows, dtype=torch.long)]


@dataclass
class FileSource:
    """One file per sample, decoded by ``decode(path) -> (*sample_shape) tensor`` when read; ``check(path)``
    says cheaply (from its header) why a file cannot be decoded, or None."""

    paths: Sequence[str]
    decode: Callable[[str], torch.Tensor]
    sample_shape: tuple[int, ...]
    dtype: torch.dtype = torch.uint8
    check: Callable[[str], str | None] | None = None
    decodes: bool = True

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        if len(rows) == 0:
            return torch.empty((0, *self.sample_shape), dtype=self.dtype)
        return torch.stack([self.decode(self.paths[int(r)]) for r in rows])


def _step_normalize(batch: torch.Tensor, _keys: np.ndarray, stats: dict) -> torch.Tensor:
    return normalize(batch, stats)


def _step_input_noise(batch: torch.Tensor, keys: np.ndarray, is_noisy: np.ndarray, sigma: float, seed: int):
    return gaussian_input_noise(batch, keys, is_noisy, sigma, seed)


@dataclass
class Inputs:
    """A view of ``source``: the samples at ``rows``, read as float32 with ``steps`` applied in order.

    keys: (N,) int64, each sample's position in its split, by which Gaussian input noise is drawn (so a
    subset of the view keeps each sample's noise). workers: loader processes that read its batches
    (None: the loader's default for in-memory data). Indexing with an int gives one (*shape) sample, with
    a slice, an index array or tensor, or a bool mask a (B, *shape) batch; ``take`` gives a sub-view.
    """

    source: Source
    rows: np.ndarray
    keys: np.ndarray
    steps: tuple = ()
    workers: int | None = None

    @classmethod
    def of(cls, source: Source, workers: int | None = None) -> "Inputs":
        """Every sample of ``source``, keyed by its position."""
        rows = np.arange(len(source), dtype=np.int64)
        return cls(source, rows, rows.copy(), (), workers)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.source.sample_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def _positions(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(len(self.rows))[index]
        picked = np.asarray(index.cpu() if torch.is_tensor(index) else index)
        return np.flatnonzero(picked) if picked.dtype == bool else picked.astype(np.int64).reshape(-1)

    def take(self, index) -> "Inputs":
        """The view of the samples at ``index`` (slice, index array or tensor, or bool mask)."""
        at = self._positions(index)
        return Inputs(self.source, self.rows[at], self.keys[at], self.steps, self.workers)

    def then(self, step: Callable, *arguments) -> "Inputs":
        """This view with ``step(batch, keys, *arguments)`` applied after its steps."""
        return Inputs(self.source, self.rows, self.keys, (*self.steps, (step, arguments)), self.workers)

    def normalized(self, stats: dict) -> "Inputs":
        """Standardized with ``denoise.core.inputs.normalize``."""
        return self.then(_step_normalize, stats)

    def with_input_noise(self, is_noisy: np.ndarray, sigma: float, seed: int) -> "Inputs":
        """With ``denoise.core.noise.gaussian_input_noise`` on the samples whose key ``is_noisy`` (N,) marks."""
        return self.then(_step_input_noise, is_noisy, sigma, seed)

    def decoded(self) -> "Inputs":
        """This view's samples as a fresh view (keyed 0..N-1) of a source of just them: read whole into
        memory when they fit the cache budget (``cached``), else streamed from their files."""
        source = self.source
        if isinstance(source, FileSource):
            source = cached(replace(source, paths=[source.paths[r] for r in self.rows]))
            return Inputs(source, np.arange(len(self.rows)), np.arange(len(self.rows)), self.steps, workers_for(source))
        return self

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        at = self._positions(index)
        batch = self.source.read(self.rows[at])
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        for step, arguments in self.steps:
            batch = step(batch, self.keys[at], *arguments)
        return batch


def as_inputs(inputs) -> Inputs:
    """``inputs`` as an ``Inputs`` view: itself, or every sample of a (N, ...) tensor."""
    return inputs if isinstance(inputs, Inputs) else Inputs.of(TensorSource(inputs))


def default_workers() -> int:
    """Loader processes for decoding: one fewer than the cores this process may use (at least 1, at most 8),
    so the main process keeps a core for the model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


@dataclass
class Reading:
    """How data specs are read in this process: ``--workers`` and ``--skip-unreadable`` (``set_reading``),
    and what ``--skip-unreadable`` dropped, by data spec (every output made from one records it)."""

    workers: int | None = None  # None: default_workers() for sources that decode
    skip_unreadable: bool = False
    skipped: dict = field(default_factory=dict)  # data spec -> [{"path", "problem"}, ...] of the files dropped


READING = Reading()


def set_reading(workers: int | None = None, skip_unreadable: bool = False) -> None:
    """Set how this process reads data specs (the commands' ``--workers`` and ``--skip-unreadable``)."""
    READING.workers, READING.skip_unreadable = workers, skip_unreadable


def workers_for(source: Source) -> int | None:
    """Loader processes for reading ``source``: ``--workers`` if given, else default_workers() for a source
    that decodes and None (the loader's in-memory default) for one that does not."""
    if READING.workers is not None:
        return READING.workers
    return default_workers() if source.decodes else None


def cache_budget_bytes() -> int:
    """``DENOISE_CACHE_MB`` (denoise.cli.limits) in bytes: the decoded samples kept in memory at most."""
    from ..limits import limit

    return limit("DENOISE_CACHE_MB") * 2**20


def readable(inputs: Inputs, names: Sequence[str]) -> tuple[np.ndarray, list[dict]]:
    """Check every file of a view of files (``FileSource.check``, in threads, with a progress bar) before any
    work starts: an InputError naming the first that cannot be read, or under ``--skip-unreadable`` the
    (M,) positions of the readable ones and ``{"path", "problem"}`` of each dropped (``names``: how each
    sample's file is named to the user)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import InputError
    from ..output import progress

    source = inputs.source
    if not isinstance(source, FileSource) or source.check is None:
        return np.arange(len(inputs)), []
    paths = [source.paths[r] for r in inputs.rows]
    problems: list[str | None] = []
    with progress("check files", len(paths)) as advance, ThreadPoolExecutor(8) as pool:
        for problem in pool.map(source.check, paths, chunksize=64):
            problems.append(problem)
            advance()
    bad = [k for k, problem in enumerate(problems) if problem is not None]
    if bad and not READING.skip_unreadable:
        more = f"; {len(bad) - 1} more cannot be read either" if len(bad) > 1 else ""
        raise InputError(paths[bad[0]], f"{problems[bad[0]]}{more} (--skip-unreadable drops such files)")
    kept = np.asarray([k for k, problem in enumerate(problems) if problem is None], dtype=np.int64)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable file(s), first {paths[bad[0]]}: {problems[bad[0]]}",
              file=sys.stderr, flush=True)
    return kept, [{"path": names[k], "problem": problems[k]} for k in bad]


def cached(source: Source, describe: str = "decode") -> Source:
    """``source`` read whole into a TensorSource (of the dtype it reads: uint8 pixels, or features as
    computed) when it fits the cache budget; else ``source`` as it is (streamed). Reading runs through a
    loader with ``workers_for(source)`` processes, in order."""
    from ..output import progress

    size = len(source) * int(np.prod(source.sample_shape)) * source.dtype.itemsize
    if not source.decodes or len(source) == 0 or size > cache_budget_bytes():
        return source
    blocks = [np.arange(rows.start, rows.stop) for rows in batch_slices(len(source), BATCH_SIZE)]
    batches = loaded(len(blocks), lambda i: source.read(blocks[i]), torch.device("cpu"), workers_for(source) or 0)
    out = torch.empty((len(source), *source.sample_shape), dtype=source.dtype)
    with progress(describe, len(source)) as advance:
        for rows, batch in zip(blocks, batches):
            out[rows[0]:rows[-1] + 1] = batch
            advance(len(rows))
    return TensorSource(out)
