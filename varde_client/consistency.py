"""Consistent numbers at no privacy cost: project released values onto what the truth satisfies.

DP noise is independent per released number, so a funnel's noisy counts can
rise from one step to the next, a small histogram cell can be negative and a
Kaplan-Meier curve from noisy counts can go up. The truth cannot: funnel counts
never increase along the steps and are not negative, counts are not negative,
survival never increases and lies in ``[0, 1]``. Replacing the released vector
``y`` by the closest vector ``x`` that satisfies the constraints,

    minimise  sum_i w_i (x_i - y_i)^2   over the constraint set C,  w_i = 1 / std_i^2,

is post-processing of released numbers: it reads no row and costs no privacy.
Because ``C`` is convex and holds the truth ``t``, the projection is never
farther from the truth than the release in that weighted norm
(``||x - t||_w <= ||y - t||_w`` for every release, not only on average), and a
release that already satisfies the constraints is returned unchanged.

The projections:

* **non-increasing** (funnels, survival): weighted isotonic regression
  (``scipy.optimize.isotonic_regression``, pool-adjacent-violators), then clipped
  to the bounds (``>= 0`` for a funnel, ``[0, 1]`` for survival). Clipping the
  unbounded isotonic fit is the exact projection onto the bounded monotone set
  (a known property of L2 isotonic regression with box constraints).
* **non-negative** (counts, histograms, crosstabs): clip at 0; the projection
  onto the orthant, whatever the weights.
* **non-negative and summing to a total** (:func:`simplex`, for a histogram
  whose total was released too): the weighted projection onto the scaled simplex
  ``{x >= 0, sum x = T}``, ``x_i = max(0, y_i - tau std_i^2)`` with the one
  ``tau`` that makes the sum ``T``, found exactly by sorting the breakpoints
  ``y_i / std_i^2`` (the sort-based simplex projection of Held, Wolfe and
  Crowder, and Duchi et al. 2008, with weights). Written with numpy rather than
  ``scipy.optimize.lsq_linear``: that solver takes bounds but no equality
  constraint, so the sum could only be approximated by a heavily weighted extra
  row; the sort gives the exact minimiser in ``O(n log n)``.

No query of this language releases a histogram together with its total (a
histogram release carries its cells only), so :func:`consistent_cells` makes
histogram cells non-negative and :func:`simplex` is there for a total a
researcher knows from the same release (see ``docs/CLIENT.md``).

Weights are the cells' noise variances where the release states them
(``Cell.std``) and all are positive; otherwise (survival curves, whose bands
are not a single sd; aggregate mode, whose ``std`` is 0) every cell weighs the
same. Each row is projected on its own: every site, and the network row. The
network row is not replaced by the sum of the projected sites: summing sites
that were each moved (e.g. clipped up at 0) adds their shifts up, and only the
network's own projection carries the guarantee above for the network's number.
So after projection the sites need not add up to the network exactly.

>>> funnel([100.0, 104.0, 60.0, -3.0]).tolist()
[102.0, 102.0, 60.0, 0.0]
>>> survival([0.9, 0.92, 0.7, 1.02]).tolist()
[0.91, 0.91, 0.86, 0.86]
>>> simplex([5.0, -1.0, 3.0], total=6.0).tolist()
[4.0, 0.0, 2.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from varde.release import Cell

Floats = NDArray[np.float64]

NONNEGATIVE = frozenset({"count", "histogram", "crosstab"})
"""Statistics whose every cell is a count: projected onto ``>= 0``."""


def _vector(values: ArrayLike) -> Floats:
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"expected a 1-d vector of values, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("values must be finite numbers")
    return y


def _variances(std: ArrayLike | None, n: int) -> Floats:
    """Per-cell noise variances, or ones when not every cell states a positive sd."""
    if std is None:
        return np.ones(n)
    s = np.asarray(std, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"expected {n} standard deviations, got shape {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        return np.ones(n)
    return s * s


def nonnegative(values: ArrayLike) -> Floats:
    """The closest non-negative vector (in any weighted L2 norm): clip at 0."""
    return np.maximum(_vector(values), 0.0)


def nonincreasing(
    values: ArrayLike,
    std: ArrayLike | None = None,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
) -> Floats:
    """The closest non-increasing vector within ``[lower, upper]``, weighted by ``1/std^2``."""
    y = _vector(values)
    if not lower <= upper:
        raise ValueError(f"lower {lower} is above upper {upper}")
    if y.size == 0 or (np.all(np.diff(y) <= 0) and np.all((y >= lower) & (y <= upper))):
        return y.copy()  # already consistent: not moved at all (not even by rounding)
    from scipy.optimize import isotonic_regression  # here: importing it takes ~1 s

    weights = 1.0 / _variances(std, y.size)
    fit = isotonic_regression(y, weights=weights, increasing=False).x
    return np.clip(np.asarray(fit, dtype=np.float64), lower, upper)


def funnel(values: ArrayLike, std: ArrayLike | None = None) -> Floats:
    """A funnel's counts along its steps: non-increasing and non-negative."""
    return nonincreasing(values, std, lower=0.0)


