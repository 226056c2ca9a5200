"""Which units of a layer respond to noisy samples: least-squares regression of the noisy indicator."""

from __future__ import annotations

import numpy as np


def unit_sensitivity(activations: np.ndarray, is_noisy: np.ndarray, ridge: float = 1e-3) -> dict[str, np.ndarray]:
    """Regress ``is_noisy`` on the standardized units of a layer.

    activations: (N, U) post-activation unit values (channels averaged over space).
    is_noisy: (N,) bool or {0, 1}: the partition's assignment.
    ridge: L2 penalty relative to N, keeps the solve stable when units are collinear or U > N.
    Returns ``coefficient`` (U,) (positive: the unit is larger on noisy samples; a constant unit gets 0),
    ``rank`` (U,) position by |coefficient| (0 = largest), ``rank_noisy`` (U,) position by signed
    coefficient (0 = most toward noisy), ``r2`` () fraction of the indicator's variance explained,
    and the per-unit ``mean`` and ``std`` (U,) used to standardize.
    """
    x = np.asarray(activations, dtype=np.float64)
    y = np.asarray(is_noisy, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"activations {x.shape} and is_noisy {y.shape} do not match")
    mean, std = x.mean(0), x.std(0)
    live = std > 1e-12
    z = (x[:, live] - mean[live]) / std[live]
    target = y - y.mean()
    n = len(y)
    gram = z.T @ z + ridge * n * np.eye(z.shape[1])
    beta = np.linalg.solve(gram, z.T @ target) if z.shape[1] else np.zeros(0)
    coefficient = np.zeros(x.shape[1])
    coefficient[live] = beta
    residual = target - z @ beta
    total = float(target @ target)
    r2 = 1.0 - float(residual @ residual) / total if total > 0 else 0.0
    return {
        "coefficient": coefficient,
        "rank": _positions(-np.abs(coefficient)),
        "rank_noisy": _positions(-coefficient),
        "r2": np.float64(r2),
        "mean": mean,
        "std": std,
    }


def _positions(key: np.ndarray) -> np.ndarray:
    order = np.argsort(key, kind="stable")
    positions = np.empty(len(key), dtype=np.int64)
    positions[order] = np.arange(len(key))
    return positions
