"""Trial-feasibility funnel: the count left after each eligibility criterion, in order.

Step ``j`` counts the cohort's rows meeting criteria ``1..j`` (per group_by
cell). Steps are nested, so each is its own discrete-Laplace measurement and
OpenDP composes them (:func:`nodes.mechanisms.plan_vector` with one part per
step; the sensitivity argument is in :mod:`nodes.sensitivity`). Noise is independent
per step, so released counts can rise from one step to the next; that is
honest noise, and the interval of each row says how much.

Under zCDP each step is a discrete Gaussian (L2 sensitivity ``k``) and
OpenDP's ``make_composition`` adds the steps' rho.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nodes import sensitivity
from nodes.cohort import evaluate
from nodes.data import RegistryData
from nodes.mechanisms import Sensitivity, VectorPlan
from nodes.statistics.base import (
    Exact,
    Statistic,
    StatisticSpec,
    cell_index,
    cell_labels,
    count_half_width,
    members_by_cell,
)
from nodes.statistics.counts import count_cells
from nodes.statistics.units import first_tumours
from varde.query import Count, Funnel, Query
from varde.release import Cell

_COUNT = Count(kind="count")


def _alive_by_step(
    data: RegistryData, rows: np.ndarray, query: Query
) -> Iterator[tuple[np.ndarray, int]]:
    """Per step, the group cell of every row still in (criteria ``1..j``; -1 for none).

    Counting patients, each step keeps each patient's first row meeting criteria ``1..j``
    (:mod:`nodes.statistics.units`): one row per patient per step.
    """
    stat = query.statistic
    assert isinstance(stat, Funnel)
    # the same query as a plain count: its cells are just the group_by cells
    groups = Query.model_construct(**{**dict(query), "statistic": _COUNT})
    alive = rows.copy()
    for step in stat.steps:
        alive &= evaluate(data, step.criterion)
        counted = first_tumours(data, alive) if query.unit == "patients" else alive
        idx, n_groups = cell_index(data, counted, groups)
        full = np.full(rows.shape[0], -1, dtype=np.int64)
        full[counted] = idx
        yield full, n_groups


def exact_funnel(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact count per (group, step), step varying fastest (the query's cell order)."""
    per_step = [
        np.bincount(cell[cell >= 0], minlength=n).astype(np.int64)
        for cell, n in _alive_by_step(data, rows, query)
    ]
    counts = np.stack(per_step, axis=1).reshape(-1)  # (group, step) row-major
    return Exact(labels=cell_labels(query), counts=counts)


def funnel_members(data: RegistryData, rows: np.ndarray, query: Query) -> list[np.ndarray]:
    """The distinct patients behind each (group, step) cell, in the query's cell order."""
    per_step = [
        members_by_cell(cell, data.patients, n) for cell, n in _alive_by_step(data, rows, query)
    ]
    return [per_step[j][g] for g in range(len(per_step[0])) for j in range(len(per_step))]


def _steps(stat: StatisticSpec) -> int:
    assert isinstance(stat, Funnel)
    return len(stat.steps)


def _sensitivity(stat: StatisticSpec, k: int) -> Sensitivity:
    return sensitivity.funnel_steps(k, steps=_steps(stat))


def _vectors(ex: Exact, stat: StatisticSpec, _k: int) -> list[np.ndarray]:
    """One count vector per step (over the group_by cells), each its own measurement."""
    by_step = ex.counts.reshape(-1, _steps(stat))
    return [by_step[:, j] for j in range(by_step.shape[1])]


def _cells(
    ex: Exact, _s: StatisticSpec, noisy: list[np.ndarray], plan: VectorPlan, _k: int
) -> list[Cell]:
    counts = np.stack(noisy, axis=1).reshape(-1)  # back to (group, step) row-major
    return count_cells(ex.labels, counts, plan)


FUNNEL = Statistic(
    kinds=("funnel",),
    exact=exact_funnel,
    sensitivity=_sensitivity,
    vectors=_vectors,
    cells=_cells,
    target_half_width=count_half_width,
    exact_value=lambda ex, _s, i: (float(ex.counts[i]), {}),
    members=funnel_members,
)
"""Attrition funnel: one count vector per step, composed by OpenDP."""
