"""``denoise bench quality``: our detector and cleaning against retraining, baseline detectors and an oracle.

For every cell (data, noise kind, rate, seed) the train split gets noise (``denoise inject-noise``), a
model is trained until it fits the noisy labels (``noisy``), and then each of these is run and timed:

* ``retrain``: the same recipe from scratch on all the noisy data (another seed);
* for each detector, a clean/noisy split of the train split, then fine-tuning the noisy model on the
  clean part without pruning (``finetune-only``) and with pruning (``denoise``), in rounds as
  ``denoise run`` does: round r detects with the model of round r-1 and restarts from the noisy model
  (the two share the rounds before the last, which do not prune: they run once and count in both times);
* ``oracle``: the same recipe from scratch on the truly clean samples only.

Everything runs in memory with the stages' own ``unlearn_core`` calls and recipes (``cli.pipeline``
defaults); timings are wall seconds of each method alone, the noisy model's training excluded (it is
the input of every method), cleanlab-cv's K trainings included. Every accuracy is on the untouched
test split, or with ``--eval-on validation`` on a held-out part of the noisy train split, scored
against its noisy labels, for choosing settings without the test split.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import typer
from threadpoolctl import threadpool_limits

from unlearn_core import attribution as attr
from unlearn_core.detectors import loss_clean_probability, split_metrics
from unlearn_core.layers import apply_unit_masks, default_layer
from unlearn_core.noise import NOISE_KINDS
from unlearn_core.partition import clean_probability
from unlearn_core.pruning import prune_mask
from unlearn_core.sensitivity import UnitMoments
from unlearn_core.training import classification_metrics, predict_logits

from . import stages
from .data import load_data
from .demo import DEMO_ARCH
from .errors import UsageError
from .pipeline import RunOptions
from .runtime import StageData, batch_slices, prepare, resolve_device
from .training_loop import fit

COLUMNS = ("data", "kind", "rate", "seed", "detector", "method", "test_accuracy", "precision", "recall", "f1",
           "auroc", "seconds")
DETECTORS = ("attribution", "attribution-global", "loss", "cleanlab", "cleanlab-cv")
METHODS = ("noisy", "retrain", "oracle", "finetune-only", "denoise")
BENCH_ARCH = {**DEMO_ARCH, "speechcommands": "kws", "cifar10": "resnet18-cifar", "mnist": "cnn", "imagefolder": "cnn"}
TRAIN_RECIPE = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64}  # `denoise train`'s defaults
EVAL_BATCH = 256
VALIDATION_FRACTION = 0.2


def log(line: str) -> None:
    """Progress on stderr, one line per method run."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Cell:
    """One noisy train split and the data every method is scored on."""

    train: StageData  # noisy labels (and corrupted inputs for input-gaussian); is_noisy set
    eval_inputs: torch.Tensor  # (M, ...) normalized
    eval_labels: torch.Tensor  # (M,) true test labels, or noisy labels of the validation part
    info: object  # cli.checkpoint.ModelInfo of the architecture


@dataclass
class Settings:
    """The benchmark's fixed recipe: noisy-model epochs, cleanlab-cv folds, and the method's options."""

    arch: str
    epochs: int
    folds: int
    method: RunOptions
    device: torch.device


def _batches(inputs: torch.Tensor, device) -> list[torch.Tensor]:
    return [inputs[s].to(device) for s in batch_slices(len(inputs), EVAL_BATCH)]


def accuracy(model, inputs: torch.Tensor, labels: torch.Tensor, device) -> float:
    """Fraction of (M, ...) ``inputs`` whose predicted class is the (M,) ``labels`` entry."""
    return classification_metrics(predict_logits(model, _batches(inputs, device)), labels)["accuracy"]


def train_model(info, inputs: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int, device):
    """A fresh model trained with ``denoise train``'s recipe on (N, ...) inputs and (N,) labels."""
    torch.manual_seed(seed)
    model = info.build().to(device)
    fit(model, inputs, labels, epochs=epochs, seed=seed, train="all", device=device, options={}, **TRAIN_RECIPE)
    return model


