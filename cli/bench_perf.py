"""``denoise bench perf``: throughput, peak memory and the ratios the performance section reports.

Measured in one run, on synthetic 32x32 images generated on demand (``--data synthetic``) or on a data
spec with symmetric label noise:

* in this process, batch by batch and interleaved so that load from other programs hits both sides
  alike: plain inference vs attribution at the classifier's input (``attribution_vs_inference``), and
  the per-class loop vs the batched attribution at a mid-network layer (``batched_vs_loop``,
  ``max_abs_diff``);
* in one fresh child process per stage (``python -m cli.bench_perf STAGE ...``), after an untimed
  warm-up run of the same stage (see ``run_stage``): each stage's samples/second and peak RSS, at N
  and at 10 N for attribute, partition and sensitivity (``rss_10n_vs_n``, always on synthetic
  images); fine-tuning and retraining are timed over
  ``train_steps`` optimizer steps and scaled to full epochs (``pipeline_vs_retrain``, see
  ``pipeline_ratio``). The seven stages at N run ``repeats`` times in turn and each stage's fastest run
  counts, so that a burst of load from other programs does not land on one side of the ratio.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import typer

from unlearn_core import attribution as attr
from unlearn_core.inputs import normalization_stats
from unlearn_core.layers import default_layer
from unlearn_core.noise import symmetric_noise

from . import stages
from .checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from .data import load_data, read_once
from .errors import UsageError
from .files import NpzStream, load_npz, provenance, save_npz
from .loader import autocast, device_batches
from .pipeline import RunOptions
from .runtime import StageData, prepare, resolve_device
from .synthetic import SyntheticImages, synthetic_labels
from .training_loop import fit

MID_LAYERS = {"resnet18-cifar": "layer3", "mlp": "features.1", "cnn": "features.2", "kws": "features.7"}
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
    batch_size: int = 256
    mid_layer: str | None = None  # default: MID_LAYERS[arch]
    loop_batches: int = 2  # batches timed for batched_vs_loop
    rss_n: int | None = None  # N of rss_10n_vs_n, on synthetic images (default: n)
    train_steps: int = 20  # optimizer steps timed for finetune and retrain
    repeats: int = 3  # runs of the seven stages at N, in turn; each stage's fastest counts
    train_batch_size: int = RunOptions.batch_size
    train_epochs: int = 300  # standard retraining: the demo's noisy-model recipe
    finetune_epochs: int = RunOptions.epochs
    round_epochs: int = RunOptions.round_epochs
    rounds: int = RunOptions.rounds
    round_train: str = RunOptions.round_train  # fine-tuning of the rounds before the last, as in denoise run
    prune_ratio: float = 0.1
    dtype: str = "float32"
    precision: str = "fp32"
    threads: int | None = None  # torch intra-op threads in every process (default: torch's own choice)
    seed: int = 0


def _info(config: PerfConfig) -> ModelInfo:
    if config.data == "synthetic":
        return ModelInfo(arch=config.arch, input_shape=list(SYNTHETIC_SHAPE),
                         classes=[str(c) for c in range(SYNTHETIC_CLASSES)],
                         input_transform={"data": None, "normalization": {"mean": [0.0], "std": [1.0]}})
    dataset = load_data(config.data, "train")
    return ModelInfo(arch=config.arch, input_shape=list(dataset.inputs.shape[1:]), classes=dataset.classes,
                     input_transform={"data": dataset.transform, "normalization": normalization_stats(dataset.inputs)})


def stage_data(config: PerfConfig, n: int, info: ModelInfo) -> StageData:
    """The benchmark's samples: ``n`` lazy synthetic images with uniform labels, or the data spec's train
    split (its own size) with ``noise_rate`` symmetric label noise."""
    if config.data == "synthetic":
        labels = synthetic_labels(n, SYNTHETIC_CLASSES, config.seed)
        return StageData(SyntheticImages(n, SYNTHETIC_SHAPE, config.seed), labels, labels,
                         np.arange(n, dtype=np.int64), None, None)
    stage = prepare(load_data(config.data, "train"), info)
    noisy, is_noisy = symmetric_noise(stage.labels.numpy(), len(info.classes), config.noise_rate, config.seed)
    stage.labels, stage.is_noisy = torch.as_tensor(noisy, dtype=torch.long), is_noisy
    return stage


def _set_threads(config: PerfConfig) -> None:
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
    _set_threads(config)
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


def _first(data: StageData, k: int) -> StageData:
    """The first ``k`` samples of ``data``."""
    return replace(data, inputs=data.inputs[:k], labels=data.labels[:k], true_labels=data.true_labels[:k],
                   index=data.index[:k], is_noisy=None if data.is_noisy is None else data.is_noisy[:k])


def _run(stage: str, config: PerfConfig, source: Path, out: Path, n: int, device, first: int | None = None
         ) -> tuple[dict, int]:
    """Run ``stage`` on the files in ``source``, writing its output to ``out``; ``first`` limits attribute
    and sensitivity to that many samples. Returns (extra record fields, samples served)."""
    model, scores, split = source / "model.safetensors", source / "scores.npz", source / "partition.npz"
    if stage in ("attribute", "sensitivity"):
        checkpoint = load_checkpoint(model, device)
        data = stage_data(config, n, checkpoint.info)
        data = data if first is None else _first(data, first)
        layer = default_layer(checkpoint.model)
        if stage == "attribute":
            with NpzStream(out / "scores.npz", len(data.labels)) as stream:
                stages.score_samples(checkpoint.model, data, layer, "label", config.batch_size, device, stream,
                                     dtype=config.dtype, precision=config.precision)
                stream.finish({"label": data.labels.numpy(), "index": data.index},
                              provenance("scores", {"bench": True}, {"model": model}, {"layer": layer}))
        else:
            is_clean = load_npz(split, "partition")[0]["is_clean"][:len(data.labels)]
            moments = stages.layer_moments(checkpoint.model, data, layer, ~is_clean, config.batch_size, device,
                                           precision=config.precision)
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
    recipe = dict(seed=config.seed, lr=RunOptions.lr, weight_decay=0.0, batch_size=config.train_batch_size,
                  train="head" if stage == "finetune-head" else "all", device=device, options={})
    warm_up = slice(0, 2 * config.train_batch_size)  # untimed: CUDA context, cuDNN kernel choice, allocator
    fit(checkpoint.model, inputs[warm_up], labels[warm_up], epochs=1, **recipe)
    _sync(None, device)
    started = time.perf_counter()
    fit(checkpoint.model, inputs, labels, epochs=epochs, **recipe)
    _sync(None, device)
    per_sample = (time.perf_counter() - started) / (epochs * len(subset))
    return {"epoch_seconds": per_sample * len(rows), "timed_samples": epochs * len(subset),
            "samples_per_s": 1 / per_sample}, len(rows)


def _child(stage: str, config: PerfConfig, workdir: Path, n: int, log: Callable[[str], None]) -> dict:
    log(f"{stage} (N={n}) in a fresh process ...")
    command = [sys.executable, "-m", "cli.bench_perf", stage, json.dumps(asdict(config)), str(workdir), str(n)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeError(f"benchmark stage {stage} failed: {lines[-1]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"{stage} (N={n}): {record['samples_per_s']:.1f} samples/s, peak RSS {record['peak_rss_mb']:.0f} MiB")
    return record


def _prepare_workdir(config: PerfConfig, workdir: Path) -> ModelInfo:
    info = _info(config)
    torch.manual_seed(config.seed)
    model = info.build()
    workdir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(workdir / "model.safetensors", model, info, provenance("checkpoint", {"bench": True}, {}))
    return info


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def head_ratio(model, data: StageData, config: PerfConfig, device) -> dict:
    """Plain inference vs attribution (with per-sample statistics) at the classifier's input, over every
    sample, the two timed alternately on the same batches after one untimed warm-up batch of each."""
    head = default_layer(model)
    inference = attribution = 0.0
    for index, (s, inputs) in enumerate(device_batches(data.inputs, config.batch_size, device)):
        labels = data.labels[s].to(device)
        for _ in range(2 if index == 0 else 1):
            with autocast(device, config.precision):
                with torch.no_grad():
                    inference_seconds = _timed(lambda: _sync(model(inputs), device))[0]
                attribution_seconds = _timed(lambda: _sync(_attribute_batch(model, inputs, labels, head), device))[0]
        inference, attribution = inference + inference_seconds, attribution + attribution_seconds
    n = len(data.labels)
    return {"inference_samples_per_s": n / inference, "attribution_samples_per_s": n / attribution,
            "attribution_vs_inference": inference / attribution}


def _attribute_batch(model, inputs, labels, layer):
    scores, logits = attr.gradient_x_activation(model, inputs, labels, layer)
    return scores, attr.sample_statistics(logits, labels)["loss"]


def _sync(result, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result


def loop_ratio(model, data: StageData, config: PerfConfig, layer: str, device) -> dict:
    """Per-class loop vs batched attribution at ``layer`` on ``loop_batches`` batches, timed alternately
    after one untimed warm-up call of each."""
    batched = looped = 0.0
    diff = 0.0
    for index, (s, inputs) in enumerate(device_batches(data.inputs, config.batch_size, device)):
        if index == config.loop_batches:
            break
        labels = data.labels[s].to(device)
        for _ in range(2 if index == 0 else 1):
            fast_seconds, (fast, _) = _timed(lambda: _sync(attr.gradient_x_activation(model, inputs, labels, layer),
                                                           device))
            slow_seconds, (slow, _) = _timed(lambda: _sync(attr.gradient_x_activation_loop(model, inputs, labels,
                                                                                           layer), device))
        batched, looped = batched + fast_seconds, looped + slow_seconds
        diff = max(diff, float((fast - slow).abs().max()))
    return {"batched_vs_loop": looped / batched, "max_abs_diff": diff, "loop_layer": layer}


def pipeline_ratio(records: dict, config: PerfConfig) -> dict:
    """Five stages' wall time, ``rounds`` times (as ``denoise run``), over standard retraining's.

    round = attribute + partition + fine-tuning epochs (``finetune_epochs`` in the last round,
    ``round_epochs`` before it), where the rounds before the last fine-tune as ``round_train`` says (the
    head on cached features by default); the last round also runs sensitivity + prune and fine-tunes all
    layers; retrain = train_epochs x training epoch. Epoch times are scaled from timed steps.
    """
    detect = sum(records[s]["seconds"] for s in ("attribute", "partition"))
    prune = sum(records[s]["seconds"] for s in ("sensitivity", "prune"))
    early = records["finetune-head" if config.round_train == "head" else "finetune"]["epoch_seconds"]
    last_round = detect + prune + config.finetune_epochs * records["finetune"]["epoch_seconds"]
    pipeline = last_round + (config.rounds - 1) * (detect + config.round_epochs * early)
    retrain = config.train_epochs * records["retrain"]["epoch_seconds"]
    return {"pipeline_seconds": pipeline, "retrain_seconds": retrain, "pipeline_vs_retrain": pipeline / retrain,
            "one_round_vs_retrain": last_round / retrain}


def measure(config: PerfConfig, workdir: Path, log: Callable[[str], None] = lambda _line: None) -> dict:
    """Run the whole benchmark in ``workdir``; returns the JSON record (the five ratios are top-level keys)."""
    _set_threads(config)
    device = resolve_device(config.device)
    layer = config.mid_layer or MID_LAYERS.get(config.arch)
    if layer is None:
        raise UsageError(f"no default mid-network layer for {config.arch!r}; pass --mid-layer")
    if config.dtype not in stages.SCORE_DTYPES:
        raise UsageError(f"--dtype must be float32 or float16, not {config.dtype!r}")
    info = _prepare_workdir(config, workdir)
    checkpoint = load_checkpoint(workdir / "model.safetensors", device)
    data = stage_data(config, config.n, info)
    n = len(data.labels)
    log(f"inference vs attribution at {default_layer(checkpoint.model)} over {n} samples ...")
    head = head_ratio(checkpoint.model, data, config, device)
    log(f"per-class loop vs batched at {layer} over {config.loop_batches} batches ...")
    loop = loop_ratio(checkpoint.model, data, config, layer, device)
    del checkpoint, data
    records = {stage: _child(stage, config, workdir, n, log) for stage in STAGES}
    for _ in range(config.repeats - 1):
        for stage in STAGES:
            again = _child(stage, config, workdir, n, log)
            timed = "epoch_seconds" if "epoch_seconds" in again else "seconds"
            if again[timed] < records[stage][timed]:
                records[stage] = again
    rss_n, rss_config = config.rss_n or n, replace(config, data="synthetic")  # sizes need generated data
    peaks = {}
    for size in (rss_n, 10 * rss_n):
        if size == n and config.data == "synthetic":
            peaks[size] = max(records[s]["peak_rss_mb"] for s in RSS_STAGES)
            continue
        folder = workdir / f"rss-{size}"
        _prepare_workdir(rss_config, folder)
        peaks[size] = max(_child(s, rss_config, folder, size, log)["peak_rss_mb"] for s in RSS_STAGES)
    stages_out = {"inference": {"samples_per_s": head["inference_samples_per_s"]},
                  "attribution": {"samples_per_s": head["attribution_samples_per_s"]}, **records}
    pipeline = pipeline_ratio(records, config)
    return {
        "attribution_vs_inference": head["attribution_vs_inference"],
        "batched_vs_loop": loop["batched_vs_loop"],
        "max_abs_diff": loop["max_abs_diff"],
        "rss_10n_vs_n": peaks[10 * rss_n] / peaks[rss_n],
        "pipeline_vs_retrain": pipeline["pipeline_vs_retrain"],
        "stages": stages_out,
        "setting": {**asdict(config), "n": n, "device": str(device), "mid_layer": layer,
                    "torch_threads": torch.get_num_threads()},
        "details": {"rss_peak_mb": {str(k): v for k, v in peaks.items()}, "rss_n": rss_n,
                    "pipeline_seconds": pipeline["pipeline_seconds"], "retrain_seconds": pipeline["retrain_seconds"],
                    "one_round_vs_retrain": pipeline["one_round_vs_retrain"]},
    }


def perf_command(arch: str = typer.Option("resnet18-cifar", "--arch", help="Architecture to benchmark."),
                 n: int = typer.Option(20_000, "--n", min=1, help="Synthetic samples (ignored with a --data spec)."),
                 device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
                 data: str = typer.Option("synthetic", "--data", help="synthetic (32x32 images made on demand) or "
                                                                       "a data spec, e.g. digits."),
                 noise_rate: float = typer.Option(0.4, "--noise-rate", help="Symmetric label noise on a data spec."),
                 batch_size: int = typer.Option(256, "--batch-size", min=1),
                 mid_layer: str = typer.Option(None, "--mid-layer", help="Layer of batched_vs_loop "
                                                                          "(default: layer3 of resnet18-cifar)."),
                 loop_batches: int = typer.Option(2, "--loop-batches", min=1, help="Batches timed for batched_vs_loop."),
                 rss_n: int = typer.Option(None, "--rss-n", min=1, help="N of rss_10n_vs_n (default: --n)."),
                 train_steps: int = typer.Option(20, "--train-steps", min=1, help="Optimizer steps timed per "
                                                                                   "training stage."),
                 repeats: int = typer.Option(3, "--repeats", min=1, help="Runs of the seven stages, in turn; "
                                                                          "each stage's fastest counts."),
                 dtype: str = typer.Option("float32", "--dtype", help="Attribution storage: float32 or float16."),
                 precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16/fp16 autocast."),
                 threads: int = typer.Option(None, "--threads", min=1, help="torch intra-op threads in every "
                                                                             "process (default: torch's choice)."),
                 workdir: Path = typer.Option(None, "--workdir", help="Keep the files here (default: a temporary "
                                                                      "directory)."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Samples/second and peak memory per stage, and the performance ratios, on data of the chosen size."""
    from .main import emit, stdout

    config = PerfConfig(arch=arch, n=n, device=device, data=data, noise_rate=noise_rate, batch_size=batch_size,
                        mid_layer=mid_layer, loop_batches=loop_batches, rss_n=rss_n, train_steps=train_steps,
                        repeats=repeats,
                        dtype=dtype, precision=precision, threads=threads)
    log = lambda line: print(f"[bench perf] {line}", file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="denoise-perf-") as scratch:
        result = measure(config, workdir or Path(scratch), log)
    if as_json:
        print(json.dumps(result))
        return
    emit({key: value for key, value in result.items() if key not in ("stages", "setting", "details")}, False,
         "bench perf")
    for stage, record in result["stages"].items():
        memory = f", peak RSS {record['peak_rss_mb']:.0f} MiB" if "peak_rss_mb" in record else ""
        stdout.print(f"{stage}: {record['samples_per_s']:.1f} samples/s{memory}")


if __name__ == "__main__":
    _stage, _config, _workdir, _n = sys.argv[1:5]
    print(json.dumps(run_stage(_stage, PerfConfig(**json.loads(_config)), Path(_workdir), int(_n))))
