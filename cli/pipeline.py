"""``denoise run``: the five stages in order, in rounds, each output in a work directory.

Round r attributes with the model fine-tuned in round r-1 (the noisy model in round 1), partitions,
and fine-tunes the noisy model on the clean part. Rounds before the last fine-tune only the head
(``round_train``; cheap, on cached features): their model only has to forget enough of the noise to
separate it better in the next round. The last round, whose partition is the cleanest, also measures
sensitivity on the noisy model and prunes it before fine-tuning (pruning on an early, rougher
partition removed the wrong units and made the rounds diverge), and fine-tunes from weights shrunk
toward zero (``shrink``), which forgets the memorized noise faster; so do all-layer early rounds.
Every stage is called with ``reuse=True``: it is skipped when its output exists and records the same
options and input file hashes, so a killed run resumes where it stopped and a changed option re-runs
exactly the stages downstream of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from unlearn_core.partition import DEFAULT_FEATURES, FEATURE_KINDS, ORIENTATIONS
from unlearn_core.pruning import PRUNE_BY
from unlearn_core.training import TRAINABLE

from . import stages
from .data import read_once
from .errors import UsageError
from .files import atomic_write


@dataclass
class RunOptions:
    """The options of ``denoise run`` that shape its stages (see the stage functions for each)."""

    rounds: int = 3
    layer: str | None = None
    target: str = "label"
    per_class: bool = True
    features: str = ",".join(DEFAULT_FEATURES)
    dims: int = 10
    orient: str = "auto"  # how partition picks the noisy component (unlearn_core.partition.ORIENTATIONS)
    prune_ratio: float | None = 0.1
    prune_by: str = "noisy"
    train: str = "all"
    round_train: str = "head"  # fine-tuning of the rounds before the last (cheap: the head on cached features)
    epochs: int = 30  # fine-tuning epochs of the last round
    round_epochs: int = 30  # fine-tuning epochs of each round before the last
    lr: float = 1e-3
    shrink: float = 0.5  # shrink warm start of the last round, and of earlier rounds that fine-tune all layers
    batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        """Raise UsageError for the first option out of range, before any stage runs (a wrong
        ``--features`` or ``--ratio`` would otherwise surface only after the attributions were made)."""
        kinds = [kind.strip() for kind in self.features.split(",") if kind.strip()]
        if not kinds or any(kind not in FEATURE_KINDS for kind in kinds):
            raise UsageError(f"--features must be a comma list of {', '.join(FEATURE_KINDS)}, not {self.features!r}")
        if self.orient not in ORIENTATIONS:
            raise UsageError(f"--orient must be one of {', '.join(ORIENTATIONS)}, not {self.orient!r}")
        if self.prune_by not in PRUNE_BY or self.target not in ("label", "max"):
            raise UsageError("--by must be noisy or abs, and --target label or max")
        if {self.train, self.round_train} - set(TRAINABLE):
            raise UsageError("--train and --round-train must be all or head")
        if self.prune_ratio and not 0 < self.prune_ratio < 1:
            raise UsageError(f"--ratio must be in (0, 1), got {self.prune_ratio}")
        if self.rounds < 1:
            raise UsageError("--rounds must be at least 1")
        if self.lr <= 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if not 0 < self.shrink <= 1:
            raise UsageError(f"--shrink must be in (0, 1], got {self.shrink}")

    def round_shrink(self, last: bool) -> float:
        """The shrink factor of a round's fine-tune: ``shrink`` for the last round and for all-layer early
        rounds (``round_train="all"``); 1 for head-only early rounds (shrinking them hurt detection)."""
        return self.shrink if last or self.round_train == "all" else 1.0

    def round_recipe(self, last: bool) -> dict:
        """A round's fine-tuning: ``train`` (all or head), ``epochs`` and ``shrink``; the last round's own
        or that of the rounds before it."""
        return {"train": self.train if last else self.round_train, "epochs": self.epochs if last else self.round_epochs,
                "shrink": self.round_shrink(last)}


def run(model: Path, data: str, workdir: Path, options: RunOptions, *, noise: Path | None = None,
        truth: Path | None = None, device: str = "auto", arch: str | None = None,
        log: Callable[[str], None] = lambda _line: None) -> dict:
    """Run ``options.rounds`` rounds of the five stages; returns per-round summaries and the final model path.

    ``prune_ratio`` None or 0 skips sensitivity and pruning (fine-tuning only).
    """
    options.check()
    workdir.mkdir(parents=True, exist_ok=True)
    common = {"device": device, "arch": arch, "reuse": True}
    current, rounds, started = model, [], time.perf_counter()
    with read_once():  # every stage of every round reads the same train split: from disk once
        for r in range(1, options.rounds + 1):
            folder = workdir / f"round{r}"
            folder.mkdir(exist_ok=True)
            scores, split = folder / "scores.npz", folder / "partition.npz"
            summary = {"round": r}
            summary["attribute"] = stages.attribute(current, data, scores, noise=noise, layer=options.layer,
                                                    target=options.target, **common)
            summary["partition"] = stages.partition(scores, split, per_class=options.per_class,
                                                    features=options.features, truth=truth, dims=options.dims,
                                                    seed=options.seed, orient=options.orient, reuse=True)
            tuned_from, last = model, r == options.rounds
            if options.prune_ratio and last:
                summary["sensitivity"] = stages.sensitivity(model, data, split, folder / "sensitivity.npz",
                                                            noise=noise, layer=options.layer, **common)
                tuned_from = folder / "pruned.safetensors"
                summary["prune"] = stages.prune(model, folder / "sensitivity.npz", tuned_from,
                                                ratio=options.prune_ratio, by=options.prune_by, arch=arch,
                                                reuse=True)
            current = folder / "clean.safetensors"
            summary["finetune"] = stages.finetune(tuned_from, data, split, current, noise=noise,
                                                  **options.round_recipe(last), lr=options.lr,
                                                  batch_size=options.batch_size, seed=options.seed + r, resume=True,
                                                  **common)
            for name, result in summary.items():
                if name != "round":
                    log(f"round {r}: {name} {'up to date' if result.get('skipped') else 'done'}")
            rounds.append(summary)
    result = {"model": str(current), "rounds": rounds, "seconds": time.perf_counter() - started,
              "options": asdict(options)}
    atomic_write(workdir / "run.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result
