"""Which units of a layer respond to noisy samples: least-squares regression of the noisy indicator."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .attribution import layer_activations
from .batches import BATCH_SIZE, autocast, device_batches


class UnitMoments:
    """Running means and co-moments of a layer's units and the noisy indicator, merged block by block.

    ``update`` takes one block of samples at a time (Chan et al.'s pairwise merge, float64), so the
    regression of ``unit_sensitivity`` needs O(U^2) memory however many samples there are.
    """

    def __init__(self):
        self.n = 0
        self.mean_x = self.mean_y = self.cxx = self.cxy = None
        self.syy = 0.0

    def update(self, activations: np.ndarray, is_noisy: np.ndarray) -> "UnitMoments":
        """Add a block: ``activations`` (B, U) unit values, ``is_noisy`` (B,) bool or {0, 1}. Returns self."""
        x = np.asarray(activations, dtype=np.float64)
        y = np.asarray(is_noisy, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],) or (self.cxx is not None and x.shape[1] != len(self.mean_x)):
            raise ValueError(f"activations {x.shape} and is_noisy {y.shape} do not match")
        m = len(y)
        if m == 0:
            return self
        mean_x, mean_y = x.mean(0), y.mean()
        dx, dy = x - mean_x, y - mean_y
        cxx, cxy, syy = dx.T @ dx, dx.T @ dy, float(dy @ dy)
        if self.n == 0:
            self.mean_x, self.mean_y, self.cxx, self.cxy, self.syy = mean_x, mean_y, cxx, cxy, syy
        else:
            total = self.n + m
            delta_x, delta_y = mean_x - self.mean_x, mean_y - self.mean_y
            scale = self.n * m / total
            self.cxx += cxx + scale * np.outer(delta_x, delta_x)
            self.cxy += cxy + scale * delta_x * delta_y
            self.syy += syy + scale * delta_y * delta_y
            self.mean_x = self.mean_x + delta_x * m / total
            self.mean_y = self.mean_y + delta_y * m / total
        self.n += m
        return self

    def summed(self, sum_across: Callable[[np.ndarray], np.ndarray]) -> "UnitMoments":
        """The moments of every process's samples together, from this process's moments and ``sum_across``
        (an all-reduce: the elementwise sum of a float64 array over the processes; identity in one process).

        Two sums of sufficient statistics, exact like ``update``'s merge: the counts and sums give the
        overall means; then each process's co-moments about those means add up. Every process must hold
        at least one sample (the arrays summed must have the same length everywhere).
        """
        totals = sum_across(self._totals())
        return UnitMoments._from_sums(totals, sum_across(self._comoments_about(totals)))

    @staticmethod
    def combined(parts: list["UnitMoments"]) -> "UnitMoments":
        """The moments of the samples of every part together (``summed`` over a list instead of processes)."""
        totals = sum(part._totals() for part in parts)
        return UnitMoments._from_sums(totals, sum(part._comoments_about(totals) for part in parts))

    def _totals(self) -> np.ndarray:
        """(2 + U,) float64: count, sum of the indicator, sums of the units."""
        if self.n == 0:
            raise ValueError("a part with no samples cannot join the sum")
        return np.concatenate([[self.n, self.n * self.mean_y], self.n * self.mean_x])

    def _comoments_about(self, totals: np.ndarray) -> np.ndarray:
        """(1 + U + U*U,) float64: this part's co-moments about the overall means that ``totals`` give."""
        mean_y, mean_x = totals[1] / totals[0], totals[2:] / totals[0]
        dx, dy = self.mean_x - mean_x, self.mean_y - mean_y
        return np.concatenate([[self.syy + self.n * dy * dy], self.cxy + self.n * dx * dy,
                               (self.cxx + self.n * np.outer(dx, dx)).ravel()])

    @staticmethod
    def _from_sums(totals: np.ndarray, comoments: np.ndarray) -> "UnitMoments":
        units = len(totals) - 2
        merged = UnitMoments()
        merged.n = int(round(totals[0]))
        merged.mean_y, merged.mean_x = totals[1] / merged.n, totals[2:] / merged.n
        merged.syy, merged.cxy = float(comoments[0]), comoments[1:units + 1]
        merged.cxx = comoments[units + 1:].reshape(units, units)
        return merged

    def arrays(self) -> dict[str, np.ndarray]:
        """The moments as arrays (``n``, ``mean_y``, ``syy`` 0-d; ``mean_x``, ``cxy`` (U,); ``cxx`` (U, U)), to
        store a part and combine it later (``from_arrays``)."""
        return {"n": np.int64(self.n), "mean_y": np.float64(self.mean_y), "syy": np.float64(self.syy),
                "mean_x": self.mean_x, "cxy": self.cxy, "cxx": self.cxx}

    @staticmethod
    def from_arrays(arrays: dict) -> "UnitMoments":
        """The moments that ``arrays`` wrote."""
        moments = UnitMoments()
        moments.n, moments.mean_y, moments.syy = int(arrays["n"]), float(arrays["mean_y"]), float(arrays["syy"])
        moments.mean_x, moments.cxy, moments.cxx = (np.asarray(arrays[k], dtype=np.float64)
                                                    for k in ("mean_x", "cxy", "cxx"))
        return moments

    def solve(self, ridge: float = 1e-3) -> dict[str, np.ndarray]:
        """The regression of ``unit_sensitivity`` from the moments gathered so far."""
        if self.n == 0:
            raise ValueError("no samples to regress on")
        n = self.n
        std = np.sqrt(np.maximum(np.diag(self.cxx), 0.0) / n)
        live = std > 1e-12
        scale = std[live]
        gram = self.cxx[np.ix_(live, live)] / np.outer(scale, scale)
        moment = self.cxy[live] / scale
        beta = np.linalg.solve(gram + ridge * n * np.eye(len(scale)), moment) if live.any() else np.zeros(0)
        coefficient = np.zeros(len(std))
        coefficient[live] = beta
        residual = self.syy - 2 * float(beta @ moment) + float(beta @ gram @ beta)
        r2 = 1.0 - residual / self.syy if self.syy > 0 else 0.0
        return {
            "coefficient": coefficient,
            "rank": _positions(-np.abs(coefficient)),
            "rank_noisy": _positions(-coefficient),
            "r2": np.float64(r2),
            "mean": self.mean_x.copy(),
            "std": std,
        }


def unit_sensitivity(activations: np.ndarray, is_noisy: np.ndarray, ridge: float = 1e-3) -> dict[str, np.ndarray]:
    """Regress ``is_noisy`` on the standardized units of a layer.

    activations: (N, U) post-activation unit values (channels averaged over space).
    is_noisy: (N,) bool or {0, 1}: the partition's assignment.
    ridge: L2 penalty relative to N, keeps the solve stable when units are collinear or U > N.
    Returns ``coefficient`` (U,) (positive: the unit is larger on noisy samples; a constant unit gets 0),
    ``rank`` (U,) position by |coefficient| (0 = largest), ``rank_noisy`` (U,) position by signed
    coefficient (0 = most toward noisy), ``r2`` () fraction of the indicator's variance explained,
    and the per-unit ``mean`` and ``std`` (U,) used to standardize. Same as ``UnitMoments`` fed in one block.
    """
    return UnitMoments().update(activations, is_noisy).solve(ridge)


def _positions(key: np.ndarray) -> np.ndarray:
    order = np.argsort(key, kind="stable")
    positions = np.empty(len(key), dtype=np.int64)
    positions[order] = np.arange(len(key))
    return positions


def layer_moments(model: nn.Module, inputs, is_noisy: np.ndarray, layer: str, *, batch_size: int = BATCH_SIZE,
                  device: torch.device = torch.device("cpu"), precision: str = "fp32",
                  on_batch: Callable[[int], None] | None = None) -> UnitMoments:
    """``UnitMoments`` of the units at ``layer`` (channels averaged over space) and the (N,) noisy indicator,
    over (N, ...) ``inputs`` in batches of ``batch_size`` on ``device``; ``on_batch(B)`` after each batch.

    One batch at a time: the (N, U) activations are never held, so memory does not grow with N.
    """
    moments = UnitMoments()
    for s, batch in device_batches(inputs, batch_size, device):
        with autocast(device, precision):
            units = layer_activations(model, batch, layer)[0]
        moments.update(units.float().cpu().numpy(), is_noisy[s])
        if on_batch:
            on_batch(s.stop - s.start)
    return moments
