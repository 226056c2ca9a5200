"""``denoise bench quality``: our detector and cleaning against retraining, baseline detectors and an oracle.

For every cell (data, noise kind, rate, seed) the train split gets noise (``denoise inject-noise``), a
model is trained until it fits the noisy labels (``noisy``), and then each of these is run and timed:
``retrain`` (the same recipe from scratch on all the noisy data, another seed); for each detector the rounds
of ``denoise.core.rounds.plan``, walked in memory by the same ``run_rounds`` that ``denoise run`` walks over
files, no-harm choice included, without pruning (``finetune-only``) and with it (``denoise``), and with
``--relabel`` also ``denoise-relabel`` (``RunOptions.relabel``); ``oracle`` (the recipe on the truly clean
samples only). The detectors are those registered in ``denoise.core.detectors.DETECTORS``. Timings are wall
seconds of each method alone, the noisy model's training excluded, the K trainings of an out-of-fold detector
(cleanlab-cv) included. Accuracy is on the untouched test split, or with ``--eval-on validation``
on a held-out part of the noisy train split against its noisy labels, for choosing settings.

With ``--out`` every row is written as it comes and each cell's noisy model is kept beside the file
(``OUT.models/``), so ``--resume`` runs only the rows the file lacks, on the same noisy model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import typer
from threadpoolctl import threadpool_limits
from torch import nn

from denoise.core.detectors import DETECTORS, OUT_OF_FOLD
from denoise.core.metrics import classification_metrics, detection_metrics
from denoise.core.noise import NOISE_KINDS
from denoise.core.rounds import MemorySteps, RunOptions, run_rounds
from denoise.core.batches import BATCH_SIZE, take
from denoise.core.training import Recipe, logits_of

from ..files.lock import writes
from ..data import default_arch, load_data
from ..data.noise import inject_noise
from ..data.samples import Samples, prepare
from ..demo import NOISY_EPOCHS
from ..device import resolve_device
from ..errors import UsageError, usage_errors
from ..files.checkpoint import ModelInfo, load_checkpoint, read_metadata, save_checkpoint
from ..output import stderr_log, to_json
from ..options import Device, run_options
from ..timing import timed
from .baselines import DetectorSteps, cross_validated_probs
from .quality_tables import markdown, read_rows, write_rows
from .training import train_model

VALIDATION_FRACTION = 0.2
# Each method a detector's split is cleaned with: (pruned, fine-tuned on relabeled flagged samples too).
METHODS = {"finetune-only": (False, False), "denoise": (True, False), "denoise-relabel": (True, True)}
DEFAULT_METHODS = ("finetune-only", "denoise")
log = stderr_log()


@dataclass
class Cell:
    """One noisy train split and the data every method is scored on."""

    train: Samples  # noisy labels (and corrupted inputs for input-gaussian); is_noisy set
    eval_inputs: torch.Tensor  # (M, ...) normalized
    eval_labels: torch.Tensor  # (M,) true test labels, or noisy labels of the validation part
    info: ModelInfo  # of the architecture


@dataclass
class Settings:
    """The benchmark's fixed recipe: noisy-model epochs, out-of-fold detectors' folds, and the method's options."""

    arch: str
    epochs: int
    folds: int
    method: RunOptions
    device: torch.device
    methods: tuple[str, ...] = DEFAULT_METHODS  # run with each detector, of METHODS


def accuracy(model, inputs: torch.Tensor, labels: torch.Tensor, device) -> float:
    """Fraction of (M, ...) ``inputs`` whose predicted class is the (M,) ``labels`` entry."""
    return classification_metrics(logits_of(model, inputs, BATCH_SIZE, device), labels)["accuracy"]


def make_cell(data: str, kind: str, rate: float, seed: int, settings: Settings, scratch: Path, eval_on: str) -> Cell:
    """Inject the noise (as ``denoise inject-noise``) and prepare the train and evaluation data."""
    noise = scratch / f"noise-{kind}-{rate}-{seed}.npz"
    inject_noise(data, kind, rate, seed, noise)
    train_set = load_data(data, "train")
    info = ModelInfo.of_dataset(train_set, settings.arch)
    train = prepare(train_set, info, noise)
    if eval_on == "test":
        test = prepare(load_data(data, "test"), info)
        return Cell(train, test.inputs, test.labels, info)
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held = int(round(VALIDATION_FRACTION * len(order)))
    validation = train.subset(np.sort(order[:held]))
    return Cell(train.subset(np.sort(order[held:])), validation.inputs, validation.labels, info)


