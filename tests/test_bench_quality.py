"""`denoise bench quality --quick` on a tiny npz data set: the table's shape and finite figures."""

import csv
import math

import numpy as np
import pytest

from cli.bench_quality import COLUMNS, DETECTORS

pytest.importorskip("cleanlab")


def _blobs(path, classes=3, per_class=60, features=6, seed=0):
    """Overlapping Gaussian blobs, 2/3 train and 1/3 test per class."""
    rng = np.random.default_rng(seed)
    centers = 1.5 * rng.standard_normal((classes, features))
    y = np.repeat(np.arange(classes), per_class)
    x = centers[y] + rng.standard_normal((len(y), features))
    split = np.where(np.arange(len(y)) % 3 == 0, "test", "train")
    np.savez(path, x=x.astype(np.float32), y=y, split=split)


@pytest.mark.slow
def test_quick_table_shape_and_finite_figures(denoise, tmp_path):
    _blobs(tmp_path / "blobs.npz")
    out, table = tmp_path / "rows.csv", tmp_path / "table.md"
    result = denoise("bench", "quality", "--data", f"npz:{tmp_path / 'blobs.npz'}", "--quick", "--epochs", 15,
                     "--finetune-epochs", 3, "--rounds", 2, "--folds", 2, "--out", out, "--markdown", table, "--json")
    assert result.code == 0, result.err
    rows = result.json
    methods = [("none", m) for m in ("noisy", "retrain", "oracle")]
    methods += [(d, m) for d in DETECTORS for m in ("finetune-only", "denoise")]
    assert [(r["detector"], r["method"]) for r in rows] == methods
    assert all((r["kind"], r["rate"], r["seed"]) == ("symmetric", 0.4, 0) for r in rows)
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == COLUMNS and len(written) == len(rows)
    for row in rows:
        detection = [row[k] for k in ("precision", "recall", "f1", "auroc")]
        if row["detector"] == "none":
            assert detection == [None] * 4
        else:
            assert all(math.isfinite(v) and 0 <= v <= 1 for v in detection)
        assert 0 <= row["test_accuracy"] <= 1 and math.isfinite(row["seconds"]) and row["seconds"] >= 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| data | noise | rate | detector | method |")
    assert len([line for line in lines if line.startswith("| npz:")]) == len(rows) + 2
    assert "nan" not in table.read_text()
