"""The detector registries: a detector registered here alone runs in `bench quality`; the method's own ones."""

import numpy as np
import pytest

from denoise.core import detectors
from denoise.core.detectors import (ATTRIBUTION_MIXTURE, DETECTORS, INPUT_ENERGY_MIXTURE, LOSS_MIXTURE, PROBS,
                                    SCORES, Detector, add_detector, method_detector, register_detector)


def _blobs(path, classes=4, per_class=45, features=6, seed=0):
    """Overlapping Gaussian blobs, 2/3 train and 1/3 test per class."""
    rng = np.random.default_rng(seed)
    centers = 1.5 * rng.standard_normal((classes, features))
    y = np.repeat(np.arange(classes), per_class)
    x = centers[y] + rng.standard_normal((len(y), features))
    np.savez(path, x=x.astype(np.float32), y=y, split=np.where(np.arange(len(y)) % 3 == 0, "test", "train"))


@pytest.fixture
def odd_label():
    """A toy detector, registered as a contributor would: it flags every sample whose given label is odd, and
    keeps the labels its split saw; unregistered afterwards."""
    seen = []

    @register_detector("odd-label", evidence=PROBS)
    def odd_label_split(probs, labels, seed):
        seen.append(labels.copy())
        even = labels % 2 == 0
        return even, np.where(even, 1.0, 0.0) + probs.max(1) * 1e-3  # higher = more likely clean

    yield seen
    DETECTORS.pop("odd-label")


def test_a_detector_registered_alone_runs_through_bench_quality(denoise, tmp_path, odd_label):
    """Registered in this file only, the toy detector is a `--detectors` choice, its split decides the
    partition its rows are scored on (it flags exactly the odd labels), and the tables list it."""
    _blobs(tmp_path / "blobs.npz")
    result = denoise("bench", "quality", "--data", f"npz:{tmp_path / 'blobs.npz'}", "--quick", "--epochs", 10,
                     "--finetune-epochs", 2, "--rounds", 2, "--methods", "denoise", "--threads", 1,
                     "--detectors", "odd-label,disagreement", "--markdown", tmp_path / "table.md", "--json")
    assert result.code == 0, result.err
    rows = {r["detector"]: r for r in result.json if r["detector"] != "none"}
    assert list(rows) == ["odd-label", "disagreement"]
    labels = odd_label[-1]
    assert len(odd_label) == 2 and len(labels) == 120  # both rounds; the train split's (noisy) labels
    assert rows["odd-label"]["flagged"] == pytest.approx(np.mean(labels % 2 == 1))
    assert rows["odd-label"]["flagged"] != rows["disagreement"]["flagged"]
    assert rows["odd-label"]["f1"] != rows["disagreement"]["f1"]
    table = (tmp_path / "table.md").read_text()
    assert "| odd-label | denoise |" in table and "nan" not in table  # ours not run: no headline row
    wrong = denoise("bench", "quality", "--data", "digits", "--detectors", "odd-label,even-label")
    assert wrong.code != 0 and "--detectors must be a comma list of attribution," in wrong.err


def test_the_registry_refuses_a_taken_name_an_unknown_evidence_and_a_missing_split():
    assert list(DETECTORS) == ["attribution", "attribution-global", "disagreement", "loss", "cleanlab",
                               "cleanlab-cv"]  # the tables' order
    assert [n for n, d in DETECTORS.items() if d.baseline] == ["disagreement", "loss", "cleanlab"]
    assert [n for n, d in DETECTORS.items() if d.one_round] == ["cleanlab-cv"]
    with pytest.raises(ValueError, match="registered already"):
        register_detector("loss")(detectors.loss_split)
    with pytest.raises(ValueError, match="evidence must be one of"):
        register_detector("by-votes", evidence="votes")(detectors.loss_split)
    with pytest.raises(ValueError, match="a split is needed"):
        add_detector(Detector("no-split", None, PROBS))
    with pytest.raises(ValueError, match="a split is needed"):
        add_detector(Detector("scores-split", detectors.loss_split, SCORES))
    assert "by-votes" not in DETECTORS and "no-split" not in DETECTORS and "scores-split" not in DETECTORS


def test_the_methods_detectors_keep_their_recorded_names_and_say_what_they_split_by():
    """The names are written into partition files and JSON: a public interface."""
    assert [d.name for d in (ATTRIBUTION_MIXTURE, LOSS_MIXTURE, INPUT_ENERGY_MIXTURE)] == [
        "attribution-mixture", "loss-mixture", "input-energy-mixture"]
    assert [method_detector(n).corrupted_inputs for n in ("attribution-mixture", "loss-mixture",
                                                          "input-energy-mixture", None)] == [False, False, True, False]
    assert method_detector(None) is ATTRIBUTION_MIXTURE and method_detector("from-the-future", None) is None
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    scores = {"attribution": rng.uniform(0, 1, (30, 5)), "loss": rng.uniform(0, 3, 30).astype(np.float32),
              "input_high_pass": rng.normal(size=30)}
    assert np.array_equal(LOSS_MIXTURE.separating_score(scores, labels), scores["loss"].astype(np.float64))
    assert INPUT_ENERGY_MIXTURE.separating_score(scores, labels).dtype == np.float64
    from denoise.core.partition import prototype_margin
    assert np.array_equal(ATTRIBUTION_MIXTURE.separating_score(scores, labels),
                          prototype_margin(scores["attribution"], labels))
