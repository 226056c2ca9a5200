"""The Python API: find_label_issues and clean on arrays, over the same stages as the command line."""

import numpy as np
import pytest

import denoise
from denoise.cli.report.suspects import COLUMNS


@pytest.mark.slow
def test_find_label_issues_and_clean_on_arrays(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    digits = load_digits()
    x, truth = (digits.data / 16.0).reshape(-1, 1, 8, 8)[:500], digits.target[:500]
    rng = np.random.default_rng(0)
    wrong = rng.random(len(truth)) < 0.3
    y = truth.copy()
    y[wrong] = (y[wrong] + rng.integers(1, 10, wrong.sum())) % 10
    found = denoise.find_label_issues(x, y, epochs=100, workdir=tmp_path)
    assert list(found.columns) == list(COLUMNS) and len(found) == len(y)
    assert sorted(found["row"]) == list(range(len(y))), "every row of the user's array, once"
    assert (np.diff(found["label_score"].to_numpy()) >= 0).all()
    assert np.array_equal(found["given_label"].to_numpy(), y[found["row"].to_numpy()])
    assert roc_auc_score(wrong[found["row"].to_numpy()], -found["label_score"]) > 0.9
    record = denoise.clean(tmp_path / "model.safetensors", x, y, workdir=tmp_path / "again")
    assert record["chosen"] and (tmp_path / "again" / "run" / "run.json").is_file()
    with pytest.raises(ValueError, match="needs its labels"):
        denoise.find_label_issues(x)
