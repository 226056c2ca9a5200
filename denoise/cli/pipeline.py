"""``denoise run``: the rounds of ``denoise.core.rounds.plan`` walked over files in a work directory.

Every stage is called with ``reuse=True``: it is skipped when its output exists and records the same
options and input file hashes, so a killed run resumes where it stopped and a changed option re-runs
exactly the stages downstream of it. Under torchrun every rank walks the rounds: attribute, sensitivity and
finetune run distributed, the single-process steps on rank 0 (``RankSteps``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Callable

from denoise.core.augment import augmenter
from denoise.core.regime import MEMORIZED
from denoise.core.rounds import RunOptions, run_rounds
from denoise.core.selection import HOLDOUT, INPUT, NoHarm

from .data import read_once
from .data.samples import check_validation
from .device import resolve_device
from .distributed import Ranks, join
from .errors import usage_errors
from .files.checkpoint import ModelInfo, read_metadata
from .files.paths import atomic_write
from .stages import AS_TRAINED, FileSteps, held_out_correct

def run(model: Path, data: str, workdir: Path, options: RunOptions, *, noise: Path | None = None,
        truth: Path | None = None, validation: str | None = None, device: str = "auto", arch: str | None = None,
        log: Callable[[str], None] = lambda _line: None, warn: Callable[[str], None] | None = None) -> dict:
    """Run the rounds of ``options`` from the noisy checkpoint ``model``; returns per-round stage summaries,
    the final model's path and the wall seconds, and writes the same record to ``workdir/run.json``.
    ``plan`` holds what each round did (``denoise.core.rounds.Round`` as a dict: the features its partition was
    asked for, whether it pruned, its fine-tuning recipe); a stage whose output was current keeps the timing
    and summary of the run that made it (``denoise.cli.stage_timing``).

    ``options.prune_ratio`` None skips sensitivity and pruning (fine-tuning only). ``model`` in the result is
    the chosen checkpoint: the input itself when no round's model passed the no-harm check (``chosen``
    says which, ``no_harm`` holds the figures; see ``denoise.core.selection``; ``options_used`` the
    options with the early rounds round 1 chose, ``RunOptions.resolved``). ``validation``: a data spec whose
    train split the model was not trained on decides that check instead of held-out samples
    (``options.holdout`` must be 0); checked to fit ``model`` and ``data`` before any stage runs. ``log``
    gets progress lines, ``warn`` (default: ``log``) the lines saying the input model is handed back, or that
    the check could not see small harm (``_say_no_harm``).
    """
    info = ModelInfo.from_json(read_metadata(model))
    if options.augment == AS_TRAINED:
        options = replace(options, augment=info.augment)
    with usage_errors():
        options.check(validation=validation is not None)
        augmenter(options.augment, tuple(info.input_shape))
    workdir.mkdir(parents=True, exist_ok=True)
    ranks = join(resolve_device(device))
    if not ranks.main:  # rank 0 reports for all
        log = warn = lambda _line: None
    steps = FileSteps(workdir, data, noise=noise, truth=truth, device=device, arch=arch, log=log)
    if ranks.world > 1:
        steps = RankSteps(ranks, steps)
    started = time.perf_counter()
    with read_once():  # every stage of every round reads the same train split: from disk once
        correct = None
        if validation is not None:
            check_validation(validation, data, info)
            correct = partial(held_out_correct, data=validation, holdout_file=None, device=device, arch=arch)
        outcome = run_rounds(steps, options, model, correct)
    if outcome.no_harm is not None:
        _say_no_harm(outcome.no_harm, outcome.chosen, log, warn or log)
    no_harm = asdict(outcome.no_harm) if outcome.no_harm is not None else None
    result = {"model": str(outcome.model), "chosen": outcome.chosen, "no_harm": no_harm,
              "validation": validation, "rounds": list(steps.summaries.values()),
              "plan": [asdict(round) for round in steps.plan.values()],
              "seconds": time.perf_counter() - started, "options": asdict(options),
              "options_used": asdict(outcome.options)}
    record = json.dumps(result, indent=2)
    ranks.main_writes(lambda: atomic_write(workdir / "run.json", lambda tmp: tmp.write_text(record)))
    return result


def _say_no_harm(record: NoHarm, chosen: str, log: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """The no-harm check's outcome (``selection.choose``'s ``record``) for the user: ``warn`` where the input is
    handed back, or where held-out samples passed a memorized input's cleaning and so could not see small harm."""
    held, accuracy, holdout = record.held_out, record.accuracy, record.source == HOLDOUT
    figures = ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items() if value is not None)
    samples = f"{held} {'held-out' if holdout else 'validation'} samples"
    # held-out samples come from the input's training set and favour it: say how to check without that bias
    hint = "; --validation SPEC checks on samples it never trained on" if holdout else ""
    if chosen == INPUT:
        warn(f"the cleaned model is worse than the input on {samples} ({figures}): handing back the input model "
             f"unchanged{hint}")
        return
    log(f"no-harm check passed on {samples} ({figures})")
    if holdout and held and record.regime == MEMORIZED:
        warn(f"the input model memorized the labels of its training set, these {held} samples included, and every "
             f"round starts from its weights: so this check sees only a loss of more than {record.tolerance:.2f} "
             f"in accuracy{hint}")


class RankSteps:
    """``FileSteps`` under torchrun: the single-process steps (partition, hold-out, prune) run on rank 0 while
    the other ranks wait at a barrier; they then make the same call, which finds rank 0's output current and
    reuses it. Every other step (distributed itself, or read-only) goes to ``steps`` on every rank.
    """

    def __init__(self, ranks: Ranks, steps: FileSteps):
        self.ranks, self.steps = ranks, steps

    def __getattr__(self, name: str):
        return getattr(self.steps, name)

    def _main_first(self, step, *args):
        if self.ranks.main:
            out = step(*args)
        self.ranks.barrier()
        return out if self.ranks.main else step(*args)

    def partition(self, scores, round):
        return self._main_first(self.steps.partition, scores, round)

    def hold_out(self, partition_file, round):
        return self._main_first(self.steps.hold_out, partition_file, round)

    def prune(self, model, sensitivity_file, round):
        return self._main_first(self.steps.prune, model, sensitivity_file, round)
