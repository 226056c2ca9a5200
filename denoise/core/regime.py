"""Which detector splits a partition, chosen from the data: the model's regime, then the kind of noise.

A model that fits (almost) every training label has memorized them: its loss and predictions carry no sign of
the noise, its attributions do (``partition``: prototype margin, attribution vectors). A model that did not
predicts another class for many mislabeled samples, so their per-sample loss separates them (the DivideMix
criterion). ``features="auto"`` calls the model "memorized" at ``fit >= MEMORIZED_FIT`` (the share of training
labels it predicts), else "generalizing"; the record says which (see docs/decisions/0001-regime.md).

- Corrupted inputs are looked for first, in either regime, by their high-pass energy
  (``input_clean_probability``; docs/decisions/0005-corrupted-inputs.md).
- Memorized: the attribution block joins the features only where the split with it separates the prototype
  margin (``margin_separation`` >= ``SEPARATION``; docs/decisions/0004-attribution-block.md).
- Generalizing: samples the model predicts as labeled are clean (``_cleared_by_prediction``;
  docs/decisions/0010-cleared-by-prediction.md). The regime also sets the rounds (``rounds.RunOptions``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.mixture import GaussianMixture

from .detectors import ATTRIBUTION_MIXTURE, INPUT_ENERGY_MIXTURE, LOSS_MIXTURE, method_detector
from .partition import CLEAN_THRESHOLD, DEFAULT_FEATURES, clean_probability, parse_features, prototype_margin

MEMORIZED_FIT = 0.9
AUTO = "auto"
REGIMES = MEMORIZED, GENERALIZING = ("memorized", "generalizing")
MARGIN_FEATURES = ("prototype", "loss")  # the features without the attribution block
SEPARATION = 2.0  # Ashman's D above which two components count as clearly separated (the usual bound)
INPUT_SEPARATION = 6.0  # Ashman's D of a class's high-pass energy split above which its inputs count as corrupted
INPUT_MIN_SHARE = 0.05  # the smaller component's least share of a class for that split to count


def ashman_d(mean: tuple[float, float], variance: tuple[float, float]) -> float:
    """Ashman's D of two components, sqrt(2) |m1 - m0| / sqrt(v1 + v0): above 2 they are clearly separated."""
    return float(np.sqrt(2) * abs(mean[0] - mean[1]) / np.sqrt(variance[0] + variance[1] + 1e-12))


def loss_clean_probability(loss: np.ndarray, seed: int = 0) -> np.ndarray:
    """The DivideMix criterion: a 2-component 1-D Gaussian mixture over min-max-normalized per-sample losses.

    loss: (N,) cross-entropy of each sample against its given label (nats).
    Returns (N,) float64 posterior of the low-mean (clean) component, in [0, 1].
    """
    loss = np.asarray(loss, dtype=np.float64)
    span = loss.max() - loss.min() if len(loss) else 0.0
    if len(loss) < 4 or span <= 0:
        return np.ones(len(loss))
    scaled = ((loss - loss.min()) / span)[:, None]
    mixture = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed).fit(scaled)
    return mixture.predict_proba(scaled)[:, int(np.argmin(mixture.means_[:, 0]))]


