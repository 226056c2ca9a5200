"""Choose the units to remove from a layer, given its sensitivity coefficients."""

from __future__ import annotations

import numpy as np

from .errors import OptionError

PRUNE_BY = ("noisy", "abs")


def check_amount(ratio: float | None, count: int | None, by: str = "noisy", units: int | None = None) -> None:
    """Raise OptionError unless exactly one of ``ratio`` in (0, 1) and ``count`` in [0, units] is given and
    ``by`` is one of ``PRUNE_BY``."""
    if (ratio is None) == (count is None):
        raise OptionError("ratio", "or count: give exactly one of them")
    if ratio is not None and not 0 < ratio < 1:
        raise OptionError("ratio", f"must be in (0, 1), got {ratio}")
    if count is not None and (count < 0 or units is not None and count > units):
        raise OptionError("count", f"must be in [0, {units}], got {count}")
    if by not in PRUNE_BY:
        raise OptionError("by", f"must be one of {', '.join(PRUNE_BY)}, not {by!r}")


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
    check_amount(ratio, count, by, units)
    keep = np.ones(units, dtype=bool) if keep is None else np.asarray(keep, dtype=bool).copy()
    wanted = int(round(ratio * units)) if ratio is not None else count
    key = -coefficient if by == "noisy" else -np.abs(coefficient)
    candidates = [u for u in np.argsort(key, kind="stable") if keep[u] and (by == "abs" or coefficient[u] > 0)]
    keep[candidates[:wanted]] = False
    return keep
