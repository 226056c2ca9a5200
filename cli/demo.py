"""``denoise demo``: the whole method on a real data set, side by side with retraining.

On the train split it injects label noise, trains a model until it fits the noisy labels (``noisy``),
retrains one from scratch on the same noisy data with the same recipe (``retrain``), and cleans the
noisy model with our fine-tuning alone (``finetune-only``) and with all five stages (``denoise``).
Every row is scored on the untouched test split; detection is the final partition against the truth.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import stages
from .files import atomic_write, load_npz
from .pipeline import RunOptions, run

DEMO_ARCH = {"digits": "mlp", "fsdd": "kws"}


def demo(workdir: Path, *, data: str = "digits", arch: str | None = None, kind: str = "symmetric", rate: float = 0.4,
         epochs: int = 300, seed: int = 0, noise: Path | None = None, options: RunOptions | None = None,
         device: str = "auto", log=lambda _line: None) -> dict:
    """Run the comparison in ``workdir``; returns the demo JSON record.

    noise: a noise file (``denoise inject-noise``) to use instead of injecting ``kind`` noise at ``rate``.
    The noisy and retrained models are reused when ``workdir`` already holds them, trained with the same
    options (their recorded wall time is reported again); the cleaning runs are always redone.
    """
    options = options or RunOptions()
    arch = arch or DEMO_ARCH.get(data.split(":")[0], "mlp")
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("denoise", "finetune-only"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    noisy, retrained = workdir / "noisy.safetensors", workdir / "retrain.safetensors"
    if noise is None:
        noise = workdir / "noise.npz"
        stages.inject_noise(data, kind, rate, seed, noise)
        log(f"injected {rate:.0%} {kind} noise into {data}")
    else:
        recorded = load_npz(noise, "noise")[1].get("options", {})
        kind, rate = recorded.get("kind", "unknown"), recorded.get("rate", float("nan"))
        log(f"using {noise}: {kind} noise, rate {rate}")
    rows = []

    def timed(name: str, call) -> dict:
        started = time.perf_counter()
        result = call()
        rows.append({"name": name, "seconds": time.perf_counter() - started})
        log(f"{name}: {rows[-1]['seconds']:.1f} s")
        return result

    recipe = {"noise": noise, "epochs": epochs, "device": device}
    record = workdir / "trained.json"  # wall time and fit of the trained models, so a re-run can reuse them
    trained = json.loads(record.read_text()) if record.is_file() else {}
    for name, out, model_seed in (("noisy", noisy, seed), ("retrain", retrained, seed + 1)):
        started = time.perf_counter()
        result = stages.train(data, arch, out=out, seed=model_seed, reuse=name in trained, **recipe)
        if not result.get("skipped"):
            trained[name] = {"seconds": time.perf_counter() - started, "train_accuracy": result["train_accuracy"]}
            atomic_write(record, lambda tmp: tmp.write_text(json.dumps(trained)))
        rows.append({"name": name, "seconds": trained[name]["seconds"]})
        log(f"{name}: {rows[-1]['seconds']:.1f} s" + (" (reused)" if result.get("skipped") else ""))
    fitted = trained["noisy"]["train_accuracy"]
    runs = {}
    for name, ratio in (("finetune-only", None), ("denoise", options.prune_ratio)):
        variant = RunOptions(**{**options.__dict__, "prune_ratio": ratio})
        runs[name] = timed(name, lambda: run(noisy, data, workdir / name, variant, noise=noise, truth=noise,
                                              device=device))
    models = {"noisy": noisy, "retrain": retrained, **{name: Path(r["model"]) for name, r in runs.items()}}
    for row in rows:
        row["test_accuracy"] = stages.evaluate(models[row["name"]], data, "test", device=device)["accuracy"]
    final_partition = workdir / "denoise" / f"round{options.rounds}" / "partition.npz"
    detection = load_npz(final_partition, "partition")[1]["results"]["detection"]
    return {"dataset": data, "noise": {"kind": kind, "rate": rate}, "detection": detection,
            "noisy_fit": fitted,  # the noisy model's accuracy on the noisy training labels it was trained on
            "rows": [{"name": r["name"], "test_accuracy": r["test_accuracy"], "seconds": r["seconds"]} for r in rows]}
