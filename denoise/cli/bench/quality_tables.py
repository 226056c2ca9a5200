"""``bench quality``'s rows: the CSV they are kept in, and the markdown tables made of them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from denoise.core import detectors as registry
from denoise.core.noise import NOISE_KINDS

COLUMNS = ("data", "kind", "rate", "seed", "detector", "method", "test_accuracy", "precision", "recall", "f1",
           "auroc", "seconds", "chosen", "flagged")  # chosen: the model the no-harm check handed back (input or
# roundR); flagged: the share of the train split the last partition flags. Files written before these two
# columns read as None in them.
NUMERIC = {"rate": float, "seed": int, "test_accuracy": float, "precision": float, "recall": float, "f1": float,
           "auroc": float, "seconds": float, "flagged": float}
# The registered detectors (``denoise.core.detectors.DETECTORS``) at import, in table order, and the baselines ours
# must beat with no extra training; the tables read the registry itself, so a detector registered later shows too.
DETECTORS = tuple(registry.DETECTORS)
BASELINES = tuple(name for name, d in registry.DETECTORS.items() if d.baseline)
METHODS = ("noisy", "retrain", "oracle", "finetune-only", "denoise", "denoise-relabel")  # the last: --relabel


def _fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not values:
        return ""
    mean = f"{float(np.mean(values)):.{digits}f}"
    return f"{mean} ± {float(np.std(values, ddof=1)):.{digits}f}" if len(values) > 1 else mean

def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Rows grouped by ``keys``, groups in table order (noise kinds, detectors and methods as listed; a detector
    no longer registered last)."""
    order = {"kind": NOISE_KINDS, "detector": ("none", *registry.DETECTORS), "method": METHODS}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    place = lambda k, v: order[k].index(v) if v in order[k] else len(order[k])  # noqa: E731
    rank = lambda key: tuple(place(k, v) if k in order else v for k, v in zip(keys, key))  # noqa: E731
    return dict(sorted(groups.items(), key=lambda item: rank(item[0])))

def _mean(rows: list[dict], cell: tuple, detector: str, method: str, column: str = "test_accuracy") -> float:
    found = [r[column] for r in rows if (r["data"], r["kind"], r["rate"]) == cell
             and r["detector"] == detector and r["method"] == method and r.get(column) is not None]
    return float(np.mean(found)) if found else float("nan")

def _gain_table(rows: list[dict], cells: list[tuple], detectors: list[str], title: str, method: str,
                against: str) -> list[str]:
    """The lines of a table of ``method`` minus ``against`` test accuracy, per cell and detector."""
    lines = ["", f"{title}: `{method}` minus `{against}` test accuracy, points (mean over seeds)", "",
             "| data | noise | rate | " + " | ".join(detectors) + " |", "|---|---|---|" + "---|" * len(detectors)]
    for cell in cells:
        gains = [100 * (_mean(rows, cell, d, method) - _mean(rows, cell, d, against)) for d in detectors]
        shown = ["" if math.isnan(g) else f"{g:+.1f}" for g in gains]  # blank: detector not run in this cell
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]:g} | " + " | ".join(shown) + " |")
    return lines

def markdown(rows: list[dict]) -> str:
    """Markdown tables over seeds (mean ± sample std): every method; pruning's effect; relabeling's effect (when
    ``denoise-relabel`` was run); the headline checks."""
    lines = ["| data | noise | rate | detector | method | test acc. (%) | precision | recall | F1 | AUROC | flagged "
             "| seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (data, kind, rate, detector, method), group in _groups(rows, ("data", "kind", "rate", "detector",
                                                                       "method")).items():
        cols = [_fmt([r["test_accuracy"] for r in group], 100, 1)]
        cols += [_fmt([r.get(k) for r in group]) for k in ("precision", "recall", "f1", "auroc", "flagged")]
        cols.append(_fmt([r["seconds"] for r in group], 1, 1))
        lines.append(f"| {data} | {kind} | {rate:g} | {detector} | {method} | " + " | ".join(cols) + " |")
    cells = list(_groups(rows, ("data", "kind", "rate")))
    detectors = [d for d in registry.DETECTORS if any(r["detector"] == d for r in rows)]
    baselines = [name for name, d in registry.DETECTORS.items() if d.baseline]
    lines += _gain_table(rows, cells, detectors, "Pruning", "denoise", "finetune-only")
    if any(r["method"] == "denoise-relabel" for r in rows):
        lines += _gain_table(rows, cells, detectors, "Relabeling", "denoise-relabel", "denoise")
    ours_name = registry.OURS
    lines += ["", f"Ours (`{ours_name}`, `denoise`) against the baselines (means over seeds; best other F1: of the "
              f"detectors that need no extra training, {', '.join(baselines)}, those run in the cell)", "",
              "| data | noise | rate | denoise − noisy | denoise − retrain (points) | gap noisy→oracle "
              "recovered | flagged | F1 (best other) | denoise / retrain seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        ours, retrain = _mean(rows, cell, ours_name, "denoise"), _mean(rows, cell, "none", "retrain")
        if math.isnan(ours):  # ours not run in this cell: nothing to set against the baselines
            continue
        noisy, oracle = _mean(rows, cell, "none", "noisy"), _mean(rows, cell, "none", "oracle")
        seconds = {m: np.mean([r["seconds"] for r in rows if (r["data"], r["kind"], r["rate"]) == cell
                               and r["method"] == m and r["detector"] in (ours_name, "none")])
                   for m in ("denoise", "retrain")}
        recovered = f"{(ours - noisy) / (oracle - noisy):.0%}" if oracle - noisy >= 0.01 else "no gap (< 1 point)"
        flagged, f1 = (_fmt([_mean(rows, cell, ours_name, "denoise", k)]) for k in ("flagged", "f1"))
        others = {d: _mean(rows, cell, d, "denoise", "f1") for d in baselines}
        best = max((d for d in others if not math.isnan(others[d])), key=others.get, default=None)
        versus = f"{f1} ({best} {others[best]:.3f})" if best else f1
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]:g} | {100 * (ours - noisy):+.1f} | "
                     f"{100 * (ours - retrain):+.1f} | {recovered} | {flagged} | {versus} | "
                     f"{seconds['denoise'] / seconds['retrain']:.0%} |")
    return "\n".join(lines) + "\n"

def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV written by ``write_rows`` (empty detection columns become None)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    read = [{k: (NUMERIC[k](v) if v != "" else None) if k in NUMERIC else v for k, v in row.items()} for row in rows]
    return [{**dict.fromkeys(COLUMNS), **{k: v for k, v in row.items() if v != ""}} for row in read]

def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV with ``COLUMNS``, detection columns empty where no detector is used."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows([{k: "" if row.get(k) is None else row[k] for k in COLUMNS} for row in rows])
    tmp.replace(path)
