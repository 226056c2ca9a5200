"""Running under ``torchrun`` (or ``srun``/PyTorchJob, which set the same variables): this process's rank, the
process group, and the few collectives the stages use.

``torchrun`` starts one process per GPU (or CPU worker) and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous address; without them a command is one process of one (``Ranks.world`` 1) and nothing here
does any communication. The group is joined on first use with the backend of the device: nccl on CUDA (the
process's GPU is selected before any collective), gloo on the CPU. Files are shared through the output's
directory, which every rank must see (one machine, or a file system shared by the nodes).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from . import output
from .errors import UsageError


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a launch: ``rank`` of ``world`` (0 of 1 alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes the outputs."""
        return self.rank == 0

    def part(self, requested: tuple[int, int] | None, samples: int) -> tuple[int, int]:
        """``(number, count)``: the shard of ``samples`` samples (``denoise.core.shards.shard_rows``) this process
        works on, the ``requested`` one (``--shard``) or its rank's (0 of 1 alone); UsageError for both, or for a
        shard left without samples."""
        if requested and self.world > 1:
            raise UsageError("--shard is for one process per shard; under torchrun every rank works on its own")
        number, count = requested or (self.rank, self.world)
        if count > samples:
            raise UsageError(f"{count} shards of {samples} samples: every shard needs at least one sample")
        return number, count

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world > 1:
            dist.barrier()

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum of a float64 array over the ranks (an all-reduce)."""
        if self.world == 1:
            return values
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def main_writes(self, write: Callable[[], None]) -> None:
        """Rank 0 calls ``write``; the others wait until it has (so every rank then sees the file)."""
        if self.main:
            write()
        self.barrier()

    @property
    def log(self) -> Callable[[str], None]:
        """``log(line)``: a line on stderr, prefixed with the rank, when there are several ranks."""
        return output.stderr_log(quiet=self.world == 1, prefix=f"rank {self.rank} of {self.world}: ")


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard``'s ``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; UsageError otherwise."""
    number, _, count = text.partition("/")
    try:
        i, n = int(number), int(count)
    except ValueError:
        raise UsageError(f"--shard must be i/n (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard must be i/n with 0 <= i < n, not {text!r}")
    return i, n


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or a scheduler setting its variables)."""
    return _env("WORLD_SIZE", 1) > 1


def join(device: torch.device) -> Ranks:
    """This process's ``Ranks``; under torchrun, joins the process group first (once per process): nccl when
    ``device`` is CUDA, after selecting the GPU of ``LOCAL_RANK``, else gloo."""
    if not launched():
        return Ranks()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(_env("LOCAL_RANK", 0))  # before any collective: NCCL binds to the current GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_process() -> bool:
    """Whether this process is rank 0 of a launch, or alone: the one that prints and holds the output locks."""
    return not launched() or _env("RANK", 0) == 0


def quiet_other_ranks() -> None:
    """Under torchrun, only rank 0 prints the command's summary on stdout and draws progress bars on stderr
    (the others' would repeat them); every rank's log lines and errors still reach stderr."""
    if not main_process():
        sys.stdout = open(os.devnull, "w")
        output.stderr.quiet = True  # the console the progress bars draw on


def data_parallel(ranks: Ranks) -> Callable[[torch.nn.Module], torch.nn.Module] | None:
    """The ``wrap`` of ``denoise.core.training.fit`` for these ranks: DistributedDataParallel, or None alone.

    BatchNorm becomes SyncBatchNorm on CUDA (nccl), so every rank normalizes over the whole batch as one
    process does; torch's SyncBatchNorm refuses CPU modules, so on gloo each rank normalizes over its share.
    """
    if ranks.world == 1:
        return None

    def wrap(learner: torch.nn.Module) -> torch.nn.Module:
        if dist.get_backend() == "nccl":
            learner = torch.nn.SyncBatchNorm.convert_sync_batchnorm(learner)  # same parameters and buffers
        # A model may apply a layer whose output the loss never sees (an auxiliary head, a user's own code):
        # its parameters get no gradient, and DDP fails on the next step unless it looks for them. That costs
        # one walk of the autograd graph per step, and torch warns once per rank when nothing was unused.
        return torch.nn.parallel.DistributedDataParallel(learner, find_unused_parameters=True)

    return wrap
