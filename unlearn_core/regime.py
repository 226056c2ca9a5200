"""Which signal tells mislabeled samples apart depends on whether the model memorized its training labels.

A model that fits (almost) every training label, the noisy ones included, has a loss near zero on all of
them: loss and prediction carry no sign of the noise, and its attributions do (``partition``: prototype
margin, attribution vectors). A model that did not memorize them (a CNN trained for a realistic number of
epochs, or early-stopped) predicts another class for many mislabeled samples, and their loss is high: the
per-sample loss separates them (the DivideMix criterion), while attribution patterns of unfitted samples
are mixed. ``features="auto"`` chooses from the data, by the share ``fit`` of training labels the model
predicts: "memorized" at ``fit >= MEMORIZED_FIT``, else "generalizing". The choice is recorded. The regime
also sets the last round's fine-tuning (``rounds.RunOptions.recipe``): the shrink warm start, which makes a
network forget what it memorized, is for memorized models only. On a validation split of CIFAR-10 noisy
training data (40 % symmetric; accuracy against the noisy labels) fine-tuning the generalizing CNN from
shrunk weights scored 0.3245, from its own weights 0.3285, the input model 0.3270.

Evidence for the threshold (noisy models of the benchmarks, 2026-11-26): digits MLP fits 100 % of its
noisy labels, fsdd MLP 91-100 % (attribution detects there: F1 0.86-0.95 at 40 %), CIFAR-10 CNN
(10k images, 60 epochs) 39 % at 40 % noise and 60 % at 10 % (global loss mixture F1 0.60 at 10 % against
0.36 for the attribution mixture, which flagged 38 % of the samples).
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from .partition import DEFAULT_FEATURES, clean_probability, parse_features

MEMORIZED_FIT = 0.9
AUTO = "auto"
REGIMES = MEMORIZED, GENERALIZING = ("memorized", "generalizing")
ATTRIBUTION_DETECTOR, LOSS_DETECTOR = "attribution-mixture", "loss-mixture"


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


def check_features(features: str) -> tuple[str, ...] | None:
    """None for ``"auto"``, else the kinds of a comma list (``partition.parse_features``)."""
    return None if features == AUTO else parse_features(features)


def regime_of(predicted: np.ndarray, labels: np.ndarray) -> tuple[str, float]:
    """``(regime, fit)``: the share ``fit`` of (N,) given labels that the (N,) predicted classes match, and
    ``"memorized"`` if it is at least ``MEMORIZED_FIT``, else ``"generalizing"``."""
    fit = float(np.mean(np.asarray(predicted) == np.asarray(labels)))
    return (MEMORIZED if fit >= MEMORIZED_FIT else GENERALIZING), fit


def partition_scores(scores: dict[str, np.ndarray], labels: np.ndarray, *, features: str = AUTO,
                     per_class: bool = True, dims: int = 10, seed: int = 0, orient: str = "auto"
                     ) -> tuple[np.ndarray, dict]:
    """Probability that each sample's label is clean, by the detector the regime calls for.

    scores: arrays over N samples as ``partition.clean_probability`` takes them, plus ``predicted`` (N,) ints;
    labels: (N,) given labels. features: ``"auto"`` (the module's rule) or a comma list, which always uses
    ``clean_probability`` with those features. Returns ``(clean_prob (N,) float64 in [0, 1], record)``; the
    record (JSON-able) holds ``fit``, ``regime`` and ``detector`` (``attribution-mixture`` or ``loss-mixture``).
    """
    kinds = check_features(features)
    labels = np.asarray(labels)
    regime, fit = regime_of(scores["predicted"], labels)
    record = {"fit": fit, "regime": regime}
    if kinds is None and regime == GENERALIZING:
        return loss_clean_probability(scores["loss"], seed), {**record, "detector": LOSS_DETECTOR}
    prob = clean_probability(scores, labels, per_class=per_class, features=kinds or DEFAULT_FEATURES, dims=dims,
                             seed=seed, orient=orient)
    return prob, {**record, "detector": ATTRIBUTION_DETECTOR, "features": ",".join(kinds or DEFAULT_FEATURES)}
