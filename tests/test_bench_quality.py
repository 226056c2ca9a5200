"""`denoise bench quality --quick` on a tiny npz data set: the table's shape and finite figures."""

import csv
import math

import numpy as np
import pytest

from denoise.cli.bench.quality_tables import COLUMNS, DETECTORS

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


@pytest.mark.slow
def test_resume_runs_only_the_rows_an_interrupted_run_left_out_on_the_noisy_model_it_kept(denoise, tmp_path):
    """An interrupted cell resumes at its first missing row, a detector added later runs alone, both clean the
    noisy model the first run kept (not a new one), and every row is what one uninterrupted run gives."""
    _blobs(tmp_path / "blobs.npz")
    common = ("bench", "quality", "--data", f"npz:{tmp_path / 'blobs.npz'}", "--quick", "--epochs", 15,
              "--finetune-epochs", 3, "--rounds", 2, "--json")
    whole = denoise(*common, "--detectors", "attribution,loss", "--out", tmp_path / "whole.csv")
    assert whole.code == 0, whole.err
    out = tmp_path / "parts.csv"
    first = denoise(*common, "--detectors", "attribution", "--out", out)
    assert first.code == 0, first.err
    assert len(list((tmp_path / "parts.csv.models").glob("noisy-symmetric-0.4-0-*.safetensors"))) == 1
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n")  # as if killed before the cell's last row was written
    resumed = denoise(*common, "--detectors", "attribution,loss", "--out", out, "--resume")
    assert resumed.code == 0, resumed.err
    assert "noisy model read from" in resumed.err and resumed.err.count(" accuracy ") == 3  # denoise, loss x2
    columns = ("detector", "method", "test_accuracy", "f1", "flagged", "chosen")
    assert [[r[k] for k in columns] for r in resumed.json] == [[r[k] for k in columns] for r in whole.json]
    assert [r["seconds"] for r in resumed.json[:3]] == [r["seconds"] for r in first.json[:3]]  # not trained again
    again = denoise(*common, "--detectors", "attribution,loss", "--out", out, "--resume")
    assert again.code == 0 and again.json == resumed.json and " accuracy " not in again.err


@pytest.mark.slow
def test_methods_runs_only_the_methods_named(denoise, tmp_path):
    """``--methods denoise`` skips finetune-only (a short GPU lease's cell), and its table has no nan."""
    _blobs(tmp_path / "blobs.npz")
    common = ("bench", "quality", "--data", f"npz:{tmp_path / 'blobs.npz'}", "--quick", "--epochs", 15,
              "--finetune-epochs", 3, "--rounds", 2, "--detectors", "attribution,loss")
    result = denoise(*common, "--methods", "denoise", "--markdown", tmp_path / "table.md", "--json")
    assert result.code == 0, result.err
    assert [(r["detector"], r["method"]) for r in result.json][3:] == [("attribution", "denoise"), ("loss", "denoise")]
    assert "nan" not in (tmp_path / "table.md").read_text()
    wrong = denoise(*common, "--methods", "denoise,retrain")
    assert wrong.code != 0 and "--methods must be a comma list of finetune-only, denoise" in wrong.err


def test_markdown_leaves_cells_blank_for_detectors_not_run_there():
    from denoise.cli.bench.quality_tables import markdown

    def row(rate, detector, method, accuracy):
        detection = dict.fromkeys(("precision", "recall", "f1", "auroc"), None if detector == "none" else 0.5)
        return {"data": "d", "kind": "symmetric", "rate": rate, "seed": 0, "detector": detector, "method": method,
                "test_accuracy": accuracy, **detection, "seconds": 1.0}

    rows = []
    for rate, detectors in ((0.2, ("attribution",)), (0.4, ("attribution", "loss"))):
        rows += [row(rate, "none", m, 0.5) for m in ("noisy", "retrain", "oracle")]
        rows += [row(rate, d, m, a) for d in detectors for m, a in (("finetune-only", 0.8), ("denoise", 0.81))]
    table = markdown(rows)
    assert "nan" not in table
    assert "| d | symmetric | 0.2 | +1.0 |  |" in table and "| d | symmetric | 0.4 | +1.0 | +1.0 |" in table


def test_markdown_adds_the_relabeling_table_only_when_denoise_relabel_was_run():
    from denoise.cli.bench.quality_tables import markdown

    rows = [{"data": "d", "kind": "symmetric", "rate": 0.4, "seed": 0, "detector": "attribution", "method": method,
             "test_accuracy": accuracy, "seconds": 1.0}
            for method, accuracy in (("finetune-only", 0.8), ("denoise", 0.81), ("denoise-relabel", 0.79))]
    rows += [{**rows[0], "detector": "none", "method": m} for m in ("noisy", "retrain", "oracle")]
    title = "Relabeling: `denoise-relabel` minus `denoise`"
    table = markdown(rows).split(title)[1]
    assert table.splitlines()[4] == "| d | symmetric | 0.4 | -2.0 |"
    assert title not in markdown([r for r in rows if r["method"] != "denoise-relabel"])


def test_ours_against_the_baselines_shows_the_flagged_share_and_the_best_other_detectors_f1():
    from denoise.cli.bench.quality_tables import markdown

    def row(detector, method, accuracy, f1=None, flagged=None):
        return {"data": "d", "kind": "symmetric", "rate": 0.4, "seed": 0, "detector": detector, "method": method,
                "test_accuracy": accuracy, "f1": f1, "flagged": flagged, "seconds": 1.0}

    rows = [row("none", m, a) for m, a in (("noisy", 0.5), ("retrain", 0.49), ("oracle", 0.9))]
    rows += [row("attribution", m, 0.8, 0.9, 0.41) for m in ("finetune-only", "denoise")]
    rows += [row(d, m, 0.6, f1, 0.3) for d, f1 in (("loss", 0.7), ("cleanlab", 0.75))
             for m in ("finetune-only", "denoise")]
    table = markdown(rows).split("Ours (")[1]
    assert "| d | symmetric | 0.4 | +30.0 | +31.0 | 75% | 0.410 | 0.900 (cleanlab 0.750) | 100% |" in table
