"""Which signal tells mislabeled samples apart depends on whether the model memorized its training labels.

A model that fits (almost) every training label, the noisy ones included, has a loss near zero on all of
them: loss and prediction carry no sign of the noise, and its attributions do (``partition``: prototype
margin, attribution vectors). A model that did not memorize them (a CNN trained for a realistic number of
epochs, or early-stopped) predicts another class for many mislabeled samples, and their loss is high: the
per-sample loss separates them (the DivideMix criterion), while attribution patterns of unfitted samples
are mixed. ``features="auto"`` chooses from the data, by the share ``fit`` of training labels the model
predicts: "memorized" at ``fit >= MEMORIZED_FIT``, else "generalizing". The choice is recorded.

The regime also sets the last round's fine-tuning (``rounds.RunOptions.recipe``): the shrink warm start,
which makes a network forget what it memorized, is for memorized models only. On a validation split of CIFAR-10 noisy
training data (40 % symmetric; accuracy against the noisy labels) fine-tuning the generalizing CNN from
shrunk weights scored 0.3245, from its own weights 0.3285, the input model 0.3270.

In the memorized regime round 1 also chooses whether the attribution block (principal components of the
attribution vectors) joins the prototype margin and the loss. A split that is about the label noise has
two components far apart in the prototype margin; where the vectors' largest variation is something else
(fsdd: the speaker) the split with the block follows it, and its components overlap in the margin. So the
block stays only where the split with it separates the margin clearly (``margin_separation``, Ashman's D
per class, at least ``SEPARATION``, the usual bound for two well-separated components); else the margin
and loss alone split, in round 1 and the rounds after it (``rounds.plan``). Round 1, seed 0,
validation cells of 2026-11-26: D 2.50-3.36 on digits (symmetric 40 %, 60 %, asymmetric 40 %), 1.21 and
1.73 on fsdd (symmetric, instance 40 %); docs/quality.md, *One set of defaults*.

Evidence for the threshold (noisy models of the benchmarks, 2026-11-26): digits MLP fits 100 % of its
noisy labels, fsdd MLP 91-100 % (attribution detects there: F1 0.86-0.95 at 40 %), CIFAR-10 CNN
(10k images, 60 epochs) 39 % at 40 % noise and 60 % at 10 % (global loss mixture F1 0.60 at 10 % against
0.36 for the attribution mixture, which flagged 38 % of the samples).

Where the model generalizes, a label mixture's noisy component also takes hard clean samples: ones with a high
loss, or unlike their class's attribution pattern, that the model still predicts as labeled. A model that did not
memorize its labels and predicts the given one speaks for it, so such samples are called clean
(``cleared_by_prediction`` in the record: the share cleared). A memorizing model predicts every label, so nothing
is cleared there. This matters most in fsdd's rounds after the first: fine-tuned from shrunk weights on the clean
part only, their models fit under 90 % of the labels, and what they predict carries evidence. On its validation
splits (33 cells, 0-40 % noise and corrupted inputs, seeds 0-2; true labels of the split; docs/quality.md,
*Cleared by prediction*) the last round's model scored 1.4 points higher on average (better in 18 cells, worse in
4), the share flagged at 10 % noise fell from 16-19 % to 11-17 %, and the cells more than 0.5 below the input went
from 10 to 3. On fsdd's test split (3 seeds) it gained less: the average over the input went from +4.4 to +4.7
points, and instance 60 % seed 0 now loses 2.0. On digits (every round memorizes) nothing changes; on CIFAR-10 the
loss mixture's flagged samples are almost all predicted as another class (0-0.2 % cleared).

Corrupted inputs, not labels, are the other noise. The loss does not find them (CIFAR-10 cnn, half the images with
Gaussian noise of sigma 4.5, the paper's setting: loss mixture F1 0.35), nor do the attributions in every model
(ResNet-18 on all of CIFAR-10, which fits 93 % of its labels: attribution mixture F1 0.50 on a lent H200;
docs/quality.md, *Corrupted inputs in every regime*). Their high-pass energy does, whatever the model
(``attribution.input_high_pass``): in every regime a per-class mixture over it (``input_clean_probability``) is
fitted first; a class splits where its two components stand at least ``INPUT_SEPARATION`` apart (Ashman's D) and
the smaller holds at least ``INPUT_MIN_SHARE`` of it, and where at least half the classes split, their high-energy
components are called corrupted and that split is the partition (``input-energy-mixture``); else the regime's label
mixture is. D per class on the validation cells' train inputs (2026-11-27; seeds 0-2 on digits and fsdd, seeds 0-1
on a CIFAR-10 subset of 300 images a class): without corrupted inputs at most 2.66 (digits), 3.26 (fsdd), 1.82
(CIFAR-10); with half or a fifth of them corrupted at least 16.0, 25.2, 10.9. The bound sits between, a factor of
about 1.8 from each. The inputs' whole energy (their log-norm, used before) separated less: without corruption up
to 6.25 on fsdd, whose speakers record at different loudness, with it from 7.35 (CIFAR-10). The share and the
majority keep outliers and one odd class out: on scikit-learn's bundled tables, standardized per feature, one class
of iris (4 features) reached D 8.44 with one sample against 49, and one of digits 14.90 with a handful; neither
flags anything now, while half the rows of wine and breast_cancer with sigma 4.5 noise are found (D 6.41-7.07 and
6.42-6.49). With corrupted inputs the split alone (F1 1.000) fine-tuned the CIFAR-10 cnn to 0.421 on the validation
split's clean images, the union with the loss mixture (F1 0.915) to 0.391, the input 0.376.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from .partition import CLEAN_THRESHOLD, DEFAULT_FEATURES, clean_probability, parse_features, prototype_margin

MEMORIZED_FIT = 0.9
AUTO = "auto"
REGIMES = MEMORIZED, GENERALIZING = ("memorized", "generalizing")
ATTRIBUTION_DETECTOR, LOSS_DETECTOR, INPUT_DETECTOR = "attribution-mixture", "loss-mixture", "input-energy-mixture"
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


def partition_scores(scores: dict[str, np.ndarray], labels: np.ndarray, *, features: str = AUTO,
                     per_class: bool = True, dims: int = 10, seed: int = 0, orient: str = "auto",
                     choose_block: bool = True) -> tuple[np.ndarray, dict]:
    """Probability that each sample's label is clean, by the detector the regime calls for.

    scores: arrays over N samples as ``partition.clean_probability`` takes them, plus ``predicted`` (N,) ints
    and, where the scores have it, ``input_high_pass`` (N,); labels: (N,) given labels. features: ``"auto"``
    (the module's rule) or a comma list, which always uses ``clean_probability`` with those features.
    choose_block: whether ``"auto"`` also chooses the attribution block by ``margin_separation`` (round 1; later
    rounds keep round 1's choice). Returns ``(clean_prob (N,) float64 in [0, 1], record)``; the record
    (JSON-able) holds ``fit``, ``regime``, ``detector`` (``attribution-mixture``, ``loss-mixture`` or
    ``input-energy-mixture``), the share of ``corrupted_inputs`` (None: the scores lack the inputs' high-pass
    energy, or ``features`` is a list), the attribution mixture's ``features`` and, where the block was chosen, the
    ``separation`` of the split with it (None: nothing flagged, the block stays); for the label mixtures the
    share ``cleared_by_prediction`` (see ``_cleared_by_prediction``).
    """
    kinds = check_features(features)
    labels = np.asarray(labels)
    regime, fit = regime_of(scores["predicted"], labels)
    record = {"fit": fit, "regime": regime, "corrupted_inputs": None}
    if kinds is None and scores.get("input_high_pass") is not None:  # absent from older score files
        inputs_clean = input_clean_probability(scores["input_high_pass"], labels, seed)
        record["corrupted_inputs"] = float(np.mean(inputs_clean < CLEAN_THRESHOLD))
        if record["corrupted_inputs"] > 0:
            return inputs_clean, {**record, "detector": INPUT_DETECTOR}
    if kinds is None and regime == GENERALIZING:
        prob = loss_clean_probability(scores["loss"], seed)
        return _cleared_by_prediction(prob, scores, labels, {**record, "detector": LOSS_DETECTOR})
    mixture = {"per_class": per_class, "dims": dims, "seed": seed, "orient": orient}
    prob = clean_probability(scores, labels, features=kinds or DEFAULT_FEATURES, **mixture)
    if kinds is None and choose_block:
        record["separation"] = margin_separation(prototype_margin(scores["attribution"], labels), labels, prob)
        if record["separation"] is not None and record["separation"] < SEPARATION:
            kinds = MARGIN_FEATURES
            prob = clean_probability(scores, labels, features=kinds, **mixture)
    return _cleared_by_prediction(prob, scores, labels, {**record, "detector": ATTRIBUTION_DETECTOR,
                                                         "features": ",".join(kinds or DEFAULT_FEATURES)})


def _cleared_by_prediction(prob: np.ndarray, scores: dict[str, np.ndarray], labels: np.ndarray,
                           record: dict) -> tuple[np.ndarray, dict]:
    """Where the model generalizes, a label mixture's (N,) ``prob`` with every sample the model predicts as its
    given label called clean (probability 1), and the share of samples this cleared in ``record`` (None where the
    model memorized its labels: its predictions say nothing of them, and nothing is cleared)."""
    if record["regime"] != GENERALIZING:
        return prob, {**record, "cleared_by_prediction": None}
    agrees = np.asarray(scores["predicted"]) == labels
    cleared = float(np.mean(agrees & (prob < CLEAN_THRESHOLD)))
    return np.where(agrees, 1.0, prob), {**record, "cleared_by_prediction": cleared}
