"""The report's figures as PNG bytes: matplotlib (Agg, no display) for plots, Pillow for sample thumbnails.

Each function takes plain arrays and returns the encoded PNG; ``denoise.cli.report.page`` embeds them inline.
Figures are small (DPI ``DPI``) and built on ``matplotlib.figure.Figure`` without pyplot, so no global
state or window is involved.
"""

from __future__ import annotations

import io
import numpy as np

DPI = 80
CLEAN, NOISY = "#4c72b0", "#dd5144"  # the colours of the clean and the flagged (noisy) samples in every figure
THUMBNAIL = 96  # pixels on the longer side of a gallery thumbnail


def _figure(width: float, height: float, **margins):
    """A figure with fixed margins (inches are cheap; a layout engine took half the report's time)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(**{"left": 0.1, "right": 0.97, "bottom": 0.17, "top": 0.9, "wspace": 0.3, **margins})
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def swap_matrix(counts: np.ndarray, classes: list[str]) -> bytes:
    """Heat map of (C, C) counts, given label (rows) x suggested label (columns); the page tables the counts."""
    size = min(10.0, 2.5 + 0.45 * len(classes))
    figure = _figure(size, size * 0.9, left=0.15, bottom=0.15, right=0.95)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Reds")
    axes.set(xlabel="suggested label", ylabel="given label", xticks=range(len(classes)), yticks=range(len(classes)))
    axes.set_xticklabels(classes, rotation=90)
    axes.set_yticklabels(classes)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return _png(figure)


def mixture(score: np.ndarray, name: str, labels: np.ndarray, flagged: np.ndarray, classes: list[str]) -> bytes:
    """Per class (one row each), histograms of the (N,) separating ``score``: its clean samples above the
    row's baseline, its flagged ones below; each row scaled to its own largest bin."""
    present = np.unique(labels)
    figure = _figure(6, 1 + 0.45 * len(present), left=0.14, bottom=0.5 / (1 + 0.45 * len(present)) + 0.05)
    axes = figure.add_subplot()
    edges = np.histogram_bin_edges(score, bins=40)
    for row, label in enumerate(present):
        mine = labels == label
        clean, _ = np.histogram(score[mine & ~flagged], bins=edges)
        noisy, _ = np.histogram(score[mine & flagged], bins=edges)
        top = 2.2 * max(clean.max(), noisy.max(), 1)
        # the y axis is inverted (first class on top): minus draws upward
        axes.stairs(row - clean / top, edges, baseline=row, fill=True, color=CLEAN, label="clean" if row == 0 else None)
        axes.stairs(row + noisy / top, edges, baseline=row, fill=True, color=NOISY,
                    label="flagged" if row == 0 else None)
    axes.set_yticks(range(len(present)), [f"given {classes[label]}" for label in present])
    axes.set(xlabel=name, ylim=(-0.6, len(present) - 0.4))
    axes.invert_yaxis()
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def clean_probability(clean_prob: np.ndarray, threshold: float) -> bytes:
    """Histogram of the (N,) clean probabilities (log counts), the threshold drawn in."""
    from matplotlib.ticker import NullFormatter

    figure = _figure(5, 2.6, left=0.14)
    axes = figure.add_subplot()
    bins = np.linspace(0, 1, 41)
    axes.hist(clean_prob[clean_prob < threshold], bins=bins, color=NOISY, label="flagged")
    axes.hist(clean_prob[clean_prob >= threshold], bins=bins, color=CLEAN, label="clean")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    axes.set(xlabel="clean probability", ylabel="samples", yscale="log")
    axes.yaxis.set_minor_formatter(NullFormatter())  # within one decade the minor labels piled up
    axes.legend(fontsize=7)
    return _png(figure)


def sensitivity(coefficient: np.ndarray, removed: np.ndarray) -> bytes:
    """The (U,) coefficients sorted, the (U,) bool ``removed`` (pruned) units in red."""
    order = np.argsort(coefficient)[::-1]
    figure = _figure(6, 2.6, left=0.13)
    axes = figure.add_subplot()
    units, value = np.arange(len(order)), coefficient[order]
    # two filled areas, not one bar per unit: bars draw many units much slower
    axes.fill_between(units, value, step="mid", color="#999999")
    axes.fill_between(units, value, where=removed[order], step="mid", color=NOISY)
    axes.set(xlabel="unit, by coefficient (red: pruned)", ylabel="coefficient toward noisy")
    return _png(figure)


def round_curves(losses: dict[int, list[float | None]], accuracy: dict[str, dict[int, float]]) -> bytes:
    """Left: each round's fine-tuning loss per epoch from epoch 1 (None: an epoch whose loss a resumed run's
    state did not record, left out); right: accuracy per round by split (when recorded)."""
    figure = _figure(8, 2.8)
    left, right = figure.subplots(1, 2)
    for number, curve in losses.items():
        left.plot(np.arange(1, len(curve) + 1), np.array(curve, dtype=float), label=f"round {number}")
    left.set(xlabel="epoch", ylabel="fine-tuning loss (nats)", title="fine-tuning")
    left.legend(fontsize=7)
    for split, by_round in accuracy.items():
        numbers = sorted(by_round)
        right.plot(numbers, [by_round[n] for n in numbers], marker="o", label=split)
    right.set(xlabel="round", ylabel="accuracy", title="evaluate --json results")
    if accuracy:
        right.legend(fontsize=7)
    return _png(figure)


def detection_curves(curves: dict[int, dict]) -> bytes:
    """ROC and precision-recall curves of each round's detection (``metrics.detection_curves`` by round)."""
    figure = _figure(8, 3.2)
    roc, pr = figure.subplots(1, 2)
    for number, curve in curves.items():
        roc.plot(*curve["roc"], label=f"round {number}")
        pr.plot(*curve["pr"], label=f"round {number}")
    roc.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    roc.legend(fontsize=7)
    return _png(figure)


def thumbnail(sample: np.ndarray, speech: bool) -> bytes:
    """A PNG of one sample: an image (C, H, W) or (H, W) in grey or colour, a spectrogram (1, bins, frames)
    in false colour with low frequencies at the bottom, anything else as a strip of its values."""
    from matplotlib import colormaps
    from PIL import Image

    array = np.asarray(sample, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    elif array.ndim != 2:
        array = array.reshape(1, -1)
    low, high = array.min(), array.max()
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    if speech:
        pixels = (colormaps["magma"](scaled[::-1])[..., :3] * 255).astype(np.uint8)
    else:
        pixels = (scaled * 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    scale = THUMBNAIL / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