def detector_steps(detector: str, cell: Cell, settings: Settings, probs=None) -> MemorySteps:
    """The in-memory steps of the registered ``detector`` (an out-of-fold one's: over its out-of-fold ``probs``)."""
    samples = cell.train
    return DetectorSteps(DETECTORS[detector], samples.inputs, samples.labels, settings.device, out_of_fold=probs)


def _methods(settings: Settings) -> list[tuple[str, bool, bool]]:
    """Each detector's methods: (name, pruned, relabeled)."""
    return [(name, *METHODS[name]) for name in settings.methods]


@dataclass
class Store:
    """The rows run so far and where they are kept (``--out``, rewritten after every row), and beside them the
    cells' noisy models (``OUT.models/``), so that ``--resume`` re-runs only the rows an interrupted run left
    out, and a detector added later does not retrain the model it cleans."""

    rows: list[dict]
    out: Path | None
    resume: bool = False  # read the noisy models kept by an earlier run (else train them again)

    def has(self, cell: tuple, detector: str, method: str) -> bool:
        """Whether the row of (data, kind, rate, seed) ``cell``, ``detector`` and ``method`` is kept."""
        return any((r["data"], r["kind"], r["rate"], r["seed"], r["detector"], r["method"]) ==
                   (*cell, detector, method) for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.out is not None:
            write_rows(self.out, self.rows)

    def missing(self, cell: tuple, detectors: list[str], settings: Settings) -> list[str]:
        """The detectors with a row of ``cell`` still to run."""
        return [d for d in detectors if not all(self.has(cell, d, m) for m, _, _ in _methods(settings))]

    def model_path(self, cell: tuple, settings: Settings, eval_on: str) -> Path | None:
        """The noisy model's file of ``cell`` trained with ``settings`` (None without ``--out``)."""
        if self.out is None:
            return None
        data, kind, rate, seed = cell
        recipe = json.dumps([data, kind, rate, seed, settings.arch, settings.epochs, eval_on])
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]  # the data spec may hold any character
        return self.out.with_name(self.out.name + ".models") / f"noisy-{kind}-{rate:g}-{seed}-{digest}.safetensors"