def _subset(stage: StageData, rows: np.ndarray) -> StageData:
    index = torch.as_tensor(rows)
    return StageData(stage.inputs[index], stage.labels[index], stage.true_labels[index], np.arange(len(rows)),
                     stage.is_noisy[rows], stage.dataset)


def make_cell(data: str, kind: str, rate: float, seed: int, settings: Settings, scratch: Path, eval_on: str) -> Cell:
    """Inject the noise (as ``denoise inject-noise``) and prepare the train and evaluation data."""
    noise = scratch / f"noise-{kind}-{rate}-{seed}.npz"
    stages.inject_noise(data, kind, rate, seed, noise)
    train_set = load_data(data, "train")
    info = stages._model_info(train_set, settings.arch, {})
    train = prepare(train_set, info, noise)
    if eval_on == "test":
        test = prepare(load_data(data, "test"), info)
        return Cell(train, test.inputs, test.labels, info)
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held = int(round(VALIDATION_FRACTION * len(order)))
    validation = _subset(train, np.sort(order[:held]))
    return Cell(_subset(train, np.sort(order[held:])), validation.inputs, validation.labels, info)


def _cleanlab_split(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise UsageError("the cleanlab detectors need cleanlab: pip install 'denoise[bench]' "
                         "(or leave them out with --detectors)") from None
    issues = find_label_issues(labels, probs, n_jobs=1)
    return ~issues, get_label_quality_scores(labels, probs)


def cross_validated_probs(cell: Cell, settings: Settings, seed: int) -> np.ndarray:
    """(N, C) out-of-fold softmax probabilities: K models trained from scratch, each on K-1 folds."""
    stage = cell.train
    n = len(stage.labels)
    fold = np.random.default_rng(seed).permutation(n) % settings.folds
    probs = np.zeros((n, len(cell.info.classes)))
    for k in range(settings.folds):
        held, kept = torch.as_tensor(np.flatnonzero(fold == k)), torch.as_tensor(np.flatnonzero(fold != k))
        model = train_model(cell.info, stage.inputs[kept], stage.labels[kept], settings.epochs, seed + 10 + k,
                            settings.device)
        probs[held.numpy()] = predict_logits(model, _batches(stage.inputs[held], settings.device)).softmax(1).numpy()
    return probs


def detect(name: str, model, stage: StageData, options: RunOptions, device) -> tuple[np.ndarray, np.ndarray]:
    """One model-based detector's split of ``stage``: ``(is_clean (N,) bool, clean_score (N,) float)``."""
    labels = stage.labels.numpy()
    if name.startswith("attribution"):
        layer = options.layer or default_layer(model)
        target = stage.labels if options.target == "label" else None
        parts = {"attribution": [], "loss": [], "margin": [], "confidence": []}
        for s, inputs in zip(batch_slices(len(labels), EVAL_BATCH), _batches(stage.inputs, device)):
            scores, logits = attr.gradient_x_activation(model, inputs, "max" if target is None else target[s], layer)
            parts["attribution"].append(scores.cpu().numpy())
            stats = attr.sample_statistics(logits, stage.labels[s])
            for key in ("loss", "margin", "confidence"):
                parts[key].append(stats[key].cpu().numpy())
        arrays = {key: np.concatenate(value) for key, value in parts.items()}
        kinds = tuple(k.strip() for k in options.features.split(","))
        prob = clean_probability(arrays, labels, per_class=name == "attribution", features=kinds, dims=options.dims,
                                 seed=options.seed, orient=options.orient)
        return prob >= 0.5, prob
    logits = predict_logits(model, _batches(stage.inputs, device))
    if name == "loss":
        prob = loss_clean_probability(F.cross_entropy(logits, stage.labels, reduction="none").numpy(), options.seed)
        return prob >= 0.5, prob
    return _cleanlab_split(labels, logits.softmax(1).numpy())


def prune_noisy_model(noisy, stage: StageData, noisy_flags: np.ndarray, options: RunOptions, device):
    """A copy of ``noisy`` with the units most sensitive to the flagged samples removed (sensitivity + prune)."""
    layer = options.layer or default_layer(noisy)
    moments = UnitMoments()
    for s, inputs in zip(batch_slices(len(stage.labels), EVAL_BATCH), _batches(stage.inputs, device)):
        moments.update(attr.layer_activations(noisy, inputs, layer)[0].cpu().numpy(), noisy_flags[s])
    keep = prune_mask(moments.solve()["coefficient"], ratio=options.prune_ratio, by=options.prune_by)
    pruned = copy.deepcopy(noisy)
    apply_unit_masks(pruned, {layer: torch.as_tensor(keep)})
    return pruned


def fine_tune_round(noisy, stage: StageData, is_clean: np.ndarray, r: int, last: bool, options: RunOptions, device):
    """Round ``r`` of ``denoise run`` in memory: a copy of ``noisy`` (pruned on the flagged samples in the
    last round when ``options.prune_ratio``) fine-tuned on the (N,) ``is_clean`` samples with the round's
    recipe (``RunOptions.round_recipe``)."""
    tuned = (prune_noisy_model(noisy, stage, ~is_clean, options, device) if options.prune_ratio and last
             else copy.deepcopy(noisy))
    keep = torch.as_tensor(is_clean)
    fit(tuned, stage.inputs[keep], stage.labels[keep], **options.round_recipe(last), seed=options.seed + r,
        lr=options.lr, weight_decay=0.0, batch_size=options.batch_size, device=device, options={})
    return tuned


def early_rounds(noisy, stage: StageData, split: Callable, rounds: int, options: RunOptions, device):
    """The rounds before the last, which ``finetune-only`` and ``denoise`` share (pruning is in the last
    round only): each splits with the current model, split(model) -> (is_clean (N,), clean_score (N,)), and
    fine-tunes the noisy model. Returns the model the last round detects with (``noisy`` when rounds is 1)."""
    current = noisy
    for r in range(1, rounds):
        current = fine_tune_round(noisy, stage, split(current)[0], r, False, options, device)
    return current


def run_cell(data: str, kind: str, rate: float, seed: int, detectors: list[str], settings: Settings, scratch: Path,
             eval_on: str) -> list[dict]:
    """Every method of one cell; returns rows with ``COLUMNS`` (detection columns None without a detector)."""
    cell = make_cell(data, kind, rate, seed, settings, scratch, eval_on)
    stage, device, options = cell.train, settings.device, replace(settings.method, seed=seed)
    rows = []

    def add(detector: str, method: str, model, seconds: float, detection: dict | None = None) -> None:
        detection = detection or dict.fromkeys(("precision", "recall", "f1", "auroc"))
        rows.append({"data": data, "kind": kind, "rate": rate, "seed": seed, "detector": detector, "method": method,
                     "test_accuracy": accuracy(model, cell.eval_inputs, cell.eval_labels, device), **detection,
                     "seconds": seconds})
        log(f"{kind} {rate:g} seed {seed}: {detector:>18} {method:<13} accuracy {rows[-1]['test_accuracy']:.3f}  "
            f"f1 {detection['f1'] if detection['f1'] is not None else float('nan'):.3f}  {seconds:6.1f} s")

    def timed(call):
        started = time.perf_counter()
        return call(), time.perf_counter() - started

    noisy, seconds = timed(lambda: train_model(cell.info, stage.inputs, stage.labels, settings.epochs, seed, device))
    fitted = accuracy(noisy, stage.inputs, stage.labels, device)
    log(f"{kind} {rate:g} seed {seed}: noisy model fits {fitted:.1%} of its noisy train labels")
    add("none", "noisy", noisy, seconds)
    add("none", "retrain", *timed(lambda: train_model(cell.info, stage.inputs, stage.labels, settings.epochs,
                                                      seed + 1, device)))
    clean = torch.as_tensor(~stage.is_noisy)
    add("none", "oracle", *timed(lambda: train_model(cell.info, stage.inputs[clean], stage.labels[clean],
                                                     settings.epochs, seed + 2, device)))
    for detector in detectors:
        rounds, extra = options.rounds, 0.0
        if detector == "cleanlab-cv":  # its split does not depend on the model: one round
            probs, extra = timed(lambda: cross_validated_probs(cell, settings, seed))
            fixed = _cleanlab_split(stage.labels.numpy(), probs)
            split, rounds = (lambda _model: fixed), 1
        else:
            split = lambda model, name=detector: detect(name, model, stage, options, device)  # noqa: E731
        current, shared = timed(lambda: early_rounds(noisy, stage, split, rounds, options, device))
        (is_clean, score), shared_split = timed(lambda: split(current))
        for method, ratio in (("finetune-only", None), ("denoise", options.prune_ratio)):
            variant = replace(options, prune_ratio=ratio)
            model, seconds = timed(lambda: fine_tune_round(noisy, stage, is_clean, rounds, True, variant, device))
            add(detector, method, model, seconds + shared + shared_split + extra,
                split_metrics(stage.is_noisy, is_clean, score))
    return rows


def _fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not values:
        return ""
    mean = f"{float(np.mean(values)):.{digits}f}"
    return f"{mean} ± {float(np.std(values, ddof=1)):.{digits}f}" if len(values) > 1 else mean


_ORDER = {"kind": NOISE_KINDS, "detector": ("none", *DETECTORS), "method": METHODS}


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Rows grouped by ``keys``, groups in table order (noise kinds, detectors and methods as listed)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    rank = lambda key: tuple(_ORDER[k].index(v) if k in _ORDER else v for k, v in zip(keys, key))  # noqa: E731
    return dict(sorted(groups.items(), key=lambda item: rank(item[0])))


def _mean(rows: list[dict], cell: tuple, detector: str, method: str) -> float:
    found = [r["test_accuracy"] for r in rows if (r["data"], r["kind"], r["rate"]) == cell
             and r["detector"] == detector and r["method"] == method]
    return float(np.mean(found)) if found else float("nan")


def markdown(rows: list[dict]) -> str:
    """Three markdown tables over seeds (mean ± sample std): every method; pruning's effect; the headline checks."""
    lines = ["| data | noise | rate | detector | method | test acc. (%) | precision | recall | F1 | AUROC | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (data, kind, rate, detector, method), group in _groups(rows, ("data", "kind", "rate", "detector",
                                                                       "method")).items():
        cols = [_fmt([r["test_accuracy"] for r in group], 100, 1)]
        cols += [_fmt([r[k] for r in group]) for k in ("precision", "recall", "f1", "auroc")]
        cols.append(_fmt([r["seconds"] for r in group], 1, 1))
        lines.append(f"| {data} | {kind} | {rate:g} | {detector} | {method} | " + " | ".join(cols) + " |")
    cells = list(_groups(rows, ("data", "kind", "rate")))
    detectors = [d for d in DETECTORS if any(r["detector"] == d for r in rows)]
    lines += ["", "Pruning: `denoise` minus `finetune-only` test accuracy, points (mean over seeds)", "",
              "| data | noise | rate | " + " | ".join(detectors) + " |", "|---|---|---|" + "---|" * len(detectors)]
    for cell in cells:
        gains = [100 * (_mean(rows, cell, d, "denoise") - _mean(rows, cell, d, "finetune-only")) for d in detectors]
        shown = ["" if math.isnan(g) else f"{g:+.1f}" for g in gains]  # blank: detector not run in this cell
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]:g} | " + " | ".join(shown) + " |")
    lines += ["", "Ours (`attribution`, `denoise`) against the baselines (means over seeds)", "",
              "| data | noise | rate | denoise − retrain (points) | gap noisy→oracle recovered | "
              "denoise / retrain seconds |", "|---|---|---|---|---|---|"]
    for cell in cells:
        ours, retrain = _mean(rows, cell, "attribution", "denoise"), _mean(rows, cell, "none", "retrain")
        noisy, oracle = _mean(rows, cell, "none", "noisy"), _mean(rows, cell, "none", "oracle")
        seconds = {m: np.mean([r["seconds"] for r in rows if (r["data"], r["kind"], r["rate"]) == cell
                               and r["method"] == m and r["detector"] in ("attribution", "none")])
                   for m in ("denoise", "retrain")}
        recovered = f"{(ours - noisy) / (oracle - noisy):.0%}" if oracle - noisy >= 0.01 else "no gap (< 1 point)"
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]:g} | {100 * (ours - retrain):+.1f} | {recovered} | "
                     f"{seconds['denoise'] / seconds['retrain']:.0%} |")
    return "\n".join(lines) + "\n"


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV written by ``write_rows`` (empty detection columns become None)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    numeric = {"rate": float, "seed": int, **{k: float for k in COLUMNS[6:]}}
    return [{k: (numeric[k](v) if v != "" else None) if k in numeric else v for k, v in row.items()} for row in rows]


