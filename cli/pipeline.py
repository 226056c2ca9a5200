"""``denoise run``: the rounds of ``unlearn_core.rounds.plan`` walked over files in a work directory.

Every stage is called with ``reuse=True``: it is skipped when its output exists and records the same
options and input file hashes, so a killed run resumes where it stopped and a changed option re-runs
exactly the stages downstream of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from unlearn_core.rounds import RunOptions, clean, detect, plan

from .data import read_once
from .errors import usage_errors
from .files.paths import atomic_write
from .stages import FileSteps


def run(model: Path, data: str, workdir: Path, options: RunOptions, *, noise: Path | None = None,
        truth: Path | None = None, device: str = "auto", arch: str | None = None,
        log: Callable[[str], None] = lambda _line: None) -> dict:
    """Run the rounds of ``options`` from the noisy checkpoint ``model``; returns per-round stage summaries,
    the final model's path and the wall seconds, and writes the same record to ``workdir/run.json``.

    ``options.prune_ratio`` None skips sensitivity and pruning (fine-tuning only).
    """
    with usage_errors():
        options.check()
    workdir.mkdir(parents=True, exist_ok=True)
    steps = FileSteps(workdir, data, options, noise=noise, truth=truth, device=device, arch=arch)
    current, started = model, time.perf_counter()
    with read_once():  # every stage of every round reads the same train split: from disk once
        for round in plan(options):
            current = clean(steps, round, model, detect(steps, round, current))
            for name, result in steps.summaries[round.number].items():
                if name != "round":
                    log(f"round {round.number}: {name} {'up to date' if result.get('skipped') else 'done'}")
    result = {"model": str(current), "rounds": list(steps.summaries.values()), "seconds": time.perf_counter() - started,
              "options": asdict(options)}
    atomic_write(workdir / "run.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return result
