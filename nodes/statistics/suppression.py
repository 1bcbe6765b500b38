"""Non-DP aggregate mode: exact values with small-cell suppression.

Only for sites whose policy allows it (and only for projects it lists for it).
A cell built from fewer than ``min_cell`` tumours (but more than none) is
released as ``suppressed`` with no value; so is a sum or mean over fewer than
``min_cell`` values. Complementary suppression (so margins cannot recover a
suppressed cell) is not done yet: see the open statistics issue.
"""

from __future__ import annotations

from nodes.sensitivity import mean_centre
from nodes.statistics.base import Exact
from varde.query import Mean, Query, Sum
from varde.release import Cell


def release_aggregate(ex: Exact, query: Query, *, min_cell: int) -> list[Cell]:
    """Exact cells, each suppressed when its count is in ``[1, min_cell)``."""
    stat = query.statistic
    cells: list[Cell] = []
    for i, lab in enumerate(ex.labels):
        n = int(ex.counts[i])
        small = 0 < n < min_cell if not isinstance(stat, Mean) else n < min_cell
        if small:
            cells.append(Cell(labels=lab, status="suppressed"))
            continue
        parts: dict[str, float] = {}
        if isinstance(stat, Sum):
            assert ex.sums is not None
            value = float(ex.sums[i])
        elif isinstance(stat, Mean):
            assert ex.sums is not None
            value = mean_centre(lower=stat.lower, upper=stat.upper) + float(ex.sums[i]) / n
            parts = {"centred_sum": float(ex.sums[i]), "count": float(n)}
        else:
            value = float(n)
        cells.append(
            Cell(labels=lab, value=value, ci_low=value, ci_high=value, std=0.0, parts=parts)
        )
    return cells
