"""Trial-feasibility funnel: the count left after each eligibility criterion, in order.

Step ``j`` counts the cohort's rows meeting criteria ``1..j`` (per group_by
cell). Steps are nested, so each is its own discrete-Laplace measurement and
OpenDP composes them (:func:`nodes.mechanisms.plan_composed_laplace`; the
sensitivity argument is in :mod:`nodes.sensitivity`). Noise is independent
per step, so released counts can rise from one step to the next; that is
honest noise, and the interval of each row says how much.

Under zCDP each step is a discrete Gaussian (L2 sensitivity ``k``) and
OpenDP's ``make_composition`` adds the steps' rho
(:func:`nodes.mechanisms.plan_composed_gaussian`).
"""

from __future__ import annotations

import numpy as np

from nodes.cohort import evaluate
from nodes.data import RegistryData
from nodes.mechanisms import ComposedPlan, plan_composed_gaussian, plan_composed_laplace
from nodes.sensitivity import funnel_step_l2_sensitivity, funnel_step_sensitivity
from nodes.statistics.base import Exact, Plan, cell_index, cell_labels
from varde.query import Count, Funnel, Query
from varde.release import Cell

_COUNT = Count(kind="count")


def exact_funnel(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact count per (group, step), step varying fastest (the query's cell order)."""
    stat = query.statistic
    assert isinstance(stat, Funnel)
    # the same query as a plain count: its cells are just the group_by cells
    groups = Query.model_construct(**{**dict(query), "statistic": _COUNT})
    alive = rows.copy()
    per_step = []
    for step in stat.steps:
        alive &= evaluate(data, step.criterion)
        idx, n_groups = cell_index(data, alive, groups)
        per_step.append(np.bincount(idx[idx >= 0], minlength=n_groups).astype(np.int64))
    counts = np.stack(per_step, axis=1).reshape(-1)  # (group, step) row-major
    return Exact(labels=cell_labels(query), counts=counts)


def plan_funnel(ex: Exact, stat: Funnel, *, epsilon: float, max_rows: int) -> Plan:
    """One discrete-Laplace measurement per step, composed by OpenDP to ``epsilon``."""
    m = len(stat.steps)
    plan = plan_composed_laplace(
        sensitivity=funnel_step_sensitivity(max_rows), epsilon=epsilon, parts=m, integer=True
    )
    return _funnel_plan(ex, plan)


def plan_funnel_zcdp(ex: Exact, stat: Funnel, *, rho: float, max_rows: int) -> Plan:
    """One discrete-Gaussian measurement per step, composed by OpenDP to ``rho`` (zCDP)."""
    plan = plan_composed_gaussian(
        sensitivity=funnel_step_l2_sensitivity(max_rows), rho=rho, parts=len(stat.steps)
    )
    return _funnel_plan(ex, plan)


def _funnel_plan(ex: Exact, plan: ComposedPlan) -> Plan:
    m = plan.parts
    hw, std = plan.part.half_width, plan.part.std

    def release() -> list[Cell]:
        by_step = ex.counts.reshape(-1, m)
        noisy = np.stack(plan.release([by_step[:, j] for j in range(m)]), axis=1).reshape(-1)
        return [
            Cell(labels=lab, value=float(v), ci_low=float(v) - hw, ci_high=float(v) + hw, std=std)
            for lab, v in zip(ex.labels, noisy, strict=True)
        ]

    return Plan(
        plan.epsilon,
        plan.mechanism,
        {"count": plan.part.scale},
        release,
        noise_std={"count": std},
        accuracy={"count": hw},
    )
