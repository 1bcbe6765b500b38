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

import numpy as np

from nodes.data import RegistryData
from nodes.mechanisms import GaussianPlan, LaplacePlan, plan_gaussian, plan_laplace
from nodes.sensitivity import survival_l2_sensitivity, survival_sensitivity
from nodes.statistics.base import Exact, Plan, cell_index, cell_labels
from varde.estimates import survival_cells, survival_parts
from varde.query import DAYS_PER_MONTH, Count, Query, Survival
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


def plan_survival(ex: Exact, stat: Survival, *, epsilon: float, max_rows: int) -> Plan:
    """One discrete-Laplace vector over all counts; the curve is post-processing."""
    plan = plan_laplace(sensitivity=survival_sensitivity(max_rows), epsilon=epsilon, integer=True)
    return _survival_plan(ex, stat, plan)


def plan_survival_zcdp(ex: Exact, stat: Survival, *, rho: float, max_rows: int) -> Plan:
    """One discrete-Gaussian vector over all counts (zCDP); the curve is post-processing."""
    plan = plan_gaussian(sensitivity=survival_l2_sensitivity(max_rows), rho=rho)
    return _survival_plan(ex, stat, plan)


def _survival_plan(ex: Exact, stat: Survival, plan: LaplacePlan | GaussianPlan) -> Plan:
    months = stat.months()
    m, per_group = len(months), len(stat.labels())
    keys = survival_parts(m)
    std = plan.std

    def release() -> list[Cell]:
        noisy = plan.release(ex.counts).reshape(-1, 2 * m + 1)
        cells: list[Cell] = []
        for g, counts in enumerate(noisy):
            labels = ex.labels[g * per_group : (g + 1) * per_group]
            cells.extend(survival_cells(months, labels, [float(x) for x in counts], keys, std))
        return cells

    return Plan(
        plan.epsilon,
        plan.mechanism,
        {"count": plan.scale},
        release,
        noise_std={"count": std},
        accuracy={"count": plan.half_width},
    )
