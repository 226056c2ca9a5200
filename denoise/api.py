"""The Python API: the command line's stages called from a notebook, on arrays or on a data spec.

``find_label_issues(data, labels)`` returns a pandas DataFrame with the columns of ``denoise issues``, one
row per sample (``is_label_issue`` marks the flagged ones), sorted by ``label_score`` (low: likely
wrong). ``clean(model, data)`` runs ``denoise run`` and returns its record (``model``: the checkpoint it
hands back). Both work in ``workdir`` (default: a temporary folder, removed afterwards), through the same
stage functions and files as the command line, so a run can be inspected there with the CLI too.
"""

from __future__ import annotations

import io
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .core.rounds import RunOptions
from .core.training import Recipe


@contextmanager
def _folder(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="denoise-") as scratch:
        yield Path(scratch)


def _spec(data, labels, folder: Path) -> str:
    """A data spec: ``data`` itself, or an ``npz:`` file in ``folder`` of the (N, ...) array and (N,) labels."""
    if isinstance(data, str):
        if labels is not None:
            raise ValueError("labels go with an array; a data spec brings its own")
        return data
    if labels is None:
        raise ValueError("an array of inputs needs its labels")
    x, y = np.asarray(data, dtype=np.float32), np.asarray(labels)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    path = folder / "data.npz"
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


def clean(model: str | Path, data, labels=None, *, workdir: str | Path | None = None,
          options: RunOptions = RunOptions(), device: str = "auto") -> dict:
    """``denoise run`` of the checkpoint ``model`` on ``data`` (a data spec, or an (N, ...) array with its (N,)
    ``labels``): the record ``run.json`` holds; its ``model`` is the checkpoint handed back (copied out of a
    temporary ``workdir`` is the caller's part: give ``workdir`` to keep it)."""
    from .cli.pipeline import run

    with _folder(workdir) as folder:
        return run(Path(model), _spec(data, labels, folder), folder / "run", options, device=device)


def find_label_issues(data, labels=None, *, model: str | Path | None = None, arch: str | None = None,
                      epochs: int | None = None, workdir: str | Path | None = None,
                      options: RunOptions = RunOptions(), device: str = "auto"):
    """Every sample of ``data``'s train split (a data spec, or an (N, ...) array with its (N,) ``labels``) with
    the columns of ``denoise issues --all``, as a pandas DataFrame sorted by ascending ``label_score``.

    model: the checkpoint trained on these labels; without one a model of ``arch`` (default: the data kind's)
    is trained for ``epochs`` (default: the demo's) first. The scores and partition are those of the last
    round of ``clean``; the suggested labels are the cleaned model's predictions.
    """
    import pandas

    from .cli.data import default_arch
    from .cli.demo import NOISY_EPOCHS
    from .cli.model_commands import train
    from .cli.pipeline import run
    from .cli.report.suspects import issues

    with _folder(workdir) as folder:
        spec = _spec(data, labels, folder)
        if model is None:
            model = folder / "model.safetensors"
            train(spec, arch or default_arch(spec), model, replace(Recipe(), epochs=epochs or NOISY_EPOCHS),
                  device=device, reuse=True)
        record = run(Path(model), spec, folder / "run", options, device=device)
        last = Path(record["rounds"][-1]["partition"]["out"]).parent
        found = issues(last / "scores.npz", last / "partition.npz", data=spec, model=Path(record["model"]),
                       every=True, device=device)
    return pandas.read_csv(io.StringIO(found["csv"]), keep_default_na=False)
