"""Statistics a node can release, each as exact aggregate -> costed plan -> released cells.

The split is what lets the pipeline charge the ledger between costing and
releasing: :func:`exact` computes exact per-cell aggregates (never leave the
node), :func:`plan` builds the OpenDP measurement for the query's typed budget
and knows its cost, and only ``plan.release()`` draws noise.
:func:`nodes.statistics.suppression.release_aggregate` is the non-DP path
with small-cell suppression.

Every statistic is one :class:`~nodes.statistics.base.Statistic` object in its
own module, found here by the query's kind; pure DP and zCDP are the same code,
the budget's type choosing Laplace or Gaussian
(:func:`nodes.mechanisms.plan_vector`). Adding a statistic means adding its
module, listing its object in :mod:`nodes.statistics.registry`, its query
model in :mod:`varde.query` and its pooling rule in :mod:`varde.pooling`.
"""

from __future__ import annotations

import numpy as np

from nodes.data import RegistryData
from nodes.mechanisms import plan_vector
from nodes.statistics.base import Exact, Plan, Statistic, cell_labels
from nodes.statistics.registry import STATISTICS, statistic
from nodes.statistics.units import counted_rows, rows_per_patient
from varde.budget import Budget
from varde.query import Query
from varde.release import Cell

__all__ = ["STATISTICS", "Exact", "Plan", "Statistic", "exact", "plan", "price", "statistic"]


def exact(data: RegistryData, mask: object, query: Query) -> Exact:
    """Exact per-cell aggregates of the cohort ``mask`` for ``query``, in the query's unit.

    Counting patients keeps each patient's first matching row (:mod:`nodes.statistics.units`).
    """
    rows = counted_rows(data, np.asarray(mask, dtype=bool), query)
    return statistic(query.statistic.kind).exact(data, rows, query)


def plan(ex: Exact, query: Query, budget: Budget, *, max_rows: int) -> Plan:
    """The costed OpenDP release of ``ex`` within ``budget``; nothing random happens yet.

    ``max_rows`` is the site's per-patient bound ``k``; a query counting patients is
    released at one row per patient whatever ``k`` (:func:`rows_per_patient`).

    Raises :class:`~varde.errors.InvalidQuery` for a budget the mechanism cannot
    represent (a noise scale or interval that is not finite), before any charge.
    """
    stat = statistic(query.statistic.kind)
    spec = query.statistic
    max_rows = rows_per_patient(query, max_rows)
    vectors = plan_vector(stat.sensitivity(spec, max_rows), budget)

    def release() -> list[Cell]:
        noisy = vectors.release(stat.vectors(ex, spec, max_rows))
        return stat.cells(ex, spec, noisy, vectors, max_rows)

    return Plan(vectors.cost, vectors.mechanism, stat.noise(vectors, spec, max_rows), release)


def price(query: Query, budget: Budget, *, max_rows: int) -> Plan:
    """The cost and accuracy of ``query`` within ``budget`` without reading a row (previews).

    Every plan's cost, scales and accuracy depend only on the query and the
    privacy unit, never on the data, so planning over zeros gives the real
    numbers. The returned plan must never be released.
    """
    labels = cell_labels(query)
    zeros = np.zeros(len(labels), dtype=np.int64)
    return plan(Exact(labels, zeros, zeros.astype(np.float64)), query, budget, max_rows=max_rows)
