"""Statistics a node can release, each as exact aggregate -> costed plan -> released cells.

The split is what lets the pipeline charge the ledger between costing and
releasing: :func:`exact` computes exact per-cell aggregates (never leave the
node), :func:`plan_dp` builds the OpenDP measurement and knows its epsilon, and
only ``plan.release()`` draws noise. :func:`release_aggregate` is the non-DP
path with small-cell suppression.
"""

from __future__ import annotations

from nodes.data import RegistryData
from nodes.statistics.base import Exact, Plan, cell_labels
from nodes.statistics.counts import exact_counts, plan_counts, plan_counts_zcdp
from nodes.statistics.funnel import exact_funnel, plan_funnel, plan_funnel_zcdp
from nodes.statistics.quantiles import exact_quantile, plan_quantile, plan_quantile_zcdp
from nodes.statistics.sums import exact_sums, plan_mean, plan_mean_zcdp, plan_sum, plan_sum_zcdp
from nodes.statistics.suppression import release_aggregate
from nodes.statistics.survival import exact_survival, plan_survival, plan_survival_zcdp
from varde.query import (
    Count,
    Crosstab,
    Funnel,
    Histogram,
    Mean,
    Quantile,
    Query,
    Sum,
    Survival,
)

__all__ = [
    "Exact",
    "Plan",
    "cost_dp",
    "cost_zcdp",
    "exact",
    "plan_dp",
    "plan_zcdp",
    "release_aggregate",
]


def exact(data: RegistryData, mask: object, query: Query) -> Exact:
    """Exact per-cell aggregates of the cohort ``mask`` for ``query``."""
    import numpy as np

    rows = np.asarray(mask, dtype=bool)
    stat = query.statistic
    if isinstance(stat, Count | Histogram | Crosstab):
        return exact_counts(data, rows, query)
    if isinstance(stat, Sum | Mean):
        return exact_sums(data, rows, query)
    if isinstance(stat, Funnel):
        return exact_funnel(data, rows, query)
    if isinstance(stat, Quantile):
        return exact_quantile(data, rows, query)
    if isinstance(stat, Survival):
        return exact_survival(data, rows, query)
    raise TypeError(f"unsupported statistic {stat.kind}")  # pragma: no cover


def cost_dp(query: Query, *, epsilon: float, max_rows: int) -> Plan:
    """The cost and accuracy of ``query`` at ``epsilon`` without reading a row (for previews).

    Every plan's epsilon, scales and accuracy depend only on the query and the
    privacy unit, never on the data, so planning over zeros gives the real
    numbers. The returned plan must never be released.
    """
    return plan_dp(_zeros(query), query, epsilon=epsilon, max_rows=max_rows)


def plan_zcdp(ex: Exact, query: Query, *, rho: float, max_rows: int) -> Plan:
    """The costed zCDP (Gaussian) release; ``plan.epsilon`` is the rho it costs.

    Every statistic releases the same vector as under pure DP, through OpenDP's
    Gaussian at the L2 sensitivity (:mod:`nodes.sensitivity`) instead of the
    Laplace at the L1 one; the cells built from it are identical in shape.
    """
    stat = query.statistic
    if isinstance(stat, Count | Histogram | Crosstab):
        return plan_counts_zcdp(ex, rho=rho, max_rows=max_rows)
    if isinstance(stat, Sum):
        return plan_sum_zcdp(ex, stat, rho=rho, max_rows=max_rows)
    if isinstance(stat, Mean):
        return plan_mean_zcdp(ex, stat, rho=rho, max_rows=max_rows)
    if isinstance(stat, Funnel):
        return plan_funnel_zcdp(ex, stat, rho=rho, max_rows=max_rows)
    if isinstance(stat, Quantile):
        return plan_quantile_zcdp(ex, stat, rho=rho, max_rows=max_rows)
    if isinstance(stat, Survival):
        return plan_survival_zcdp(ex, stat, rho=rho, max_rows=max_rows)
    raise TypeError(f"unsupported statistic {stat.kind}")  # pragma: no cover


def cost_zcdp(query: Query, *, rho: float, max_rows: int) -> Plan:
    """Cost and accuracy of a zCDP query without reading a row (see :func:`cost_dp`)."""
    return plan_zcdp(_zeros(query), query, rho=rho, max_rows=max_rows)


def _zeros(query: Query) -> Exact:
    """Exact aggregates of nothing, shaped like ``query``'s release (for pricing only)."""
    import numpy as np

    labels = cell_labels(query)
    zeros = np.zeros(len(labels), dtype=np.int64)
    return Exact(labels=labels, counts=zeros, sums=zeros.astype(np.float64))


def plan_dp(ex: Exact, query: Query, *, epsilon: float, max_rows: int) -> Plan:
    """The costed OpenDP release of ``ex`` at ``epsilon``; nothing random happens yet."""
    stat = query.statistic
    if isinstance(stat, Count | Histogram | Crosstab):
        return plan_counts(ex, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Sum):
        return plan_sum(ex, stat, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Mean):
        return plan_mean(ex, stat, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Funnel):
        return plan_funnel(ex, stat, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Quantile):
        return plan_quantile(ex, stat, epsilon=epsilon, max_rows=max_rows)
    if isinstance(stat, Survival):
        return plan_survival(ex, stat, epsilon=epsilon, max_rows=max_rows)
    raise TypeError(f"unsupported statistic {stat.kind}")  # pragma: no cover