def input_clean_probability(high_pass: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Probability that each sample's input is not corrupted: per class of the (N,) ``labels``, a 2-component
    1-D Gaussian mixture over the (N,) inputs' high-pass energies (``attribution.input_high_pass``). A class
    splits where its components are at least ``INPUT_SEPARATION`` apart and the smaller holds at least
    ``INPUT_MIN_SHARE`` of it (a few outliers are no corruption). Where at least half the classes split
    (corruption is the data set's, as the paper's and a broken sensor's are), a split class's samples get the
    posterior of its low-energy component; every other sample 1 (inputs that differ as natural data does).
    Returns (N,) float64 in [0, 1]."""
    high_pass, labels = np.asarray(high_pass, dtype=np.float64), np.asarray(labels)
    clean, classes, splits = np.ones(len(labels)), np.unique(labels), {}
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) < 4 or np.ptp(high_pass[rows]) <= 0:
            continue
        x = high_pass[rows, None]
        mixture = GaussianMixture(2, reg_covar=1e-3, n_init=2, random_state=seed).fit(x)
        if (ashman_d(mixture.means_[:, 0], mixture.covariances_.ravel()) >= INPUT_SEPARATION
                and mixture.weights_.min() >= INPUT_MIN_SHARE):
            splits[c] = (rows, mixture.predict_proba(x)[:, int(np.argmin(mixture.means_[:, 0]))])
    if 2 * len(splits) >= len(classes):
        for rows, low in splits.values():
            clean[rows] = low
    return clean


def check_features(features: str) -> tuple[str, ...] | None:
    """None for ``"auto"``, else the kinds of a comma list (``partition.parse_features``)."""
    return None if features == AUTO else parse_features(features)


def regime_of(predicted: np.ndarray, labels: np.ndarray) -> tuple[str, float]:
    """``(regime, fit)``: the share ``fit`` of (N,) given labels that the (N,) predicted classes match, and
    ``"memorized"`` if it is at least ``MEMORIZED_FIT``, else ``"generalizing"``."""
    fit = float(np.mean(np.asarray(predicted) == np.asarray(labels)))
    return (MEMORIZED if fit >= MEMORIZED_FIT else GENERALIZING), fit


def margin_separation(margin: np.ndarray, labels: np.ndarray, clean_prob: np.ndarray) -> float | None:
    """How clearly a split's two components differ in the prototype margin: Ashman's D,
    sqrt(2) |m1 - m0| / sqrt(s1^2 + s0^2) of the (N,) ``margin`` between the components weighted by the (N,)
    ``clean_prob`` and its complement, per class of the (N,) ``labels``, averaged over the classes where
    both components hold at least one sample's weight. None where no class does (nothing flagged)."""
    values = []
    for c in np.unique(labels):
        rows = labels == c
        x, clean = np.asarray(margin[rows], dtype=np.float64), np.asarray(clean_prob[rows], dtype=np.float64)
        moments = []
        for weight in (clean, 1 - clean):
            if weight.sum() < 1:
                break
            mean = (weight * x).sum() / weight.sum()
            moments.append((mean, (weight * (x - mean) ** 2).sum() / weight.sum()))
        if len(moments) == 2:
            (m1, v1), (m0, v0) = moments
            values.append(ashman_d((m1, m0), (v1, v0)))
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class PartitionRecord:
    """What ``partition_scores`` found: the model's ``fit`` (share of labels it predicts) and ``regime``, the
    ``detector`` that split (a ``detectors.METHOD_DETECTORS`` name), the share of ``corrupted_inputs`` (None: no
    input energies, or ``features`` was a list), the attribution mixture's ``features``, the ``separation`` of
    the split with the attribution block where round 1 chose it (``chose_block``; None: nothing flagged, the
    block stays), and for the label mixtures the share ``cleared_by_prediction`` (None where the model
    memorized its labels). ``to_json`` is the record a partition file and ``partition --json`` hold."""

    fit: float
    regime: str
    detector: str
    corrupted_inputs: float | None = None
    features: str | None = None
    separation: float | None = None
    cleared_by_prediction: float | None = None
    chose_block: bool = False

    def to_json(self) -> dict:
        """The JSON keys: ``separation`` only where the block was chosen, ``cleared_by_prediction`` only for
        the label mixtures, ``features`` only for the attribution mixture."""
        record = {"fit": self.fit, "regime": self.regime, "corrupted_inputs": self.corrupted_inputs,
                  "detector": self.detector}
        if self.chose_block:
            record["separation"] = self.separation
        if not method_detector(self.detector).corrupted_inputs:
            record["cleared_by_prediction"] = self.cleared_by_prediction
        if self.features is not None:
            record["features"] = self.features
        return record


def partition_scores(scores: dict[str, np.ndarray], labels: np.ndarray, *, features: str = AUTO,
                     per_class: bool = True, dims: int = 10, seed: int = 0, orient: str = "auto",
                     choose_block: bool = True) -> tuple[np.ndarray, "PartitionRecord"]:
    """Probability that each sample's label is clean, by the detector the regime calls for.

    scores: arrays over N samples as ``partition.clean_probability`` takes them, plus ``predicted`` (N,) ints
    and, where the scores have it, ``input_high_pass`` (N,); labels: (N,) given labels. features: ``"auto"``
    (the module's rule) or a comma list, which always uses ``clean_probability`` with those features.
    choose_block: whether ``"auto"`` also chooses the attribution block by ``margin_separation`` (round 1; later
    rounds keep round 1's choice). Returns ``(clean_prob (N,) float64 in [0, 1], PartitionRecord)``.
    """
    kinds = check_features(features)
    labels = np.asarray(labels)
    regime, fit = regime_of(scores["predicted"], labels)
    corrupted = None
    if kinds is None and scores.get("input_high_pass") is not None:  # absent: the caller has no input energies
        inputs_clean = input_clean_probability(scores["input_high_pass"], labels, seed)
        corrupted = float(np.mean(inputs_clean < CLEAN_THRESHOLD))
        if corrupted > 0:
            return inputs_clean, PartitionRecord(fit, regime, INPUT_ENERGY_MIXTURE.name, corrupted)
    if kinds is None and regime == GENERALIZING:
        prob = loss_clean_probability(scores["loss"], seed)
        return _cleared_by_prediction(prob, scores, labels, PartitionRecord(fit, regime, LOSS_MIXTURE.name, corrupted))
    mixture = {"per_class": per_class, "dims": dims, "seed": seed, "orient": orient}
    prob = clean_probability(scores, labels, features=kinds or DEFAULT_FEATURES, **mixture)
    chose_block, separation = kinds is None and choose_block, None
    if chose_block:
        separation = margin_separation(prototype_margin(scores["attribution"], labels), labels, prob)
        if separation is not None and separation < SEPARATION:
            kinds = MARGIN_FEATURES
            prob = clean_probability(scores, labels, features=kinds, **mixture)
    record = PartitionRecord(fit, regime, ATTRIBUTION_MIXTURE.name, corrupted, ",".join(kinds or DEFAULT_FEATURES),
                             separation, chose_block=chose_block)
    return _cleared_by_prediction(prob, scores, labels, record)


def _cleared_by_prediction(prob: np.ndarray, scores: dict[str, np.ndarray], labels: np.ndarray,
                           record: PartitionRecord) -> tuple[np.ndarray, PartitionRecord]:
    """Where the model generalizes, a label mixture's (N,) ``prob`` with every sample the model predicts as its
    given label called clean (probability 1), and the share of samples this cleared in ``record`` (None where the
    model memorized its labels: its predictions say nothing of them, and nothing is cleared)."""
    if record.regime != GENERALIZING:
        return prob, record
    agrees = np.asarray(scores["predicted"]) == labels
    cleared = float(np.mean(agrees & (prob < CLEAN_THRESHOLD)))
    return np.where(agrees, 1.0, prob), replace(record, cleared_by_prediction=cleared)