def run_cell(data: str, kind: str, rate: float, seed: int, detectors: list[str], settings: Settings, scratch: Path,
             eval_on: str, store: Store) -> None:
    """Every method of one cell that ``store`` lacks; adds rows with ``COLUMNS`` (detection columns None without
    a detector) to it."""
    key = (data, kind, rate, seed)
    left = store.missing(key, detectors, settings)
    if not left and all(store.has(key, "none", m) for m in ("noisy", "retrain", "oracle")):
        return
    cell = make_cell(data, kind, rate, seed, settings, scratch, eval_on)
    samples, device, options = cell.train, settings.device, replace(settings.method, seed=seed)

    def add(detector: str, method: str, model, seconds: float, detection: dict | None = None,
            chosen: str | None = None) -> None:
        detection = detection or dict.fromkeys(("precision", "recall", "f1", "auroc", "flagged"))
        store.add({"data": data, "kind": kind, "rate": rate, "seed": seed, "detector": detector, "method": method,
                   "test_accuracy": accuracy(model, cell.eval_inputs, cell.eval_labels, device), **detection,
                   "seconds": seconds, "chosen": chosen})
        log(f"{kind} {rate:g} seed {seed}: {detector:>18} {method:<13} "
            f"accuracy {store.rows[-1]['test_accuracy']:.3f}  "
            f"f1 {detection['f1'] if detection['f1'] is not None else float('nan'):.3f}  {seconds:6.1f} s")

    def trained(inputs, labels, model_seed):
        return train_model(cell.info, inputs, labels, Recipe(epochs=settings.epochs, seed=model_seed), device)

    if left or not store.has(key, "none", "noisy"):
        path = store.model_path(key, settings, eval_on)
        noisy, seconds, fits = noisy_model(path, store.resume, cell, settings,
                                           lambda: trained(samples.inputs, samples.labels, seed))
        log(f"{kind} {rate:g} seed {seed}: noisy model fits {fits:.1%} of its noisy train labels")
        if not store.has(key, "none", "noisy"):
            add("none", "noisy", noisy, seconds)
    if not store.has(key, "none", "retrain"):
        add("none", "retrain", *timed(lambda: trained(samples.inputs, samples.labels, seed + 1)))
    clean_rows = torch.as_tensor(~samples.is_noisy)
    if not store.has(key, "none", "oracle"):
        add("none", "oracle", *timed(lambda: trained(take(samples.inputs, clean_rows), samples.labels[clean_rows], seed + 2)))
    for detector in left:
        found = DETECTORS[detector]
        probs, before = None, 0.0  # an out-of-fold detector's K trainings, counted in both of its methods' time
        if found.evidence == OUT_OF_FOLD:
            recipe = Recipe(epochs=settings.epochs, seed=seed)
            probs, before = timed(lambda: cross_validated_probs(cell.info, samples.inputs, samples.labels, recipe,
                                                                settings.folds, seed, device))
        for method, pruned, relabel in _methods(settings):
            if store.has(key, detector, method):
                continue
            variant = replace(options, prune_ratio=options.prune_ratio if pruned else None, relabel=relabel,
                              rounds=1 if found.one_round else options.rounds, per_class=found.per_class)
            steps = detector_steps(detector, cell, settings, probs)
            outcome, seconds = timed(lambda: run_rounds(steps, variant, noisy))
            add(detector, method, outcome.model, seconds + before,
                detection_metrics(samples.is_noisy, outcome.partition.is_clean, outcome.partition.clean_prob),
                outcome.chosen)


def noisy_model(path: Path | None, reuse: bool, cell: Cell, settings: Settings,
                train: Callable[[], nn.Module]) -> tuple[nn.Module, float, float]:
    """The cell's noisy model, the seconds its training took and the share of the noisy train labels it fits:
    with ``reuse``, read from ``path`` where an earlier run kept it, else trained by ``train()`` and kept there."""
    if reuse and path is not None and path.is_file():
        log(f"noisy model read from {path}")
        kept = read_metadata(path)["provenance"]
        return load_checkpoint(path, settings.device).model, float(kept["seconds"]), float(kept["fits"])
    model, seconds = timed(train)
    fits = accuracy(model, cell.train.inputs, cell.train.labels, settings.device)
    if path is not None:
        path.parent.mkdir(exist_ok=True)
        save_checkpoint(path, model, cell.info, {"seconds": seconds, "epochs": settings.epochs, "fits": fits})
    return model, seconds, fits


def _list(text: str, convert, flag: str) -> list:
    try:
        return [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r} as a comma list") from None


def _check(kinds: list[str], rates: list[float], detectors: list[str], methods: list[str], options: RunOptions,
           folds: int) -> None:
    if not kinds or any(k not in NOISE_KINDS for k in kinds):
        raise UsageError(f"--noise-kinds must be a comma list of {', '.join(NOISE_KINDS)}")
    if not rates or any(not 0 <= r < 1 for r in rates):
        raise UsageError("--rates must be a comma list of fractions in [0, 1) (0: no noise at all)")
    if any(d not in DETECTORS for d in detectors):
        raise UsageError(f"--detectors must be a comma list of {', '.join(DETECTORS)}")
    for name in detectors:
        for module in DETECTORS[name].requires:
            if importlib.util.find_spec(module) is None:
                raise UsageError(f"the {name} detector needs {module}: pip install 'denoise[bench]' "
                                 "(or leave it out with --detectors)")
    if not methods or any(m not in METHODS for m in methods):
        raise UsageError(f"--methods must be a comma list of {', '.join(METHODS)}")
    if not options.prune_ratio or folds < 2:
        raise UsageError("--ratio must be in (0, 1) (the benchmark compares pruning), --folds at least 2")
    with usage_errors({"epochs": "--finetune-epochs"}):
        options.check()