def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV with ``COLUMNS``, detection columns empty where no detector is used."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows([{k: "" if row[k] is None else row[k] for k in COLUMNS} for row in rows])
    tmp.replace(path)


def _list(text: str, convert, flag: str) -> list:
    try:
        return [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r} as a comma list") from None


def _check(kinds: list[str], rates: list[float], detectors: list[str], options: RunOptions, folds: int) -> None:
    if not kinds or any(k not in NOISE_KINDS for k in kinds):
        raise UsageError(f"--noise-kinds must be a comma list of {', '.join(NOISE_KINDS)}")
    if not rates or any(not 0 < r < 1 for r in rates):
        raise UsageError("--rates must be a comma list of fractions in (0, 1)")
    if any(d not in DETECTORS for d in detectors):
        raise UsageError(f"--detectors must be a comma list of {', '.join(DETECTORS)}")
    if not 0 < (options.prune_ratio or 0) < 1 or folds < 2:
        raise UsageError("--ratio must be in (0, 1) (the benchmark compares pruning), --folds at least 2")
    options.check()


def quality_command(
        data: str = typer.Option(..., "--data", help="Data spec: digits, npz:FILE, fsdd:DIR, cifar10:DIR, ..."),
        arch: Optional[str] = typer.Option(None, "--arch", help="Default: mlp (digits, npz), kws (fsdd, "
                                                                "speechcommands), resnet18-cifar (cifar10)."),
        noise_kinds: str = typer.Option("symmetric,asymmetric,instance", "--noise-kinds",
                                        help="Comma list of symmetric, asymmetric, instance, input-gaussian."),
        rates: str = typer.Option("0.2,0.4,0.6", "--rates", help="Comma list of noise rates."),
        seeds: str = typer.Option("0,1,2", "--seeds", help="Comma list of seeds."),
        quick: bool = typer.Option(False, "--quick", help="One seed, 40% symmetric noise only."),
        detectors: str = typer.Option(",".join(DETECTORS), "--detectors", help="Comma list of detectors to run."),
        epochs: int = typer.Option(300, "--epochs", min=1, help="Epochs of the noisy, retrained, oracle and "
                                                                "cross-validation models."),
        folds: int = typer.Option(3, "--folds", help="K of cleanlab-cv's K-fold cross-validation."),
        rounds: int = typer.Option(RunOptions.rounds, "--rounds", help="Detect-and-fine-tune rounds."),
        target: str = typer.Option(RunOptions.target, "--target", help="Attribute the label's logit or the top one."),
        features: str = typer.Option(RunOptions.features, "--features", help="What our mixture sees."),
        dims: int = typer.Option(RunOptions.dims, "--dims", min=1, help="Principal components of the attributions."),
        orient: str = typer.Option(RunOptions.orient, "--orient", help="How our mixture's noisy component is "
                                                                       "chosen: auto, margin, loss or norm."),
        ratio: float = typer.Option(RunOptions.prune_ratio, "--ratio", help="Fraction of units to prune."),
        by: str = typer.Option(RunOptions.prune_by, "--by", help="noisy (signed coefficient) or abs."),
        train: str = typer.Option(RunOptions.train, "--train", help="Fine-tune all layers or the head (last round)."),
        round_train: str = typer.Option(RunOptions.round_train, "--round-train",
                                        help="What the rounds before the last fine-tune: head or all."),
        finetune_epochs: int = typer.Option(RunOptions.epochs, "--finetune-epochs", min=1,
                                            help="Fine-tuning epochs of the last round."),
        round_epochs: int = typer.Option(RunOptions.round_epochs, "--round-epochs", min=1,
                                         help="Fine-tuning epochs of each round before the last."),
        lr: float = typer.Option(RunOptions.lr, "--lr", help="Fine-tuning learning rate."),
        shrink: float = typer.Option(RunOptions.shrink, "--shrink", help="Shrink warm start of the last fine-tune "
                                                                          "and of all-layer early rounds (1: off)."),
        eval_on: str = typer.Option("test", "--eval-on", help="test, or validation: a held-out 20% of the noisy "
                                                              "train split scored on its noisy labels."),
        threads: int = typer.Option(1, "--threads", min=1, help="CPU threads for torch and BLAS (1 keeps "
                                                                "shared-machine timings steady)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        out: Optional[Path] = typer.Option(None, "--out", help="CSV of every row, rewritten after each cell."),
        resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out and skip their cells."),
        markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write the markdown tables here."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list instead of the tables."),
) -> None:
    """Test accuracy, detection quality and wall time of denoise against retraining and baseline detectors."""
    kinds, rate_list, seed_list = _list(noise_kinds, str, "--noise-kinds"), _list(rates, float, "--rates"), \
        _list(seeds, int, "--seeds")
    if quick:
        kinds, rate_list, seed_list = ["symmetric"], [0.4], seed_list[:1]
    names = _list(detectors, str, "--detectors")
    options = RunOptions(rounds=rounds, target=target, features=features, dims=dims, orient=orient, prune_ratio=ratio,
                         prune_by=by, train=train, round_train=round_train, epochs=finetune_epochs,
                         round_epochs=round_epochs, lr=lr, shrink=shrink)
    _check(kinds, rate_list, names, options, folds)
    if eval_on not in ("test", "validation"):
        raise UsageError("--eval-on must be test or validation")
    if resume and out is None:
        raise UsageError("--resume needs --out")
    torch.set_num_threads(threads)
    settings = Settings(arch or BENCH_ARCH.get(data.split(":")[0], "mlp"), epochs, folds, options,
                        resolve_device(device))
    rows = read_rows(out) if resume and out.is_file() else []
    done = {(r["data"], r["kind"], r["rate"], r["seed"]) for r in rows}
    # BLAS/OpenMP threads of the mixtures too: oversubscribed, they run ten times slower on a loaded machine
    with tempfile.TemporaryDirectory(prefix="denoise-bench-") as scratch, threadpool_limits(threads):
        for kind in kinds:
            for rate in rate_list:
                for seed in seed_list:
                    if (data, kind, rate, seed) in done:
                        continue
                    rows += run_cell(data, kind, rate, seed, names, settings, Path(scratch), eval_on)
                    if out is not None:
                        write_rows(out, rows)
    table = markdown(rows)
    if markdown_out is not None:
        markdown_out.write_text(table)
    if as_json:
        print(json.dumps(rows))
    else:
        sys.stdout.write(table)