def survival(values: ArrayLike, std: ArrayLike | None = None) -> Floats:
    """A survival curve along its grid: non-increasing and within ``[0, 1]``."""
    return nonincreasing(values, std, lower=0.0, upper=1.0)


def simplex(values: ArrayLike, total: float, std: ArrayLike | None = None) -> Floats:
    """The closest non-negative vector summing to ``total``, weighted by ``1/std^2``.

    ``x_i = max(0, y_i - tau v_i)`` with ``v_i = std_i^2``; ``tau`` is read off the
    breakpoints ``y_i / v_i`` sorted in decreasing order (see the module docstring).
    """
    y = _vector(values)
    if not (math.isfinite(total) and total >= 0):
        raise ValueError(f"the total must be a finite non-negative number, got {total!r}")
    if y.size == 0:
        if total != 0:
            raise ValueError(f"no cells can sum to {total}")
        return y.copy()
    if np.all(y >= 0) and math.isclose(float(y.sum()), total, rel_tol=1e-12, abs_tol=1e-12):
        return y.copy()
    if total == 0:
        return np.zeros_like(y)
    v = _variances(std, y.size)
    breaks = y / v
    order = np.argsort(-breaks, kind="stable")
    tau = (np.cumsum(y[order]) - total) / np.cumsum(v[order])
    active = np.nonzero(breaks[order] >= tau)[0]  # never empty for total >= 0 (k = 0 holds)
    t = float(tau[active[-1]])
    return np.asarray(np.maximum(y - t * v, 0.0), dtype=np.float64)


def _groups(cells: Sequence[Cell]) -> dict[tuple[str, ...], list[int]]:
    """Cell positions by everything but the last axis (one funnel or curve per group)."""
    out: dict[tuple[str, ...], list[int]] = {}
    for i, cell in enumerate(cells):
        out.setdefault(tuple(cell.labels[:-1]), []).append(i)
    return out


def _project(cells: Sequence[Cell], where: list[int], kind: str, out: list[float | None]) -> None:
    live = [i for i in where if cells[i].status == "ok" and cells[i].value is not None]
    if not live:
        return
    values = [float(cells[i].value) for i in live]  # type: ignore[arg-type]
    stds = [cells[i].std for i in live]
    std = None if any(s is None for s in stds) else [float(s) for s in stds]  # type: ignore[arg-type]
    fitted = funnel(values, std) if kind == "funnel" else survival(values, std)
    for i, x in zip(live, fitted, strict=True):
        out[i] = float(x)


def consistent_cells(statistic: str, cells: Sequence[Cell]) -> list[float | None]:
    """One row's (a site's or the network's) values made consistent, in the cells' order.

    Counts, histograms and crosstabs: non-negative. Funnels: non-increasing and
    non-negative along the steps of each group. Survival: non-increasing within
    ``[0, 1]`` along the grid of each group; the ``median`` cell is left as
    released. Other statistics (sum, mean, quantile) and suppressed cells (None)
    are left as released.
    """
    out: list[float | None] = [c.value for c in cells]
    if statistic in NONNEGATIVE:
        return [None if v is None else max(v, 0.0) for v in out]
    if statistic not in ("funnel", "survival"):
        return out
    for where in _groups(cells).values():
        if statistic == "survival":
            where = [i for i in where if cells[i].labels[-1:] != ["median"]]
        _project(cells, where, statistic, out)
    return out
