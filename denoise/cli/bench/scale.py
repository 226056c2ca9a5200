"""``denoise bench scale``: memory and throughput of the streamed file path, at N and 8 N images.

It writes N and 8 N synthetic JPEGs (256 x 256, smooth random colour fields, made locally), trains one
model on N for one epoch at ``--size`` (224: ImageNet's), and measures, each stage in a fresh process
(``python -m denoise.cli.main``) whose peak RSS is read from ``wait4``:

* ``peak_rss_mb``: attribute and a 1-epoch finetune at N and 8 N, and ``rss_8n_vs_n`` of each;
* ``attribute_images_per_s`` beside ``loop_images_per_s``: a plain DataLoader over the same files (the
  same decoder, workers and batch size) feeding a forward pass, the limit the stage can approach
  (``attribute_vs_loop``); the two alternate, twice, and each's best run counts;
* ``workers``: attribute's images/s with 1, 2 and 4 loader processes.

With ``--run-n M``, ``end_to_end`` instead: ``train`` and ``denoise run`` over M such files. The files are
streamed (``DENOISE_CACHE_MB=1``): the decoded cache, when a set fits it, is memory by design and would hide
the streaming path's own peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

from ..files.lock import writes
from ..output import emit, stderr_log

STREAMED = {"DENOISE_CACHE_MB": "1"}
REPEATS = 2  # alternating runs of the plain loop and of attribute


def write_images(folder: Path, n: int, classes: int = 10, side: int = 256, seed: int = 0) -> None:
    """``n`` JPEGs of ``side`` px in ``classes`` class folders (skipped where the folder holds them already)."""
    from PIL import Image

    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return
    rng = np.random.default_rng(seed)
    for k in range(n):
        label = k % classes
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((side, side), Image.BICUBIC).save(folder / f"c{label}" / f"{k:07d}.jpg",
                                                                        quality=90)


def _measured(args: list, env: dict) -> tuple[dict, float]:
    """``denoise ARGS --json`` in a fresh process: its JSON result and its peak RSS (MiB)."""
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "denoise.cli.main", *map(str, args), "--json"],
                                   stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **env})
        out = process.stdout.read()
        _pid, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"denoise {args[0]} failed: {(err.read().strip().splitlines() or ['?'])[-1]}")
    return json.loads(out), usage.ru_maxrss / 1024


def loop_images_per_s(data: str, model: Path, batch_size: int, workers: int) -> float:
    """Images/s of a plain DataLoader over ``data``'s files (our decoder, ``workers`` processes) feeding the
    model's forward pass: what reading and one pass cost, without attribution or writing."""
    import torch

    from ..data.samples import load_samples
    from ..data.source import set_reading
    from ..files.checkpoint import load_checkpoint

    set_reading(workers)
    checkpoint = load_checkpoint(model)
    inputs = load_samples(data, "train", checkpoint.info).inputs  # normalized, as the stages read them
    loader = torch.utils.data.DataLoader(range(len(inputs)), batch_size=batch_size, num_workers=workers,
                                         collate_fn=lambda rows: inputs[np.asarray(rows)])
    with torch.no_grad():
        checkpoint.model(inputs[:1])  # as the stage's layer trace does before its timer: first-call set-up
    started = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            checkpoint.model(batch)
    return len(inputs) / (time.perf_counter() - started)


