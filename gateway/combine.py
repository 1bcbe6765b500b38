"""Combine per-site releases into the network row. Only released numbers come in.

* Counts, histograms, crosstabs and sums add up across sites; the network
  noise variance is the sum of the sites' variances (independent noise).
* Means pool the sites' released noisy sums and counts (``parts``):
  ``c + sum(S_i) / sum(N_i)``. Averaging site means would weight a 50-patient
  site like a 50,000-patient one and is the classic pooled-mean mistake.
* A single site's interval is its own exact Laplace interval; a sum over
  several sites uses the normal approximation ``value ± 1.96·sd``.
* In aggregate mode a network cell is suppressed if any site suppressed it
  (a partial total would be mislabelled as the network's).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from varde.estimates import Z95, mean_from_parts
from varde.query import Mean, Query
from varde.release import Cell, SiteRelease


class NetworkRow(BaseModel):
    """The combined answer over the sites that released."""

    model_config = ConfigDict(frozen=True)

    sites: list[str]
    epsilon_spent: dict[str, float]
    cells: list[Cell]


def combine(query: Query, releases: list[SiteRelease]) -> NetworkRow | None:
    """The network row from the sites whose status is ``ok``; None if there are none."""
    ok = [r for r in releases if r.status == "ok"]
    if not ok:
        return None
    n = len(ok[0].cells)
    cells = []
    for i in range(n):
        site_cells = [r.cells[i] for r in ok]
        if isinstance(query.statistic, Mean):
            cells.append(_pool_mean(query.statistic, site_cells))
        else:
            cells.append(_add(site_cells))
    return NetworkRow(
        sites=[r.site for r in ok],
        epsilon_spent={r.site: r.epsilon_charged for r in ok},
        cells=cells,
    )


def _add(cells: list[Cell]) -> Cell:
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


def _pool_mean(stat: Mean, cells: list[Cell]) -> Cell:
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
