"""Split a training set into clean and noisy samples with a 2-component Gaussian mixture.

Plain arrays in, plain arrays out (in the manner of cleanlab's ``find_label_issues``). The mixture
never sees ground truth: which component is *noisy* is decided from the data (``ORIENTATIONS``).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from .errors import OptionError

FEATURE_KINDS = ("attribution", "prototype", "loss", "margin", "confidence")
DEFAULT_FEATURES = ("prototype", "attribution", "loss")
# How the noisy component is chosen: the higher mean of prototype_margin, of log-loss, or of
# attribution_log_norm; "auto" takes the margin, unless (almost) no sample looks more like another
# class than its own (fewer than NO_LABEL_NOISE of them): then the labels show no sign of noise, and
# the split is oriented by attribution energy, which corrupted inputs raise. Without "prototype" among
# the features, "auto" takes the loss (docs/decisions/0014-orientation.md).
ORIENTATIONS = ("auto", "margin", "loss", "norm")
NO_LABEL_NOISE = 0.01
# Oriented by attribution energy, a class's noisy component must carry at least e^0.4 = 1.5 times the
# energy of its clean one, or the class is all clean: the halves of a clean class differ by far less than
# corrupted inputs make them (docs/decisions/0014-orientation.md).
MIN_NORM_GAP = 0.4
CLEAN_THRESHOLD = 0.5  # a sample is called clean when its clean probability is at least this


def parse_features(text: str) -> tuple[str, ...]:
    """The feature kinds of a comma list such as ``"prototype,attribution,loss"``; OptionError if one is unknown."""
    kinds = tuple(kind.strip() for kind in text.split(",") if kind.strip())
    if not kinds or any(kind not in FEATURE_KINDS for kind in kinds):
        raise OptionError("features", f"must be a comma list of {', '.join(FEATURE_KINDS)}, not {text!r}")
    return kinds


def check_orientation(orient: str) -> None:
    """Raise OptionError unless ``orient`` is one of ``ORIENTATIONS``."""
    if orient not in ORIENTATIONS:
        raise OptionError("orient", f"must be one of {', '.join(ORIENTATIONS)}, not {orient!r}")


def _class_rows(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of each class's samples, classes in sorted order."""
    return [np.flatnonzero(labels == c) for c in np.unique(labels)]


