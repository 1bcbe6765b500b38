"""Counts over public cells: count, histogram and crosstab (each with group_by).

All three are the same release — a vector of tumour counts over a public grid —
so they share one exact computation and one OpenDP measurement (discrete
Laplace, L1 sensitivity ``k``; see :mod:`nodes.sensitivity`).
"""

from __future__ import annotations

import numpy as np

from nodes.data import RegistryData
from nodes.mechanisms import plan_gaussian, plan_laplace
from nodes.sensitivity import count_l2_sensitivity, count_sensitivity
from nodes.statistics.base import Exact, Plan, cell_index, cell_labels
from varde.query import Query
from varde.release import Cell


def exact_counts(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact tumour count per cell."""
    idx, n_cells = cell_index(data, rows, query)
    counts = np.bincount(idx[idx >= 0], minlength=n_cells).astype(np.int64)
    return Exact(labels=cell_labels(query), counts=counts)


def plan_counts(ex: Exact, *, epsilon: float, max_rows: int) -> Plan:
    """Discrete-Laplace release of the count vector."""
    plan = plan_laplace(sensitivity=count_sensitivity(max_rows), epsilon=epsilon, integer=True)

    def release() -> list[Cell]:
        return count_cells(ex, plan.release(ex.counts), plan.half_width, plan.std)

    return Plan(
        plan.epsilon,
        plan.mechanism,
        {"count": plan.scale},
        release,
        noise_std={"count": plan.std},
        accuracy={"count": plan.half_width},
    )


def plan_counts_zcdp(ex: Exact, *, rho: float, max_rows: int) -> Plan:
    """Discrete-Gaussian release of the count vector; ``Plan.epsilon`` holds the rho charged."""
    plan = plan_gaussian(sensitivity=count_l2_sensitivity(max_rows), rho=rho)

    def release() -> list[Cell]:
        return count_cells(ex, plan.release(ex.counts), plan.half_width, plan.std)

    return Plan(
        plan.rho,
        plan.mechanism,
        {"count": plan.scale},
        release,
        noise_std={"count": plan.std},
        accuracy={"count": plan.half_width},
    )


def count_cells(ex: Exact, noisy: np.ndarray, half_width: float, std: float) -> list[Cell]:
    """Released counts with their symmetric 95% interval and noise sd (any additive mechanism)."""
    return [
        Cell(
            labels=lab,
            value=float(v),
            ci_low=float(v) - half_width,
            ci_high=float(v) + half_width,
            std=std,
        )
        for lab, v in zip(ex.labels, noisy, strict=True)
    ]
