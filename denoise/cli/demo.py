"""``denoise demo``: the whole method on a real data set, side by side with retraining.

On the train split it injects label noise, trains a model until it fits the noisy labels (``noisy``),
retrains one from scratch on the same noisy data with the same recipe (``retrain``), and cleans the
noisy model with our fine-tuning alone (``finetune-only``) and with all five stages (``denoise``).
Every row is scored on the untouched test split; detection is the final partition against the truth.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from denoise.core.rounds import RunOptions
from denoise.core.training import Recipe

from .data import default_arch
from .data.noise import inject_noise
from .files.paths import atomic_write
from .files.stage_files import load_npz
from .model_commands import evaluate, train
from .pipeline import run
from .report.build import report_of_run
from .timing import timed

NOISY_EPOCHS = 300  # the noisy and retrained models' epochs: long enough for an MLP to memorize its noisy labels


def demo(workdir: Path, *, data: str = "digits", arch: str | None = None, kind: str = "symmetric", rate: float = 0.4,
         epochs: int = NOISY_EPOCHS, seed: int = 0, noise: Path | None = None, options: RunOptions | None = None,
         augment: str = "none", device: str = "auto", log=lambda _line: None, report: Path | None = None) -> dict:
    """Run the comparison in ``workdir``; returns the demo JSON record.

    The ``denoise`` run's rounds get their test accuracy saved as ``evaluate-test.json``, and its report is
    written to ``report`` (default ``workdir/report.html``; the record's ``report`` is its path).

    noise: a noise file (``denoise inject-noise``) to use instead of injecting ``kind`` noise at ``rate``.
    augment: the training augmentation of the noisy and retrained models and of every fine-tuning.
    The noisy and retrained models are reused when ``workdir`` already holds them, trained with the same
    options (their recorded wall time is reported again); the cleaning runs are always redone.
    """
    options = replace(options or RunOptions(), augment=augment)
    arch = arch or default_arch(data)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("denoise", "finetune-only"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    noisy, retrained = workdir / "noisy.safetensors", workdir / "retrain.safetensors"
    if noise is None:
        noise = workdir / "noise.npz"
        inject_noise(data, kind, rate, seed, noise)
        log(f"injected {rate:.0%} {kind} noise into {data}")
    else:
        recorded = load_npz(noise, "noise")[1].get("options", {})
        kind, rate = recorded.get("kind", "unknown"), recorded.get("rate", float("nan"))
        log(f"using {noise}: {kind} noise, rate {rate}")
    rows = []
    record = workdir / "trained.json"  # wall time and fit of the trained models, so a re-run can reuse them
    trained = json.loads(record.read_text()) if record.is_file() else {}
    for name, out, model_seed in (("noisy", noisy, seed), ("retrain", retrained, seed + 1)):
        result, seconds = timed(lambda: train(data, arch, out, Recipe(epochs=epochs, seed=model_seed, augment=augment), noise=noise,
                                              device=device, reuse=name in trained))
        if not result.get("skipped"):
            trained[name] = {"seconds": seconds, "train_accuracy": result["train_accuracy"]}
            atomic_write(record, lambda tmp: tmp.write_text(json.dumps(trained)))
        rows.append({"name": name, "seconds": trained[name]["seconds"]})
        log(f"{name}: {rows[-1]['seconds']:.1f} s" + (" (reused)" if result.get("skipped") else ""))
    fitted = trained["noisy"]["train_accuracy"]
    runs = {}
    for name, ratio in (("finetune-only", None), ("denoise", options.prune_ratio)):
        variant = replace(options, prune_ratio=ratio)
        runs[name], seconds = timed(lambda: run(noisy, data, workdir / name, variant, noise=noise, truth=noise,
                                                device=device))
        rows.append({"name": name, "seconds": seconds})
        log(f"{name}: {seconds:.1f} s")
    models = {"noisy": noisy, "retrain": retrained, **{name: Path(r["model"]) for name, r in runs.items()}}
    for row in rows:
        row["test_accuracy"] = evaluate(models[row["name"]], data, "test", device=device)["accuracy"]
    for round in runs["denoise"]["rounds"]:  # each round's test accuracy, for the report's round curves
        folder = workdir / "denoise" / f"round{round['round']}"
        evaluated = evaluate(folder / "clean.safetensors", data, "test", device=device)
        atomic_write(folder / "evaluate-test.json", lambda tmp: tmp.write_text(json.dumps(evaluated)))
    report = report_of_run(workdir, report or workdir / "report.html", data=data, device=device)
    log(f"report: {report}")
    final_partition = Path(runs["denoise"]["rounds"][-1]["partition"]["out"])
    detection = load_npz(final_partition, "partition")[1]["results"]["detection"]
    return {"dataset": data, "noise": {"kind": kind, "rate": rate}, "detection": detection,
            "chosen": {name: r["chosen"] for name, r in runs.items()},  # round or input: the no-harm check's choice
            "noisy_fit": fitted,  # the noisy model's accuracy on the noisy training labels it was trained on
            "report": report,  # the HTML report of the denoise run
            "rows": [{"name": r["name"], "test_accuracy": r["test_accuracy"], "seconds": r["seconds"]} for r in rows]}
