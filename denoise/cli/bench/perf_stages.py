"""One stage of ``bench perf`` timed in a fresh child process (``python -m denoise.cli.bench.perf_stages STAGE ...``).

Each stage reads what the one before wrote in the work directory: model.safetensors -> scores.npz ->
partition.npz -> sensitivity.npz -> pruned.safetensors; it prints one JSON timing record.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from denoise.core.batches import BATCH_SIZE
from denoise.core.layers import default_layer
from denoise.core.noise import symmetric_noise
from denoise.core.rounds import RunOptions
from denoise.core.sensitivity import layer_moments
from denoise.core.training import Recipe, fit

from .. import stages
from ..data import load_data, read_once
from ..data.samples import Samples, prepare
from ..demo import NOISY_EPOCHS
from ..device import resolve_device
from ..errors import UsageError
from ..files.checkpoint import ModelInfo, load_checkpoint
from ..files.provenance import provenance
from ..files.stage_files import load_npz, save_npz
from ..files.streaming import NpzStream
from .synthetic import SyntheticImages, synthetic_labels

STAGES = ("attribute", "partition", "sensitivity", "prune", "finetune", "finetune-head", "retrain")

TRAINING_STAGES = ("finetune", "finetune-head", "retrain")

RSS_STAGES = ("attribute", "partition", "sensitivity")

SYNTHETIC_SHAPE, SYNTHETIC_CLASSES = (3, 32, 32), 10

@dataclass
class PerfConfig:
    """What one benchmark run measures; the defaults are the README's CPU setting."""

    arch: str = "resnet18-cifar"
    n: int = 20_000  # samples (synthetic data only; a data spec brings its own train split)
    device: str = "auto"
    data: str = "synthetic"
    noise_rate: float = 0.4  # symmetric label noise on a data spec
    batch_size: int = BATCH_SIZE
    mid_layer: str | None = None  # default: MID_LAYERS[arch]
    loop_batches: int = 2  # batches timed for batched_vs_loop
    rss_n: int | None = None  # N of rss_10n_vs_n, on synthetic images (default: n)
    train_steps: int = 20  # optimizer steps timed for finetune and retrain
    repeats: int = 3  # runs of the seven stages at N, in turn; each stage's fastest counts
    train_batch_size: int = RunOptions.batch_size
    train_epochs: int = NOISY_EPOCHS  # standard retraining: the demo's noisy-model recipe
    finetune_epochs: int | None = RunOptions.epochs
    round_epochs: int | None = RunOptions.round_epochs
    rounds: int | None = RunOptions.rounds
    round_train: str = RunOptions.round_train  # fine-tuning of the rounds before the last, as in denoise run
    prune_ratio: float = RunOptions.prune_ratio
    dtype: str = "float32"
    precision: str = "fp32"
    threads: int | None = None  # torch intra-op threads in every process (default: torch's own choice)
    seed: int = 0

def model_info(config: PerfConfig) -> ModelInfo:
    """The benchmark model's info: for synthetic 32x32 images, or for the data spec's train split."""
    if config.data == "synthetic":
        return ModelInfo(arch=config.arch, input_shape=list(SYNTHETIC_SHAPE),
                         classes=[str(c) for c in range(SYNTHETIC_CLASSES)],
                         input_transform={"data": None, "normalization": {"mean": [0.0], "std": [1.0]}})
    return ModelInfo.of_dataset(load_data(config.data, "train"), config.arch)

def stage_data(config: PerfConfig, n: int, info: ModelInfo) -> Samples:
    """The benchmark's samples: ``n`` lazy synthetic images with uniform labels, or the data spec's train
    split (its own size) with ``noise_rate`` symmetric label noise."""
    if config.data == "synthetic":
        labels = synthetic_labels(n, SYNTHETIC_CLASSES, config.seed)
        return Samples(SyntheticImages(n, SYNTHETIC_SHAPE, config.seed), labels, np.arange(n, dtype=np.int64), None)
    samples = prepare(load_data(config.data, "train"), info)
    noisy, is_noisy = symmetric_noise(samples.labels.numpy(), len(info.classes), config.noise_rate, config.seed)
    return replace(samples, labels=torch.as_tensor(noisy, dtype=torch.long), is_noisy=is_noisy)