def _loop_child(data: str, model: Path, batch_size: int, workers: int) -> float:
    """``loop_images_per_s`` in a fresh process, like the stages it is compared with."""
    done = subprocess.run([sys.executable, "-m", "denoise.cli.bench.scale", data, str(model), str(batch_size), str(workers)],
                          capture_output=True, text=True, env={**os.environ, **STREAMED}, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(n: int, size: int, arch: str, batch_size: int, workers: int, workdir: Path, log) -> dict:
    sets = {count: workdir / f"images-{count}" for count in (n, 8 * n)}
    for count, folder in sets.items():
        log(f"writing {count} JPEGs of 256 px ...")
        write_images(folder, count)
    data = {count: f"imagefolder:{folder}?size={size}" for count, folder in sets.items()}
    model = workdir / "model.safetensors"
    log(f"training {arch} on N={n} at {size} px (1 epoch) ...")
    _measured(["train", "--data", data[n], "--arch", arch, "--epochs", 1, "--batch-size", batch_size,
               "--out", model, "--workers", workers], STREAMED)
    peak = {}
    for count in (n, 8 * n):
        scores, partition = workdir / f"scores-{count}.npz", workdir / f"partition-{count}.npz"
        log(f"attribute, N={count} ...")
        _, peak[f"attribute_{count}"] = _measured(
            ["attribute", "--model", model, "--data", data[count], "--out", scores, "--batch-size", batch_size,
             "--workers", workers], STREAMED)
        subprocess.run([sys.executable, "-m", "denoise.cli.main", "partition", "--scores", scores, "--out", partition],
                       check=True, capture_output=True)
        log(f"finetune (1 epoch), N={count} ...")
        _, peak[f"finetune_{count}"] = _measured(
            ["finetune", "--model", model, "--data", data[count], "--partition", partition, "--epochs", 1,
             "--batch-size", batch_size, "--out", workdir / f"tuned-{count}.safetensors", "--workers", workers],
            STREAMED)
    # the loop and the stage alternate, each's best counts: load from other programs then hits both alike
    loop = attribute = 0.0
    for repeat in range(REPEATS):
        log(f"plain DataLoader + forward loop, and attribute ({repeat + 1} of {REPEATS}) ...")
        loop = max(loop, _loop_child(data[n], model, batch_size, workers))
        result, _ = _measured(["attribute", "--model", model, "--data", data[n], "--out", workdir / "w.npz",
                               "--batch-size", batch_size, "--workers", workers], STREAMED)
        attribute = max(attribute, result["samples"] / result["seconds"])
    scaling = {}
    for count in (1, 2, 4):
        log(f"attribute with {count} worker(s) ...")
        result, _ = _measured(["attribute", "--model", model, "--data", data[n], "--out", workdir / "w.npz",
                               "--batch-size", batch_size, "--workers", count], STREAMED)
        scaling[str(count)] = result["samples"] / result["seconds"]
    return {"n": n, "size": size, "arch": arch, "batch_size": batch_size, "workers": workers,
            "cores": len(os.sched_getaffinity(0)), "peak_rss_mb": peak,
            "rss_8n_vs_n": {stage: peak[f"{stage}_{8 * n}"] / peak[f"{stage}_{n}"] for stage in ("attribute", "finetune")},
            "attribute_images_per_s": attribute, "loop_images_per_s": loop, "attribute_vs_loop": attribute / loop,
            "workers_images_per_s": scaling}


def end_to_end(n: int, size: int, arch: str, workdir: Path, log) -> dict:
    """``train`` (one epoch) then ``denoise run`` (one round of one epoch, pruned: every stage runs) over ``n``
    streamed JPEGs read at ``size`` px, each in a fresh process: wall seconds, peak RSS (MiB) and the run's
    stage wall times (``wall_seconds`` of its run.json, loading included)."""
    folder = workdir / f"images-{n}"
    log(f"writing {n} JPEGs of 256 px ...")
    write_images(folder, n)
    data, model = f"imagefolder:{folder}?size={size}", workdir / f"noisy-{n}.safetensors"
    record = {"n": n, "size": size, "arch": arch, "cores": len(os.sched_getaffinity(0))}
    log(f"train, 1 epoch, N={n} ...")
    started = time.perf_counter()
    _, record["train_peak_rss_mb"] = _measured(["train", "--data", data, "--arch", arch, "--epochs", 1, "--out",
                                                model], STREAMED)
    record["train_seconds"] = time.perf_counter() - started
    log(f"run, 1 round of 1 epoch, N={n} ...")
    started = time.perf_counter()
    result, record["run_peak_rss_mb"] = _measured(["run", "--model", model, "--data", data, "--workdir",
                                                   workdir / f"run-{n}", "--rounds", 1, "--epochs", 1, "--ratio", 0.1],
                                                  STREAMED)
    record["run_seconds"] = time.perf_counter() - started
    record["stage_seconds"] = {stage: summary["wall_seconds"] for stage, summary in result["rounds"][0].items()
                               if isinstance(summary, dict)}
    record["chosen"] = result["chosen"]
    return record


@writes(workdir=True)
def scale_command(n: int = typer.Option(200, "--n", min=10, help="Images of the smaller set (the larger: 8 N)."),
                  size: int = typer.Option(224, "--size", min=8, help="Side the images are read at."),
                  arch: str = typer.Option("cnn", "--arch"),
                  batch_size: int = typer.Option(32, "--batch-size", min=1),
                  workers: int = typer.Option(1, "--workers", min=0, help="Loader processes of the N/8N runs."),
                  run_n: int = typer.Option(0, "--run-n", min=0, help="Measure instead train and denoise run "
                                            "end to end over this many files (at --size)."),
                  workdir: Path = typer.Option(None, "--workdir", help="Keep the images and files here (reused "
                                                                       "when present; default: a temporary one)."),
                  as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Peak memory at N and 8 N images, attribute's images/s beside a plain loader, and worker scaling (or,
    with --run-n, train and run end to end)."""
    log = stderr_log(prefix="[bench scale] ")
    with tempfile.TemporaryDirectory(prefix="denoise-scale-") as scratch:
        folder = workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        result = (end_to_end(run_n, size, arch, folder, log) if run_n else
                  measure(n, size, arch, batch_size, workers, folder, log))
    emit(result, as_json, "bench scale")


if __name__ == "__main__":  # python -m denoise.cli.bench.scale DATA MODEL BATCH WORKERS: the plain loop, in a fresh process
    print(loop_images_per_s(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
