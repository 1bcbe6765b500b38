"""Counts over public cells: count, histogram and crosstab (each with group_by).

All three are the same release — a vector of tumour counts over a public grid —
so they share one exact computation and one OpenDP measurement (discrete
Laplace at L1 ``k``, or discrete Gaussian at L2 ``k``; see :mod:`nodes.sensitivity`).
"""

from __future__ import annotations

import numpy as np

from nodes import sensitivity
from nodes.data import RegistryData
from nodes.mechanisms import VectorPlan
from nodes.statistics.base import (
    Exact,
    Statistic,
    StatisticSpec,
    cell_index,
    cell_labels,
    count_half_width,
    row_members,
)
from varde.query import Query
from varde.release import Cell


def exact_counts(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact tumour count per cell."""
    idx, n_cells = cell_index(data, rows, query)
    counts = np.bincount(idx[idx >= 0], minlength=n_cells).astype(np.int64)
    return Exact(labels=cell_labels(query), counts=counts)


def count_cells(labels: list[list[str]], noisy: np.ndarray, plan: VectorPlan) -> list[Cell]:
    """Released numbers with their symmetric 95% interval and noise sd (any additive noise)."""
    hw, std = plan.half_width, plan.std
    return [
        Cell(labels=lab, value=float(v), ci_low=float(v) - hw, ci_high=float(v) + hw, std=std)
        for lab, v in zip(labels, noisy, strict=True)
    ]


def _cells(
    ex: Exact, _s: StatisticSpec, noisy: list[np.ndarray], plan: VectorPlan, _k: int
) -> list[Cell]:
    return count_cells(ex.labels, noisy[0], plan)


def _exact_value(ex: Exact, _s: StatisticSpec, i: int) -> tuple[float, dict[str, float]]:
    return float(ex.counts[i]), {}


COUNTS = Statistic(
    kinds=("count", "histogram", "crosstab"),
    exact=exact_counts,
    sensitivity=lambda _s, k: sensitivity.counts(k),
    vectors=lambda ex, _s, _k: [ex.counts],
    cells=_cells,
    target_half_width=count_half_width,
    exact_value=_exact_value,
    members=row_members,
)
"""Count, histogram and crosstab: one vector of counts over the query's cells."""
