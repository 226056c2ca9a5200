"""Training runs with progress, intermediate checkpoints and resumable state (for ``train`` and ``finetune``).

After every epoch the full state (model, optimizer, epoch) is written atomically to
``OUT.resume.safetensors``; ``--resume`` continues from it. Sample order and dropout draws are
functions of ``(seed, epoch)``, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from unlearn_core.training import (classifier, classifier_inputs, epoch_order, make_optimizer, shrink_parameters,
                                   train_epoch)

from .errors import InputError
from .files import atomic_write
from .loader import device_batches
from .runtime import batch_slices, progress


def resume_path(out: str | Path) -> Path:
    """Where the resumable state of a run writing ``out`` lives."""
    return Path(f"{out}.resume.safetensors")


def _save_state(path: Path, model: nn.Module, optimizer, epoch: int, options: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for param_id, slots in state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{param_id}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    metadata = {"denoise-resume": json.dumps({"epoch": epoch, "options": options,
                                              "param_groups": state["param_groups"]}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_state(path: Path, model: nn.Module, optimizer, options: dict) -> int:
    try:
        with safe_open(str(path), framework="pt") as handle:
            record = json.loads((handle.metadata() or {})["denoise-resume"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise InputError(path, f"unreadable resume state ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if record["options"] != options:
        raise InputError(path, "resume state was written with other options; delete it or run without --resume")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, slot = name.split(".", 2)
            slots.setdefault(int(param_id), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": record["param_groups"]})
    return int(record["epoch"])


def fit(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, epochs: int, seed: int, lr: float,
        weight_decay: float, batch_size: int, train: str, device: torch.device, options: dict,
        shrink: float = 1.0, out: str | Path | None = None, resume: bool = False, save_every: int = 0,
        save_model: Callable[[Path], None] | None = None, description: str = "training") -> list[float]:
    """Train ``model`` in place on ``(N, ...)`` inputs and ``(N,)`` labels; returns the per-epoch mean losses.

    ``train="head"`` trains the final classifier layer alone on cached backbone features (eval mode).
    ``shrink`` < 1 first scales the trained parameters toward zero (``shrink_parameters``; not again on resume).
    With ``out`` set, resumable state is kept beside it (removed at the end) and, with ``save_every`` K,
    ``save_model(path)`` writes ``OUT-epochK.safetensors`` every K epochs.
    """
    optimizer, scheduler = make_optimizer(model, epochs, train=train, lr=lr, weight_decay=weight_decay)
    state = resume_path(out) if out is not None else None
    start = _load_state(state, model, optimizer, options) if resume and state and state.exists() else 0
    if start == 0:
        shrink_parameters(model, shrink, train)
    for _ in range(start):
        scheduler.step()
    learner = model
    if train == "head":  # the backbone is frozen: compute its features once, then train the head alone on them
        learner = classifier(model)
        inputs = classifier_inputs(model, (batch for _, batch in device_batches(inputs, batch_size, device)))
    losses = []
    steps = len(batch_slices(len(labels), batch_size))
    with progress(description, (epochs - start) * steps) as advance:
        for epoch in range(start, epochs):
            order = epoch_order(len(labels), seed, epoch)
            batches = ((inputs[order[s]].to(device, non_blocking=True), labels[order[s]].to(device, non_blocking=True))
                       for s in batch_slices(len(labels), batch_size))
            losses.append(train_epoch(learner, optimizer, batches, seed=seed, epoch=epoch,
                                      frozen_batchnorm=train == "head", on_batch=lambda _n: advance()))
            scheduler.step()
            if state is not None:
                _save_state(state, model, optimizer, epoch + 1, options)
            if save_every and save_model and (epoch + 1) % save_every == 0 and epoch + 1 < epochs:
                save_model(Path(out).with_name(f"{Path(out).stem}-epoch{epoch + 1}{Path(out).suffix}"))
    return losses


def finish(out: str | Path) -> None:
    """Remove the resumable state once the final output is written."""
    resume_path(out).unlink(missing_ok=True)
