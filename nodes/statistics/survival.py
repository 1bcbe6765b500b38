"""Kaplan-Meier survival from DP counts of deaths and censorings on a public monthly grid.

Per group_by cell a site releases, for each interval ``i`` of the grid, the
number who died in it (``d_i``) and who were last seen alive in it (``c_i``),
plus the number followed beyond the horizon: ``2m + 1`` disjoint counts, one
discrete-Laplace vector (:mod:`nodes.sensitivity`). The curve, its bands
(sampling + DP noise) and the median survival are post-processing
(:func:`varde.estimates.survival_from_counts`). The counts travel in the
``parts`` of each group's ``median`` cell, so the gateway can pool sites by
adding counts before estimating, the only correct way to pool a survival curve.
Under zCDP the same counts are one discrete-Gaussian vector (L2 sensitivity
``k``).
"""

from __future__ import annotations

import math

import numpy as np

from nodes import sensitivity
from nodes.data import RegistryData
from nodes.mechanisms import VectorPlan
from nodes.statistics.base import (
    Exact,
    Noise,
    Statistic,
    StatisticSpec,
    cell_index,
    cell_labels,
)
from varde.estimates import Z95, survival_cells, survival_parts
from varde.query import DAYS_PER_MONTH, AccuracyTarget, Count, Query, Survival
from varde.release import Cell
from varde.schema import FIELDS_BY_NAME

_COUNT = Count(kind="count")


def exact_survival(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact ``[d_0..d_m-1, c_0..c_m-1, beyond]`` per group (``labels``: the released cells)."""
    stat = query.statistic
    assert isinstance(stat, Survival)
    groups = Query.model_construct(**{**dict(query), "statistic": _COUNT})
    gidx, n_groups = cell_index(data, rows, groups)
    days = data.column("survival_days")[rows].astype(np.float64)
    status = data.column("vital_status")[rows]
    dead = FIELDS_BY_NAME["vital_status"].categories.index("dead")
    m = len(stat.months())
    keep = (gidx >= 0) & ~np.isnan(days) & (status >= 0)
    interval = np.floor(days[keep] / (DAYS_PER_MONTH * stat.interval_months)).astype(np.int64)
    interval = np.clip(interval, 0, None)
    cell = np.where(interval >= m, 2 * m, np.where(status[keep] == dead, interval, m + interval))
    width = 2 * m + 1
    counts = np.bincount(gidx[keep] * width + cell, minlength=n_groups * width).astype(np.int64)
    return Exact(labels=cell_labels(query), counts=counts)


def _cells(
    ex: Exact, stat: StatisticSpec, noisy: list[np.ndarray], plan: VectorPlan, _k: int
) -> list[Cell]:
    """The curve, bands and median of each group from its noisy counts (post-processing)."""
    assert isinstance(stat, Survival)
    months = stat.months()
    m, per_group = len(months), len(stat.labels())
    keys = survival_parts(m)
    cells: list[Cell] = []
    for g, counts in enumerate(noisy[0].reshape(-1, 2 * m + 1)):
        labels = ex.labels[g * per_group : (g + 1) * per_group]
        cells.extend(survival_cells(months, labels, [float(x) for x in counts], keys, plan.std))
    return cells


def survival_half_width(noise: Noise, stat: StatisticSpec, target: AccuracyTarget) -> float:
    """The 95% half-width the DP noise adds to ``S(t)``, at any grid point, for ``cohort_size``.

    Data-independent by construction: a cohort of ``n = cohort_size`` patients followed
    without censoring before the horizon, to first order. Then ``S_j = A / n`` with ``A``
    the patients still at risk after interval ``j`` (a sum of ``a`` released counts) and
    ``n - A`` a sum of the other ``b = 2m + 1 - a``; with noise sd ``sigma`` on every
    count, ``sd(S_j) = sigma sqrt((1 - S)^2 a + S^2 b) / n <= sigma sqrt(max(a, b)) / n
    <= sigma sqrt(2m) / n``, the worst case over every curve and grid point (checked on
    the life-table estimator's own gradient, at most 0.94 of the bound, and over repeated
    releases in ``tests/unit/nodes/statistics/test_accuracy_first.py``). Censoring shrinks
    the numbers at risk and widens the real band, which the release reports from its counts.
    """
    assert isinstance(stat, Survival) and target.cohort_size is not None
    m = len(stat.months())
    return Z95 * noise.std["count"] * math.sqrt(2 * m) / target.cohort_size


SURVIVAL = Statistic(
    kinds=("survival",),
    exact=exact_survival,
    sensitivity=lambda _s, k: sensitivity.counts(k),
    vectors=lambda ex, _s, _k: [ex.counts],
    cells=_cells,
    target_half_width=survival_half_width,
)
"""Kaplan-Meier survival: one count vector of deaths and censorings per interval (DP only)."""
