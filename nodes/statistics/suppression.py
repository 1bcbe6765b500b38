"""Non-DP aggregate mode: exact values with small-cell and complementary suppression.

Only for sites whose policy allows it (and only for projects it lists for it).

**Primary suppression.** A cell built from fewer than ``min_cell`` tumours (but
more than none) is released as ``suppressed`` with no value; so is a sum or
mean over fewer than ``min_cell`` values (a mean over none, too).

**Complementary suppression.** A suppressed cell must not be recoverable by
subtraction from a margin: every *line* of the released table (the cells that
differ along one axis only, e.g. one row of a cancer type x stage table) sums
to a margin the researcher may know (from another query, or a published
total). If a line holds exactly one suppressed cell, margin minus the released
rest gives it back, so a second cell of that line is suppressed too (the one
with the smallest non-zero count, so as little as possible is lost; a zero
cell only when nothing else is left). Suppressing it can leave another line
with a single suppression, so this repeats until every line has zero or at
least two suppressed cells. Suppressed cells are not told apart (primary or
complementary): telling would say which ones are small.

Limits (why DP mode exists). This protects a single release against its own
line margins. It does *not* protect against:

* differencing *across* releases with different cohorts (``count(A)`` minus
  ``count(A and not B)``), nor sub-totals over several lines (a block of two
  suppressed cells in each of two rows can still be pinned down by interval
  arithmetic when the other margins are known exactly);
* a funnel's step axis, whose cells are nested, not additive: only its group
  axes are protected;
* knowing that a cell is structurally zero, which can reveal a complement
  chosen among zeros.

Sites should use aggregate mode only for low-risk outputs and keep ``min_cell``
at least :data:`nodes.policy.SAFE_MIN_CELL`.
"""

from __future__ import annotations

import numpy as np

from nodes.statistics.base import Exact
from nodes.statistics.registry import statistic
from varde.errors import InvalidQuery
from varde.query import Funnel, Mean, Query
from varde.release import Cell


def complementary_suppression(
    counts: np.ndarray, shape: tuple[int, ...], primary: np.ndarray, axes: list[int]
) -> np.ndarray:
    """Extend ``primary`` so no line along ``axes`` holds exactly one suppressed cell.

    ``counts`` and ``primary`` are flat in row-major order of ``shape``.

    >>> counts = np.array([3, 50, 40, 60, 70, 80])  # 2 x 3; cell (0, 0) is small
    >>> complementary_suppression(counts, (2, 3), counts < 5, [0, 1]).reshape(2, 3).tolist()
    [[True, False, True], [True, False, True]]
    >>> counts = np.array([3, 50, 40, 60, 70, 80, 90, 4, 95])  # 3 x 3; two small cells
    >>> complementary_suppression(counts, (3, 3), counts < 5, [0, 1]).reshape(3, 3).tolist()
    [[True, True, False], [False, False, False], [True, True, False]]
    """
    supp = np.asarray(primary, dtype=bool).reshape(shape).copy()
    c = np.asarray(counts).reshape(shape)

    def lone_lines_through(cell: tuple[int, ...], skip: int) -> int:
        """How many other lines through ``cell`` hold exactly one suppressed cell."""
        n = 0
        for a in axes:
            if a != skip and shape[a] > 1:
                line = cell[:a] + (slice(None),) + cell[a + 1 :]
                n += int(supp[line].sum() == 1)
        return n

    changed = True
    while changed:
        changed = False
        for ax in axes:
            if shape[ax] < 2:
                continue
            for rest in np.argwhere(np.moveaxis(supp, ax, -1).sum(axis=-1) == 1):
                line = (*rest[:ax], slice(None), *rest[ax:])
                if supp[line].sum() != 1:  # fixed meanwhile by another complement
                    continue
                free = [int(j) for j in np.flatnonzero(~supp[line])]
                cells = [(*rest[:ax], j, *rest[ax:]) for j in free]
                # prefer a cell that also fixes another lone line, then a small non-zero count
                best = min(
                    cells,
                    key=lambda cell: (-lone_lines_through(cell, ax), c[cell] == 0, c[cell]),
                )
                supp[best] = True
                changed = True
    return supp.reshape(-1)


def release_aggregate(ex: Exact, query: Query, *, min_cell: int) -> list[Cell]:
    """Exact cells after primary and complementary suppression (see the module docstring)."""
    stat = query.statistic
    counts = np.asarray(ex.counts)
    primary = (counts < min_cell) if isinstance(stat, Mean) else (counts > 0) & (counts < min_cell)
    axes = query.axes()
    shape = tuple(len(labels) for _, labels in axes)
    additive = [
        i for i, (name, _) in enumerate(axes) if not (isinstance(stat, Funnel) and name == "step")
    ]
    suppressed = complementary_suppression(counts, shape, primary, additive) if axes else primary
    value_of = statistic(stat.kind).exact_value
    if value_of is None:  # the query model refuses these in aggregate mode already
        raise InvalidQuery(f"{stat.kind} is DP only: it has no aggregate-mode release")
    cells: list[Cell] = []
    for i, lab in enumerate(ex.labels):
        if suppressed[i]:
            cells.append(Cell(labels=lab, status="suppressed"))
            continue
        value, parts = value_of(ex, stat, i)
        cells.append(
            Cell(labels=lab, value=value, ci_low=value, ci_high=value, std=0.0, parts=parts)
        )
    return cells
