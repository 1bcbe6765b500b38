"""Non-DP aggregate mode: suppression, the cell-key method, and what is left for overlap control.

Only for sites whose policy allows it (and only for projects it lists for it).
Three layers, each against one way of reading a patient out of exact tables
(``docs/AGGREGATE.md`` walks through the attacks):

**Primary suppression, on patients.** A cell of fewer than ``min_cell``
*patients* is released as ``suppressed`` with no value, and so is a cell of
none: zero and small cells look alike, because publishing zeros while
suppressing small ones tells which cells hold someone. Sums and means use their
own, larger threshold (``sum_min_cell``), and only where the policy allows them.

**Complementary suppression, on every axis.** Every *line* of a table (the
cells that differ along one axis only) sums to a margin the researcher may know.
If a line holds exactly one suppressed cell, the margin minus the released rest
gives it back, so a second cell of the line is suppressed too (the smallest
non-empty one, so as little as possible is lost), until every line has zero or
at least two suppressed cells. A funnel's steps are nested rather than additive:
the people who drop out between two published steps form a cell of their own,
so a step is published only if it and the drop since the last published step
both reach ``min_cell`` (a drop of zero included); the rule and the group-axis
complements are applied until neither changes anything.

**The cell-key method.** Every published count is perturbed by a small amount
fixed by the set of patients behind it (:mod:`nodes.statistics.cellkey`): the
same set gets the same number, and sets that differ by one patient get unrelated
ones, so subtracting releases gives a noisy difference, not a patient.

Across releases, :mod:`nodes.overlap` refuses a release whose cells' patients
differ from an earlier release's by fewer than ``min_cell``.

Sites should use aggregate mode only for low-risk outputs and keep ``min_cell``
at least :data:`nodes.policy.SAFE_MIN_CELL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nodes.data import RegistryData
from nodes.statistics.base import Exact
from nodes.statistics.cellkey import perturbation, record_keys
from nodes.statistics.registry import statistic
from nodes.statistics.units import counted_rows
from varde.errors import InvalidQuery
from varde.query import Funnel, Query
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


def funnel_step_suppression(
    patients: np.ndarray, suppressed: np.ndarray, min_cell: int, min_drop: int
) -> np.ndarray:
    """Extend ``suppressed`` (group x step) so no published step is small or close to the last.

    ``patients[g, j]`` is the number of patients in step ``j`` of group ``g``
    (non-increasing in ``j``). A step stays published only if it has at least
    ``min_cell`` patients and at least ``min_drop`` fewer than the last step
    published before it in its group, so no drop-out group is small or empty
    (``min_drop`` is at least ``min_cell``, and above twice the cell-key spread,
    so perturbed steps never rise).

    >>> n = np.array([[100, 97, 60, 3]])
    >>> funnel_step_suppression(n, np.zeros_like(n, dtype=bool), 5, 5).tolist()
    [[False, True, False, True]]
    """
    out = suppressed.copy()
    for g in range(patients.shape[0]):
        last = math.inf
        for j in range(patients.shape[1]):
            n = float(patients[g, j])
            if out[g, j] or n < min_cell or last - n < min_drop:
                out[g, j] = True
            else:
                last = n
    return out


@dataclass(frozen=True)
class AggregateRelease:
    """What aggregate mode publishes, and the patient sets behind the published cells."""

    cells: list[Cell]
    released: list[np.ndarray]
    """Distinct patients of each published (not suppressed) cell, for overlap control."""


def _suppressed(
    query: Query, patients: np.ndarray, counts: np.ndarray, min_cell: int, spread: int
) -> np.ndarray:
    """Primary, complementary and (for funnels) step suppression, to a fixed point."""
    axes = query.axes()
    shape = tuple(len(labels) for _, labels in axes)
    funnel = isinstance(query.statistic, Funnel)
    additive = [i for i, (name, _) in enumerate(axes) if not (funnel and name == "step")]
    supp = patients < min_cell  # zero included: empty and small cells look alike
    while True:
        before = supp.copy()
        if axes:
            supp = complementary_suppression(counts, shape, supp, additive)
        if funnel:
            steps = shape[-1]
            supp = funnel_step_suppression(
                patients.reshape(-1, steps),
                supp.reshape(-1, steps),
                min_cell,
                max(min_cell, 2 * spread + 1),
            ).reshape(-1)
        if (supp == before).all():
            return supp


def release_aggregate(
    data: RegistryData,
    rows: np.ndarray,
    ex: Exact,
    query: Query,
    *,
    min_cell: int,
    spread: int,
    salt: int,
) -> AggregateRelease:
    """The published cells of ``query`` in aggregate mode (see the module docstring).

    ``min_cell`` is the threshold for this statistic (the policy's ``sum_min_cell``
    for sums and means); ``spread`` the cell-key perturbation's bound (counts
    only; sums and means are published exactly, which is why they need their own
    threshold and the policy's explicit leave); ``salt`` the node's secret for
    record keys.
    """
    stat = statistic(query.statistic.kind)
    if stat.exact_value is None or stat.members is None:  # refused by the query model already
        raise InvalidQuery(f"{query.statistic.kind} is DP only: it has no aggregate-mode release")
    members = stat.members(data, counted_rows(data, rows, query), query)
    patients = np.array([m.size for m in members], dtype=np.int64)
    supp = _suppressed(query, patients, np.asarray(ex.counts), min_cell, spread)
    by_patient = np.zeros(int(data.patients.max()) + 1 if data.n_rows else 0)
    if data.patient_keys is not None:
        by_patient[data.patients] = record_keys(data.patient_keys, salt)  # one key per patient
    counted = query.statistic.kind not in ("sum", "mean")
    noise = spread if counted else 0
    std = math.sqrt(noise * (noise + 1) / 3.0)  # sd of the uniform perturbation on -D..D
    cells: list[Cell] = []
    released: list[np.ndarray] = []
    for i, lab in enumerate(ex.labels):
        if supp[i]:
            cells.append(Cell(labels=lab, status="suppressed"))
            continue
        value, parts = stat.exact_value(ex, query.statistic, i)
        if noise:
            value += perturbation(by_patient[members[i]], noise)
        cells.append(
            Cell(
                labels=lab,
                value=value,
                ci_low=value - noise,
                ci_high=value + noise,
                std=std,
                parts=parts,
            )
        )
        released.append(members[i])
    return AggregateRelease(cells, released)