@run_options(epochs_flag="--finetune-epochs", every=False)
@writes(out=False)
def quality_command(
        data: str = typer.Option(..., "--data", help="Data spec: digits, npz:FILE, fsdd:DIR, cifar10:DIR, ..."),
        arch: Optional[str] = typer.Option(None, "--arch", help="Default: the data kind's: mlp (digits, npz), kws "
                                                                "(fsdd, speechcommands), cnn (mnist, imagefolder), "
                                                                "resnet18-cifar (cifar10)."),
        noise_kinds: str = typer.Option("symmetric,asymmetric,instance", "--noise-kinds",
                                        help="Comma list of symmetric, asymmetric, instance, input-gaussian."),
        rates: str = typer.Option("0.2,0.4,0.6", "--rates", help="Comma list of noise rates."),
        seeds: str = typer.Option("0,1,2", "--seeds", help="Comma list of seeds."),
        quick: bool = typer.Option(False, "--quick", help="One seed, 40% symmetric noise only."),
        detectors: str = typer.Option(",".join(DETECTORS), "--detectors", help="Comma list of detectors to run."),
        epochs: int = typer.Option(NOISY_EPOCHS, "--epochs", min=1, help="Epochs of the noisy, retrained, oracle and "
                                                                "cross-validation models."),
        folds: int = typer.Option(3, "--folds", help="K of the out-of-fold detectors' (cleanlab-cv's) K-fold "
                                                     "cross-validation."),
        options: RunOptions = RunOptions(),
        methods: str = typer.Option(",".join(DEFAULT_METHODS), "--methods",
                                    help=f"Comma list of the methods run with each detector: {', '.join(METHODS)} "
                                         "(a short GPU lease can run denoise alone)."),
        relabel: bool = typer.Option(False, "--relabel", help="Also run each detector's denoise with relabeling "
                                     "(method denoise-relabel) beside the one that drops the flagged samples."),
        eval_on: str = typer.Option("test", "--eval-on", help="test, or validation: a held-out 20% of the noisy "
                                                              "train split scored on its noisy labels."),
        threads: int = typer.Option(1, "--threads", min=1, help="CPU threads for torch and BLAS (1 keeps "
                                                                "shared-machine timings steady)."),
        device: str = Device,
        out: Optional[Path] = typer.Option(None, "--out", help="CSV of every row, rewritten after each row; each "
                                                               "cell's noisy model is kept in OUT.models/."),
        resume: bool = typer.Option(False, "--resume", help="Keep the rows already in --out and run only the missing "
                                                            "ones, on the noisy models kept in OUT.models/."),
        markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write the markdown tables here."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list instead of the tables."),
) -> None:
    """Test accuracy, detection quality and wall time of denoise against retraining and baseline detectors."""
    kinds, rate_list, seed_list = _list(noise_kinds, str, "--noise-kinds"), _list(rates, float, "--rates"), \
        _list(seeds, int, "--seeds")
    if quick:
        kinds, rate_list, seed_list = ["symmetric"], [0.4], seed_list[:1]
    names = _list(detectors, str, "--detectors")
    method_list = _list(methods, str, "--methods") + (["denoise-relabel"] if relabel else [])
    _check(kinds, rate_list, names, method_list, options, folds)
    if eval_on not in ("test", "validation"):
        raise UsageError("--eval-on must be test or validation")
    if resume and out is None:
        raise UsageError("--resume needs --out")
    torch.set_num_threads(threads)
    settings = Settings(arch or default_arch(data), epochs, folds, options, resolve_device(device),
                        tuple(dict.fromkeys(method_list)))
    store = Store(read_rows(out) if resume and out.is_file() else [], out, resume)
    # BLAS/OpenMP threads of the mixtures too: oversubscribed, they run ten times slower on a loaded machine
    with tempfile.TemporaryDirectory(prefix="denoise-bench-") as scratch, threadpool_limits(threads):
        for kind in kinds:
            for rate in rate_list:
                for seed in seed_list:
                    run_cell(data, kind, rate, seed, names, settings, Path(scratch), eval_on, store)
    table = markdown(store.rows)
    if markdown_out is not None:
        markdown_out.write_text(table)
    if as_json:
        print(to_json(store.rows))
    else:
        sys.stdout.write(table)
