"""Choose the units to remove from a layer, given its sensitivity coefficients."""

from __future__ import annotations

import numpy as np

PRUNE_BY = ("noisy", "abs")


def prune_mask(coefficient: np.ndarray, *, ratio: float | None = None, count: int | None = None,
               by: str = "noisy", keep: np.ndarray | None = None) -> np.ndarray:
    """Return a (U,) bool keep mask with the most noise-sensitive units removed.

    coefficient: (U,) regression coefficients from ``unit_sensitivity``.
    ratio / count: how many units to remove (exactly one of them): a fraction of U in (0, 1), or a number.
    by: ``"noisy"`` ranks by signed coefficient and removes only units that point toward noisy samples
        (so fewer than asked may go); ``"abs"`` ranks by |coefficient| as the paper does.
    keep: (U,) bool mask already in force; its removed units stay removed and are not counted again.
    """
    coefficient = np.asarray(coefficient, dtype=np.float64)
    units = len(coefficient)
    if (ratio is None) == (count is None):
        raise ValueError("give exactly one of ratio and count")
    if ratio is not None and not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if count is not None and not 0 <= count <= units:
        raise ValueError(f"count must be in [0, {units}], got {count}")
    if by not in PRUNE_BY:
        raise ValueError(f"by must be one of {PRUNE_BY}, got {by!r}")
    keep = np.ones(units, dtype=bool) if keep is None else np.asarray(keep, dtype=bool).copy()
    wanted = int(round(ratio * units)) if ratio is not None else count
    key = -coefficient if by == "noisy" else -np.abs(coefficient)
    candidates = [u for u in np.argsort(key, kind="stable") if keep[u] and (by == "abs" or coefficient[u] > 0)]
    keep[candidates[:wanted]] = False
    return keep
