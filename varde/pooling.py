"""How each statistic's released cells pool across sites: the public half of a statistic.

* Counts, histograms, crosstabs and sums add up across sites; the network
  noise variance is the sum of the sites' variances (independent noise).
* Means pool the sites' released noisy sums and counts (``parts``):
  ``c + sum(S_i) / sum(N_i)``. Averaging site means would weight a 50-patient
  site like a 50,000-patient one and is the classic pooled-mean mistake.
* Quantiles pool the sites' released interval counts (``parts``) into one
  CDF and read the quantile from it: a network median is the median of the
  pooled data (up to the grid and the noise), never an average of site medians.
* Survival pools the sites' released death and censoring counts per interval
  (``parts`` of each group's ``median`` cell) and computes one life-table
  curve, bands and median from the pooled counts.
* A single site's interval is its own exact Laplace interval; a sum over
  several sites uses the normal approximation ``value ± 1.96·sd``.
* In aggregate mode a network cell is suppressed if any site suppressed it
  (a partial total would be mislabelled as the network's).
* The same rules hold in zCDP mode: every released number carries the sd of
  its noise (``std``/``part_std``, Laplace or Gaussian alike), and independent
  noise adds in variance. Sums of Gaussian noise are exactly Gaussian, so the
  network interval ``value ± 1.96·sd`` is exact there. No statistic here needs
  inverse-variance weighting: every network number is a total (or is computed
  from pooled totals), and a total's best estimate is the sum of the sites'
  unbiased noisy totals whatever their variances.

Why here and not in the gateway: these are rules about released numbers only,
and the node's statistic modules (:mod:`nodes.statistics`) and this table are
the two halves of one statistic; keeping this half in the shared package lets
a node's tests check its releases pool as the gateway will pool them. The
gateway finds a statistic's rule by its kind (:func:`pool`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from varde.estimates import (
    Z95,
    bin_part,
    mean_from_parts,
    quantiles_from_counts,
    survival_cells,
    survival_parts,
)
from varde.query import Mean, Quantile, Statistic, Survival
from varde.release import Cell, SiteRelease

PoolingRule = Callable[[Statistic, list[SiteRelease]], list[Cell]]
"""The network's cells from the releases of the sites that answered ``ok``."""


def _cellwise(combine: Callable[[Statistic, list[Cell]], Cell]) -> PoolingRule:
    """A rule that pools cell ``i`` of every site into network cell ``i``."""

    def rule(stat: Statistic, releases: list[SiteRelease]) -> list[Cell]:
        n = len(releases[0].cells)
        return [combine(stat, [r.cells[i] for r in releases]) for i in range(n)]

    return rule


def _add(_stat: Statistic, cells: list[Cell]) -> Cell:
    labels = cells[0].labels
    if any(c.status == "suppressed" for c in cells):
        return Cell(labels=labels, status="suppressed")
    if len(cells) == 1:
        return cells[0]
    value = sum(c.value or 0.0 for c in cells)
    std = math.sqrt(sum((c.std or 0.0) ** 2 for c in cells))
    return Cell(
        labels=labels, value=value, ci_low=value - Z95 * std, ci_high=value + Z95 * std, std=std
    )


def _pool_mean(stat: Statistic, cells: list[Cell]) -> Cell:
    assert isinstance(stat, Mean)
    labels = cells[0].labels
    if any(c.status == "suppressed" for c in cells):
        return Cell(labels=labels, status="suppressed")
    s = sum(c.parts.get("centred_sum", 0.0) for c in cells)
    n = sum(c.parts.get("count", 0.0) for c in cells)
    s_std = math.sqrt(sum(c.part_std.get("centred_sum", 0.0) ** 2 for c in cells))
    n_std = math.sqrt(sum(c.part_std.get("count", 0.0) ** 2 for c in cells))
    mean, std, lo, hi = mean_from_parts(
        centred_sum=s, count=n, sum_std=s_std, count_std=n_std, lower=stat.lower, upper=stat.upper
    )
    return Cell(
        labels=labels,
        value=mean,
        ci_low=lo,
        ci_high=hi,
        std=std,
        parts={"centred_sum": s, "count": n},
        part_std={"centred_sum": s_std, "count": n_std},
    )


def _pool_quantile(stat: Statistic, cells: list[Cell]) -> Cell:
    assert isinstance(stat, Quantile)
    labels = cells[0].labels
    if len(cells) == 1:
        return cells[0]
    n_bins = len(stat.candidates) - 1
    keys = [bin_part(i) for i in range(n_bins)]
    counts = [sum(c.parts.get(k, 0.0) for c in cells) for k in keys]
    stds = {k: math.sqrt(sum(c.part_std.get(k, 0.0) ** 2 for c in cells)) for k in keys}
    alpha = stat.alphas[stat.labels().index(labels[-1])]
    ((value, lo, hi),) = quantiles_from_counts(
        stat.candidates, counts, [alpha], max(stds.values(), default=0.0)
    )
    return Cell(
        labels=labels,
        value=value,
        ci_low=lo,
        ci_high=hi,
        parts=dict(zip(keys, counts, strict=True)),
        part_std=stds,
    )


def _pool_survival(stat: Statistic, releases: list[SiteRelease]) -> list[Cell]:
    assert isinstance(stat, Survival)
    months = stat.months()
    m, per_group = len(months), len(stat.labels())
    keys = survival_parts(m)
    n_groups = len(releases[0].cells) // per_group
    out: list[Cell] = []
    for g in range(n_groups):
        group = [r.cells[g * per_group : (g + 1) * per_group] for r in releases]
        carriers = [cells[-1] for cells in group]
        counts = [sum(c.parts.get(k, 0.0) for c in carriers) for k in keys]
        std = math.sqrt(sum(c.part_std.get(keys[0], 0.0) ** 2 for c in carriers))
        out.extend(survival_cells(months, [c.labels for c in group[0]], counts, keys, std))
    return out


POOLING: dict[str, PoolingRule] = {
    "count": _cellwise(_add),
    "histogram": _cellwise(_add),
    "crosstab": _cellwise(_add),
    "sum": _cellwise(_add),
    "funnel": _cellwise(_add),
    "mean": _cellwise(_pool_mean),
    "quantile": _cellwise(_pool_quantile),
    "survival": _pool_survival,
}
"""Every statistic's pooling rule, by the query kind it answers."""


def pool(stat: Statistic, releases: list[SiteRelease]) -> list[Cell]:
    """The network cells of ``stat`` from the sites' ``ok`` releases (at least one)."""
    rule = POOLING.get(stat.kind)
    if rule is None:  # the query language and this table are out of step: a bug
        raise TypeError(f"no pooling rule for statistic {stat.kind!r}")
    return rule(stat, releases)
