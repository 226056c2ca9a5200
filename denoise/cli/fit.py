"""Training runs with progress, intermediate checkpoints and resumable state (for ``train`` and ``finetune``).

After every epoch the full state (model, optimizer, epoch, the epochs' losses) is written atomically to
``OUT.resume.safetensors``; ``--resume`` continues from it. Sample order and dropout draws are
functions of ``(seed, epoch)``, so a resumed run ends with the same weights as an uninterrupted one.
Under torchrun the ranks train data-parallel (``denoise.cli.distributed``) and rank 0 alone writes the files; the
state holds nothing of the ranks, so a run may resume on another number of them (with the same weights up
to floating-point reordering for models without BatchNorm or dropout; see ``denoise.core.training.fit``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from denoise.core.batches import batch_slices
from denoise.core.training import Recipe
from denoise.core.training import fit as core_fit

from .distributed import data_parallel, join
from .errors import InputError
from .files.paths import atomic_write
from .output import progress


def resume_path(out: str | Path) -> Path:
    """Where the resumable state of a run writing ``out`` lives."""
    return Path(f"{out}.resume.safetensors")


def _save_state(path: Path, model: nn.Module, optimizer, losses: list[float], options: dict) -> None:
    """The state after ``len(losses)`` epochs, whose mean losses were ``losses``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    metadata = {"denoise-resume": json.dumps({"epoch": len(losses), "losses": losses, "options": options,
                                              "param_groups": state["param_groups"]}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_state(path: Path, model: nn.Module, optimizer, options: dict) -> list[float | None]:
    """Restore the model and optimizer; returns the mean losses of the epochs done (None where a state
    written before they were recorded lacks them)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            record = json.loads((handle.metadata() or {})["denoise-resume"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise InputError(path, f"unreadable resume state ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if record["options"] != options:
        raise InputError(path, "resume state was written with other options or input files; delete it or run "
                               "without --resume")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, slot = name.split(".", 2)
            slots.setdefault(int(param_id), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": record["param_groups"]})
    losses = record.get("losses", [None] * int(record["epoch"]))
    if not (isinstance(losses, list) and len(losses) == record["epoch"]
            and all(loss is None or isinstance(loss, float) for loss in losses)):
        raise InputError(path, "resume state's losses do not match its epochs; delete it or run without --resume")
    return losses


def fit(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, recipe: Recipe, *, device: torch.device,
        options: dict, out: str | Path | None = None, resume: bool = False, save_every: int = 0,
        save_model: Callable[[Path], None] | None = None, description: str = "training") -> list[float | None]:
    """``denoise.core.training.fit`` with a progress bar and files: returns the mean loss (nats) of every
    epoch from the first, over the samples of all ranks; after a resume those before it come from the state.

    With ``out`` set, the resumable state (model, optimizer, losses; checked against ``options``) is written
    beside it after every epoch and read back with ``resume``; with ``save_every`` K, ``save_model(path)``
    writes ``OUT-epochK.safetensors`` every K epochs.
    """
    ranks = join(device)
    state = resume_path(out) if out is not None else None
    steps = len(batch_slices(len(labels), recipe.batch_size))
    losses: list[float | None] = []
    with progress(description, recipe.epochs * steps) as advance:

        def restore(model, optimizer) -> int:
            if resume and state and state.exists():
                losses.extend(_load_state(state, model, optimizer, options))
            advance(len(losses) * steps)  # the epochs done before
            return len(losses)

        def after_epoch(done: int, model, optimizer, loss: float) -> None:
            losses.append(loss)
            if state is not None and ranks.main:  # every rank reads the state back; rank 0 writes it
                _save_state(state, model, optimizer, losses, options)
            if save_every and save_model and ranks.main and done % save_every == 0 and done < recipe.epochs:
                save_model(Path(out).with_name(f"{Path(out).stem}-epoch{done}{Path(out).suffix}"))

        core_fit(model, inputs, labels, recipe, device=device, resume=restore, on_epoch=after_epoch,
                 on_batch=lambda _n: advance(), rank=ranks.rank, world=ranks.world, wrap=data_parallel(ranks),
                 sum_across=ranks.sum)
    return losses


def finish(out: str | Path, device: torch.device, save: Callable[[], None]) -> None:
    """Write the final output with ``save()`` and remove the resumable state (rank 0 alone; the others wait)."""

    def write() -> None:
        save()
        resume_path(out).unlink(missing_ok=True)

    join(device).main_writes(write)
