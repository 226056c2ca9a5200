"""``denoise bench perf``: throughput, peak memory and the ratios the performance docs report.

Measured in one run, on synthetic 32x32 images generated on demand (``--data synthetic``) or on a data
spec with symmetric label noise:

* in this process, batch by batch and interleaved so that load from other programs hits both sides
  alike: plain inference vs attribution at the classifier's input (``attribution_vs_inference``), and
  the per-class loop vs the batched attribution at a mid-network layer (``batched_vs_loop``, ``max_abs_diff``);
* in one fresh child process per stage (``denoise.cli.bench.perf_stages``), after an untimed warm-up: each
  stage's samples/second and peak RSS, at N and at 10 N for attribute, partition and sensitivity
  (``rss_10n_vs_n``); fine-tuning and retraining over ``train_steps`` steps, scaled to full epochs
  (``pipeline_vs_retrain``, from the rounds of ``denoise.core.rounds.plan``). The stages at N run ``repeats``
  times in turn and each stage's fastest run counts, so that a burst of load does not land on one side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
import typer

from denoise.core import attribution as attr
from denoise.core.batches import autocast, device_batches
from denoise.core.layers import default_layer
from denoise.core.rounds import RunOptions, plan

from ..files.lock import writes
from ..options import BatchSize, Device, Precision
from ..data.samples import Samples
from ..device import resolve_device
from ..errors import UsageError
from ..files.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from ..files.provenance import provenance
from ..output import emit, stderr_log, stdout, to_json
from ..stages import SCORE_DTYPES
from ..timing import timed
from .perf_stages import RSS_STAGES, STAGES, PerfConfig, model_info, set_threads, stage_data, sync

MID_LAYERS = {"resnet18-cifar": "layer3", "mlp": "features.1", "cnn": "features.2", "kws": "features.7"}

def _child(stage: str, config: PerfConfig, workdir: Path, n: int, log: Callable[[str], None]) -> dict:
    log(f"{stage} (N={n}) in a fresh process ...")
    command = [sys.executable, "-m", "denoise.cli.bench.perf_stages", stage, json.dumps(asdict(config)), str(workdir), str(n)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeError(f"benchmark stage {stage} failed: {lines[-1]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"{stage} (N={n}): {record['samples_per_s']:.1f} samples/s, peak RSS {record['peak_rss_mb']:.0f} MiB")
    return record

def _prepare_workdir(config: PerfConfig, workdir: Path) -> ModelInfo:
    info = model_info(config)
    torch.manual_seed(config.seed)
    model = info.build()
    workdir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(workdir / "model.safetensors", model, info, provenance("checkpoint", {"bench": True}, {}))
    return info

def head_ratio(model, data: Samples, config: PerfConfig, device) -> dict:
    """Plain inference vs attribution (with per-sample statistics) at the classifier's input, over every
    sample, the two timed alternately on the same batches after one untimed warm-up batch of each."""
    head = default_layer(model, data.inputs)
    inference = attribution = 0.0
    for index, (s, inputs) in enumerate(device_batches(data.inputs, config.batch_size, device)):
        labels = data.labels[s].to(device)
        for _ in range(2 if index == 0 else 1):
            with autocast(device, config.precision):
                with torch.no_grad():
                    inference_seconds = timed(lambda: sync(model(inputs), device))[1]
                attribution_seconds = timed(lambda: sync(_attribute_batch(model, inputs, labels, head), device))[1]
        inference, attribution = inference + inference_seconds, attribution + attribution_seconds
    n = len(data.labels)
    return {"inference_samples_per_s": n / inference, "attribution_samples_per_s": n / attribution,
            "attribution_vs_inference": inference / attribution}

def _attribute_batch(model, inputs, labels, layer):
    scores, logits = attr.gradient_x_activation(model, inputs, labels, layer)
    return scores, attr.sample_statistics(logits, labels)["loss"]

def loop_ratio(model, data: Samples, config: PerfConfig, layer: str, device) -> dict:
    """Per-class loop vs batched attribution at ``layer`` on ``loop_batches`` batches, timed alternately
    after one untimed warm-up call of each."""
    batched = looped = 0.0
    diff = 0.0
    for index, (s, inputs) in enumerate(device_batches(data.inputs, config.batch_size, device)):
        if index == config.loop_batches:
            break
        labels = data.labels[s].to(device)
        for _ in range(2 if index == 0 else 1):
            (fast, _), fast_seconds = timed(lambda: sync(attr.gradient_x_activation(model, inputs, labels, layer),
                                                          device))
            (slow, _), slow_seconds = timed(lambda: sync(attr.gradient_x_activation_loop(model, inputs, labels,
                                                                                          layer), device))
        batched, looped = batched + fast_seconds, looped + slow_seconds
        diff = max(diff, float((fast - slow).abs().max()))
    return {"batched_vs_loop": looped / batched, "max_abs_diff": diff, "loop_layer": layer}

def pipeline_ratio(records: dict, config: PerfConfig) -> dict:
    """The wall time of ``denoise run``'s rounds (``denoise.core.rounds.plan`` of the config's options) over
    standard retraining's, from the stages' timing ``records``.

    round = attribute + partition (+ sensitivity + prune where the round prunes) + its fine-tuning epochs
    x the epoch time of its recipe (all layers, or the head on cached features); retrain = train_epochs x
    training epoch. Epoch times are scaled from timed steps.
    """
    options = RunOptions(rounds=config.rounds, round_train=config.round_train, epochs=config.finetune_epochs,
                         round_epochs=config.round_epochs, prune_ratio=config.prune_ratio)
    detect = sum(records[s]["seconds"] for s in ("attribute", "partition"))
    prune = sum(records[s]["seconds"] for s in ("sensitivity", "prune"))
    epoch = {"all": records["finetune"]["epoch_seconds"], "head": records["finetune-head"]["epoch_seconds"]}
    rounds = [detect + (prune if r.prune else 0.0) + r.finetune.epochs * epoch[r.finetune.train] for r in plan(options)]
    pipeline, last_round = sum(rounds), rounds[-1]
    retrain = config.train_epochs * records["retrain"]["epoch_seconds"]
    return {"pipeline_seconds": pipeline, "retrain_seconds": retrain, "pipeline_vs_retrain": pipeline / retrain,
            "one_round_vs_retrain": last_round / retrain}

def measure(config: PerfConfig, workdir: Path, log: Callable[[str], None] = lambda _line: None) -> dict:
    """Run the whole benchmark in ``workdir``; returns the JSON record (the five ratios are top-level keys)."""
    set_threads(config)
    device = resolve_device(config.device)
    layer = config.mid_layer or MID_LAYERS.get(config.arch)
    if layer is None:
        raise UsageError(f"no default mid-network layer for {config.arch!r}; pass --mid-layer")
    if config.dtype not in SCORE_DTYPES:
        raise UsageError(f"--dtype must be float32 or float16, not {config.dtype!r}")
    info = _prepare_workdir(config, workdir)
    checkpoint = load_checkpoint(workdir / "model.safetensors", device)
    data = stage_data(config, config.n, info)
    n = len(data.labels)
    log(f"inference vs attribution at {default_layer(checkpoint.model, data.inputs)} over {n} samples ...")
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

@writes(workdir=True)
def perf_command(arch: str = typer.Option("resnet18-cifar", "--arch", help="Architecture to benchmark."),
                 n: int = typer.Option(20_000, "--n", min=1, help="Synthetic samples (ignored with a --data spec)."),
                 device: str = Device,
                 data: str = typer.Option("synthetic", "--data", help="synthetic (32x32 images made on demand) or "
                                                                       "a data spec, e.g. digits."),
                 noise_rate: float = typer.Option(0.4, "--noise-rate", help="Symmetric label noise on a data spec."),
                 batch_size: int = BatchSize,
                 mid_layer: str = typer.Option(None, "--mid-layer", help="Layer of batched_vs_loop "
                                                                          "(default: layer3 of resnet18-cifar)."),
                 loop_batches: int = typer.Option(2, "--loop-batches", min=1, help="Batches timed for batched_vs_loop."),
                 rss_n: int = typer.Option(None, "--rss-n", min=1, help="N of rss_10n_vs_n (default: --n)."),
                 train_steps: int = typer.Option(20, "--train-steps", min=1, help="Optimizer steps timed per "
                                                                                   "training stage."),
                 repeats: int = typer.Option(3, "--repeats", min=1, help="Runs of the seven stages, in turn; "
                                                                          "each stage's fastest counts."),
                 dtype: str = typer.Option("float32", "--dtype", help="Attribution storage: float32 or float16."),
                 precision: str = Precision,
                 threads: int = typer.Option(None, "--threads", min=1, help="torch intra-op threads in every "
                                                                             "process (default: torch's choice)."),
                 workdir: Path = typer.Option(None, "--workdir", help="Keep the files here (default: a temporary "
                                                                      "directory)."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Samples/second and peak memory per stage, and the performance ratios, on data of the chosen size."""
    config = PerfConfig(arch=arch, n=n, device=device, data=data, noise_rate=noise_rate, batch_size=batch_size,
                        mid_layer=mid_layer, loop_batches=loop_batches, rss_n=rss_n, train_steps=train_steps,
                        repeats=repeats,
                        dtype=dtype, precision=precision, threads=threads)
    log = stderr_log(prefix="[bench perf] ")
    with tempfile.TemporaryDirectory(prefix="denoise-perf-") as scratch:
        result = measure(config, workdir or Path(scratch), log)
    if as_json:
        print(to_json(result))
        return
    emit({key: value for key, value in result.items() if key not in ("stages", "setting", "details")}, False,
         "bench perf")
    for stage, record in result["stages"].items():
        memory = f", peak RSS {record['peak_rss_mb']:.0f} MiB" if "peak_rss_mb" in record else ""
        stdout.print(f"{stage}: {record['samples_per_s']:.1f} samples/s{memory}")