def set_threads(config: PerfConfig) -> None:
    """Torch intra-op threads as ``config.threads`` says (None: torch's own choice)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)

def _peak_rss_mb() -> float:
    """Peak resident set size (MiB) of this process and of its finished children (loader workers).

    Read from the process's own ``VmHWM``: ``ru_maxrss`` of a process started by fork + exec keeps the
    high-water mark of the process it was forked from, which would hide this stage's own peak.
    """
    status = Path("/proc/self/status")
    own = next((int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:")),
               None) if status.exists() else None
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if own is None else own
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024

def run_stage(stage: str, config: PerfConfig, workdir: Path, n: int) -> dict:
    """Run one stage on the files in ``workdir`` (as the child process does); returns its timing record.

    Each stage reads what the one before wrote: model.safetensors -> scores.npz -> partition.npz ->
    sensitivity.npz -> pruned.safetensors. Returns ``seconds`` (wall, without interpreter start-up),
    ``samples`` (of the data set the stage serves) and ``samples_per_s``; for finetune and retrain the
    rate is of training samples per second over the ``train_steps`` timed, and ``epoch_seconds`` is one
    full epoch scaled from them. Before the timed run, every stage runs once untimed, into a scratch
    folder (attribute and sensitivity on the first batch only; the training stages warm up inside
    ``_train_timing``): ``denoise run`` runs all its stages in one process, reading the data once
    (``read_once``), so lazy imports, first-call set-up and reading the data set are paid once per run,
    not once per stage.
    """
    set_threads(config)
    device = resolve_device(config.device)
    with read_once():
        if stage not in TRAINING_STAGES:
            with tempfile.TemporaryDirectory(dir=workdir) as scratch:
                _run(stage, config, workdir, Path(scratch), n, device, first=config.batch_size)
        started = time.perf_counter()
        record, samples = _run(stage, config, workdir, workdir, n, device)
        seconds = time.perf_counter() - started
    record = {"seconds": seconds, "samples": samples, "samples_per_s": samples / seconds, **record}
    record["peak_rss_mb"] = _peak_rss_mb()
    if device.type == "cuda":
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record

def _first(data: Samples, k: int) -> Samples:
    """The first ``k`` samples of ``data``."""
    return replace(data, inputs=data.inputs[:k], labels=data.labels[:k], index=data.index[:k],
                   is_noisy=None if data.is_noisy is None else data.is_noisy[:k])

def _run(stage: str, config: PerfConfig, source: Path, out: Path, n: int, device, first: int | None = None
         ) -> tuple[dict, int]:
    """Run ``stage`` on the files in ``source``, writing its output to ``out``; ``first`` limits attribute
    and sensitivity to that many samples. Returns (extra record fields, samples served)."""
    model, scores, split = source / "model.safetensors", source / "scores.npz", source / "partition.npz"
    if stage in ("attribute", "sensitivity"):
        checkpoint = load_checkpoint(model, device)
        data = stage_data(config, n, checkpoint.info)
        data = data if first is None else _first(data, first)
        layer = default_layer(checkpoint.model, data.inputs)
        if stage == "attribute":
            with NpzStream(out / "scores.npz", len(data.labels)) as stream:
                stages.stream_scores(checkpoint.model, data, layer, "label", config.batch_size, device, stream,
                                     dtype=config.dtype, precision=config.precision)
                stream.finish({"label": data.labels.numpy(), "index": data.index},
                              provenance("scores", {"bench": True}, {"model": model}, {"layer": layer}))
        else:
            is_clean = load_npz(split, "partition")[0]["is_clean"][:len(data.labels)]
            moments = layer_moments(checkpoint.model, data.inputs, ~is_clean, layer, batch_size=config.batch_size,
                                    device=device, precision=config.precision)
            save_npz(out / "sensitivity.npz", moments.solve(),
                     provenance("sensitivity", {"bench": True}, {"model": model}, {"layer": layer}))
        return {}, len(data.labels)
    if stage == "partition":
        return {}, stages.partition(scores, out / "partition.npz", seed=config.seed)["samples"]
    if stage == "prune":
        stages.prune(model, source / "sensitivity.npz", out / "pruned.safetensors", ratio=config.prune_ratio)
        return {}, n
    if stage in TRAINING_STAGES:
        return _train_timing(stage, config, source, n, device)
    raise UsageError(f"unknown benchmark stage {stage!r}")

def _train_timing(stage: str, config: PerfConfig, workdir: Path, n: int, device) -> tuple[dict, int]:
    """Time ``train_steps`` steps of the demo's training recipe: fine-tuning the pruned model on the
    partition's clean samples (all layers, or the head on cached features), or training the initial model
    on every sample."""
    path = workdir / ("model.safetensors" if stage == "retrain" else "pruned.safetensors")
    checkpoint = load_checkpoint(path, device)
    data = stage_data(config, n, checkpoint.info)
    rows = np.arange(len(data.labels))
    if stage != "retrain":
        rows = rows[load_npz(workdir / "partition.npz", "partition")[0]["is_clean"]]
    subset = rows[:config.train_steps * config.train_batch_size]
    epochs = math.ceil(config.train_steps * config.train_batch_size / max(len(subset), 1))
    inputs, labels = data.inputs[torch.as_tensor(subset)], data.labels[torch.as_tensor(subset)]
    recipe = Recipe(epochs=1, seed=config.seed, lr=RunOptions.lr, batch_size=config.train_batch_size,
                    train="head" if stage == "finetune-head" else "all")
    warm_up = slice(0, 2 * config.train_batch_size)  # untimed: CUDA context, cuDNN kernel choice, allocator
    fit(checkpoint.model, inputs[warm_up], labels[warm_up], recipe, device=device)
    sync(None, device)
    started = time.perf_counter()
    fit(checkpoint.model, inputs, labels, replace(recipe, epochs=epochs), device=device)
    sync(None, device)
    per_sample = (time.perf_counter() - started) / (epochs * len(subset))
    return {"epoch_seconds": per_sample * len(rows), "timed_samples": epochs * len(subset),
            "samples_per_s": 1 / per_sample}, len(rows)

def sync(result, device):
    """``result``, after the device has finished its queued work (CUDA timings need it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result


if __name__ == "__main__":
    _stage, _config, _workdir, _n = sys.argv[1:5]
    print(json.dumps(run_stage(_stage, PerfConfig(**json.loads(_config)), Path(_workdir), int(_n))))
