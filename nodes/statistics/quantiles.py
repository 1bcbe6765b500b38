"""Quantiles (median, quartiles, ...) through DP counts over a public candidate grid.

A site releases one discrete-Laplace count per candidate interval (and per
group_by cell); the quantiles are post-processing of those counts
(:func:`varde.estimates.quantiles_from_counts`, OpenDP's
``make_quantiles_from_counts``). The released cell for each requested alpha
carries the interval counts in ``parts`` (``bin0``, ``bin1``, ...), so the
gateway pools sites by adding counts and reading the pooled CDF: the correct
network median, not an average of site medians. Under zCDP the counts are
one discrete-Gaussian vector (L2 sensitivity ``k``) and the same
post-processing follows.
"""

from __future__ import annotations

import numpy as np

from nodes import sensitivity
from nodes.data import RegistryData
from nodes.mechanisms import VectorPlan
from nodes.statistics.base import Exact, Statistic, StatisticSpec, cell_index, cell_labels
from varde.estimates import bin_part, quantiles_from_counts
from varde.query import Count, Quantile, Query
from varde.release import Cell

_COUNT = Count(kind="count")


def exact_quantile(data: RegistryData, rows: np.ndarray, query: Query) -> Exact:
    """Exact count per (group, interval), interval varying fastest.

    ``labels`` are the released cells (group x alpha); ``counts`` is longer
    (group x interval) and is only ever released through :data:`QUANTILE`.
    """
    stat = query.statistic
    assert isinstance(stat, Quantile)
    groups = Query.model_construct(**{**dict(query), "statistic": _COUNT})
    gidx, n_groups = cell_index(data, rows, groups)
    values = data.column(stat.field)[rows].astype(np.float64)
    edges = np.asarray(stat.candidates, dtype=np.float64)
    n_bins = edges.size - 1
    keep = (gidx >= 0) & ~np.isnan(values)
    clamped = np.clip(values[keep], edges[0], edges[-1])
    bins = np.clip(np.searchsorted(edges, clamped, side="right") - 1, 0, n_bins - 1)
    flat = gidx[keep] * n_bins + bins
    counts = np.bincount(flat, minlength=n_groups * n_bins).astype(np.int64)
    return Exact(labels=cell_labels(query), counts=counts)


def _cells(
    ex: Exact, stat: StatisticSpec, noisy: list[np.ndarray], plan: VectorPlan, _k: int
) -> list[Cell]:
    """Each group's quantiles from its noisy interval counts (post-processing)."""
    assert isinstance(stat, Quantile)
    n_bins, n_alpha = len(stat.candidates) - 1, len(stat.alphas)
    std = plan.std
    cells = []
    for g, counts in enumerate(noisy[0].reshape(-1, n_bins)):
        parts = {bin_part(i): float(c) for i, c in enumerate(counts)}
        estimates = quantiles_from_counts(
            stat.candidates, [float(c) for c in counts], stat.alphas, std
        )
        for a, (value, lo, hi) in enumerate(estimates):
            cells.append(
                Cell(
                    labels=ex.labels[g * n_alpha + a],
                    value=value,
                    ci_low=lo,
                    ci_high=hi,
                    parts=parts,
                    part_std=dict.fromkeys(parts, std),
                )
            )
    return cells


QUANTILE = Statistic(
    kinds=("quantile",),
    exact=exact_quantile,
    sensitivity=lambda _s, k: sensitivity.counts(k),
    vectors=lambda ex, _s, _k: [ex.counts],
    cells=_cells,
)
"""Quantiles: one count vector over the public candidate intervals (DP only)."""