def prototype_margin(attribution: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How much more each sample's attribution pattern resembles another class's than its own label's.

    attribution: (N, U) >= 0 attribution vectors (each w.r.t. the sample's given label); labels: (N,) given
    labels. A class's prototype is the element-wise median of its samples' log1p attributions (robust to
    the mislabeled minority). Returns (N,) float64 in [-2, 2]: the largest cosine similarity to another
    class's prototype minus the cosine similarity to the given class's prototype; higher = more likely
    mislabeled. With a single class the other-class term is 0.
    """
    labels = np.asarray(labels)
    groups = _class_rows(labels)

    def log_rows(rows):
        return np.log1p(np.asarray(attribution[rows], dtype=np.float64))

    def unit_length(block):
        return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)

    # one class at a time, in both passes: never the whole (N, U) matrix in float64
    prototypes = unit_length(np.stack([np.median(log_rows(rows), axis=0) for rows in groups]))
    margin = np.zeros(len(labels))
    for k, rows in enumerate(groups):
        similarity = unit_length(log_rows(rows)) @ prototypes.T
        own = similarity[:, k].copy()
        similarity[:, k] = -np.inf
        other = similarity.max(axis=1) if len(groups) > 1 else np.zeros(len(rows))
        margin[rows] = other - own
    return margin


def attribution_log_norm(attribution: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) float64 natural log of each sample's attribution L2 norm (how much signal reaches the layer).

    attribution: (N, U) >= 0; read one class's rows at a time, as ``prototype_margin`` does.
    """
    labels = np.asarray(labels)
    out = np.zeros(len(labels))
    for rows in _class_rows(labels):
        out[rows] = np.log(np.linalg.norm(np.asarray(attribution[rows], dtype=np.float64), axis=1) + 1e-12)
    return out


def _noisiness(scores: dict[str, np.ndarray], labels: np.ndarray, orient: str) -> tuple[np.ndarray, str]:
    """(N,) score whose higher component mean marks the noisy component (see ``ORIENTATIONS``), and the
    orientation it stands for (``auto`` resolved)."""
    check_orientation(orient)
    margin = scores.get("prototype")
    if orient == "auto":
        orient = "loss" if margin is None else "margin" if (margin > 0).mean() >= NO_LABEL_NOISE else "norm"
    if orient == "margin":
        return (prototype_margin(scores["attribution"], labels) if margin is None else margin), orient
    if orient == "norm":
        return attribution_log_norm(scores["attribution"], labels), orient
    return np.asarray(scores["loss"], dtype=np.float64), orient


def _standardize(block: np.ndarray) -> np.ndarray:
    std = block.std(0)
    return (block - block.mean(0)) / np.where(std > 1e-12, std, 1.0)


def _group_features(scores: dict[str, np.ndarray], rows: np.ndarray, kinds, dims: int, seed: int) -> np.ndarray:
    blocks = []
    for kind in kinds:
        if kind == "attribution":
            attribution = np.log1p(scores["attribution"][rows].astype(np.float64))
            block = _standardize(attribution)
            n_dims = min(dims, len(rows) - 1, block.shape[1])
            if 0 < n_dims < block.shape[1]:
                block = PCA(n_dims, random_state=seed).fit_transform(block)
        elif kind == "prototype":
            block = scores["prototype"][rows][:, None]
        elif kind == "loss":
            block = np.log(scores["loss"][rows].astype(np.float64) + 1e-8)[:, None]
        else:
            block = scores[kind][rows].astype(np.float64)[:, None]
        blocks.append(_standardize(block))
    return np.concatenate(blocks, axis=1)


def _mixture_clean_probability(features: np.ndarray, noisiness: np.ndarray, seed: int,
                                min_gap: float = -np.inf) -> np.ndarray:
    """Posterior of the component whose samples have the lower mean ``noisiness`` (N,); all ones (no noisy
    component) when the components' mean noisiness differs by less than ``min_gap``."""
    if len(features) < 4:
        return np.ones(len(features))
    mixture = GaussianMixture(2, covariance_type="full", reg_covar=1e-3, n_init=2, random_state=seed)
    posterior = mixture.fit(features).predict_proba(features)
    weight = posterior.sum(0) + 1e-12
    mean_noisiness = (posterior * noisiness[:, None]).sum(0) / weight
    if abs(mean_noisiness[0] - mean_noisiness[1]) < min_gap:
        return np.ones(len(features))
    return posterior[:, int(np.argmin(mean_noisiness))]


def clean_probability(scores: dict[str, np.ndarray], labels: np.ndarray, *, per_class: bool = True,
                      features=DEFAULT_FEATURES, dims: int = 10, seed: int = 0, orient: str = "auto") -> np.ndarray:
    """Probability that each sample's label is clean.

    scores: arrays over N samples: ``attribution`` (N, U) >= 0, ``loss`` (N,) nats, optionally ``margin``
        and ``confidence`` (N,). ``loss`` is required.
    labels: (N,) given (possibly wrong) labels; with ``per_class`` one mixture is fitted per label.
    features: which scores the mixture sees; attribution vectors are log1p'd, standardized and reduced
        to ``dims`` principal components (per class), ``prototype`` is ``prototype_margin`` of the
        attributions, the loss is log'd; every block is standardized.
    orient: how the noisy component is chosen, one of ``ORIENTATIONS`` (module comment): by default the
        higher mean prototype margin, or attribution energy where no sample looks like another class; by
        energy, a class whose components differ by less than ``MIN_NORM_GAP`` is all clean.
    Returns (N,) float64 in [0, 1].
    """
    features = parse_features(",".join(features))
    labels = np.asarray(labels)
    scores = dict(scores)
    if "prototype" in features:
        scores["prototype"] = prototype_margin(scores["attribution"], labels)
    noisiness, resolved = _noisiness(scores, labels, orient)
    min_gap = MIN_NORM_GAP if resolved == "norm" else -np.inf
    groups = _class_rows(labels) if per_class else [np.arange(len(labels))]
    clean = np.ones(len(labels))
    # One thread: the blocks are small, and spinning BLAS/OpenMP pools made these fits 10-50x slower
    # whenever another program used the cores.
    with threadpool_limits(limits=1):
        for rows in groups:
            block = _group_features(scores, rows, features, dims, seed)
            clean[rows] = _mixture_clean_probability(block, noisiness[rows], seed, min_gap)
    return clean
