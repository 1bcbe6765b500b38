"""Statistics a node can release, each as exact aggregate -> costed plan -> released cells.

The split is what lets the pipeline charge the ledger between costing and
releasing: :func:`exact` computes exact per-cell aggregates (never leave the
node), :func:`plan_dp` builds the OpenDP measurement and knows its epsilon, and
only ``plan.release()`` draws noise. :func:`release_aggregate` is the non-DP
path with small-cell suppression.
"""

from __future__ import annotations

from nodes.data import RegistryData
from nodes.statistics.base import Exact, Plan
from nodes.statistics.counts import exact_counts, plan_counts
from nodes.statistics.sums import exact_sums, plan_mean, plan_sum
from nodes.statistics.suppression import release_aggregate
from varde.query import Count, Crosstab, Histogram, Mean, Query, Sum

__all__ = ["Exact", "Plan", "exact", "plan_dp", "release_aggregate"]


def exact(data: RegistryData, mask: object, query: Query) -> Exact:
    """Exact per-cell aggregates of the cohort ``mask`` for ``query``."""
    import numpy as np

    rows = np.asarray(mask, dtype=bool)
    stat = query.statistic
    if isinstance(stat, Count | Histogram | Crosstab):
        return exact_counts(data, rows, query)
    if isinstance(stat, Sum | Mean):
        return exact_sums(data, rows, query)
    raise TypeError(f"unsupported statistic {stat.kind}")  # pragma: no cover


def plan_dp(ex: Exact, query: Query, *, epsilon: float, max_rows: int) -> Plan:
    """The costed OpenDP release of ``ex`` at ``epsilon``; nothing random happens yet."""
    stat = query.statistic
    if isinstance(stat, Count | Histogram | Crosstab):
        return plan_counts(ex, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Sum):
        return plan_sum(ex, stat, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Mean):
        return plan_mean(ex, stat, epsilon=epsilon, max_rows=max_rows)
    raise TypeError(f"unsupported statistic {stat.kind}")  # pragma: no cover
