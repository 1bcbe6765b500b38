"""Shared shapes: exact per-cell aggregates, the statistic object, and the costed release plan.

Each ``nodes/statistics/<kind>.py`` module exposes one :class:`Statistic`: how
to compute its exact aggregates, how far one patient moves the released
vector(s) (its :class:`~nodes.mechanisms.Sensitivity`), which vectors are
noised, how the noisy vectors become released cells, and (for statistics
aggregate mode allows) the exact value of a cell. :mod:`nodes.statistics`
finds it by the query's kind; nothing else dispatches on the kind. How the
gateway pools the sites' cells is the public half of a statistic and lives
in :mod:`varde.pooling`, because the gateway may not import node code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from nodes.data import RegistryData
from nodes.mechanisms import Sensitivity, VectorPlan
from varde.budget import Budget
from varde.query import AccuracyTarget, Histogram, Query
from varde.query import Statistic as _QueryStatistic
from varde.release import Cell
from varde.schema import FIELDS_BY_NAME, FieldKind

StatisticSpec: TypeAlias = _QueryStatistic
"""A query's statistic (count, sum, ...): what a :class:`Statistic` object is handed."""


@dataclass(frozen=True)
class Exact:
    """Exact aggregates per public cell. Lives only inside the node.

    ``counts`` always; ``sums`` for sum (clamped values) and mean (clamped,
    centred values). ``labels[i]`` names cell ``i`` along the query's axes.
    """

    labels: list[list[str]]
    counts: np.ndarray
    sums: np.ndarray | None = None


@dataclass(frozen=True)
class Noise:
    """What a release's noise is, by released part (``count``, ``sum``), known before any draw."""

    scales: dict[str, float]
    std: dict[str, float]
    accuracy: dict[str, float]
    """95% half-width of the noise on each released number."""


def count_noise(plan: VectorPlan) -> Noise:
    """The noise of a release whose numbers are all counts (one part, ``count``)."""
    return Noise({"count": plan.scale}, {"count": plan.std}, {"count": plan.half_width})


def count_half_width(noise: Noise, _s: StatisticSpec, _t: AccuracyTarget) -> float:
    """An accuracy target on counts: the 95% half-width of the noise on each released count."""
    return noise.accuracy["count"]


@dataclass(frozen=True)
class Statistic:
    """One releasable statistic: everything the node needs to know about it, in one object.

    The callables receive the query's statistic spec (the member of
    :data:`varde.query.Statistic` whose ``kind`` is in :attr:`kinds`) and ``k``,
    the most rows one patient has.
    """

    kinds: tuple[str, ...]
    exact: Callable[[RegistryData, np.ndarray, Query], Exact]
    """Exact per-cell aggregates of the selected rows (never leave the node)."""
    sensitivity: Callable[[StatisticSpec, int], Sensitivity]
    """How far one patient moves the released vector(s) (:mod:`nodes.sensitivity`)."""
    vectors: Callable[[Exact, StatisticSpec, int], list[np.ndarray]]
    """The vector(s) OpenDP noises, one per part of the sensitivity."""
    cells: Callable[[Exact, StatisticSpec, list[np.ndarray], VectorPlan, int], list[Cell]]
    """Post-processing: the released cells from the noisy vectors (free of privacy cost)."""
    noise: Callable[[VectorPlan, StatisticSpec, int], Noise] = lambda plan, _s, _k: count_noise(
        plan
    )
    """The noise's scale, sd and 95% half-width per released part."""
    target_half_width: Callable[[Noise, StatisticSpec, AccuracyTarget], float] | None = None
    """What an accuracy target measures: the 95% half-width a plan's noise promises for it
    (:mod:`nodes.statistics.accuracy_first`); None where a target means nothing without data."""
    exact_value: Callable[[Exact, StatisticSpec, int], tuple[float, dict[str, float]]] | None = None
    """Aggregate mode: the exact value (and parts) of cell ``i``; None where only DP is allowed."""
    members: Callable[[RegistryData, np.ndarray, Query], list[np.ndarray]] | None = None
    """Aggregate mode: the distinct patients (dense indices) behind each cell, in cell order."""


@dataclass(frozen=True)
class Plan:
    """A costed release: ``cost`` is OpenDP's map of the built measurement."""

    cost: Budget
    mechanism: str
    noise: Noise
    _release: Callable[[], list[Cell]] = field(repr=False)

    @property
    def noise_scales(self) -> dict[str, float]:
        """Noise scale of each released part."""
        return self.noise.scales

    @property
    def noise_std(self) -> dict[str, float]:
        """Standard deviation of the noise on each released number, by part."""
        return self.noise.std

    @property
    def accuracy(self) -> dict[str, float]:
        """95% half-width of the noise on each released number, by part (known before release)."""
        return self.noise.accuracy

    def release(self) -> list[Cell]:
        """Draw the noise (OpenDP) and return the cells. Charge the ledger first."""
        return self._release()


def cell_labels(query: Query) -> list[list[str]]:
    """Cartesian product of the query's public axes, in row-major order."""
    axes = [labels for _, labels in query.axes()]
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _axis_codes(data: RegistryData, name: str, labels: list[str], query: Query) -> np.ndarray:
    """Per-row position along one axis, -1 where the row falls in no declared label."""
    stat = query.statistic
    levels = data.study_levels.get(name)
    if levels is not None:  # a categorical study field: its column's levels onto the labels
        position = {c: i for i, c in enumerate(labels)}
        table = np.array([position.get(c, -1) for c in levels] + [-1], dtype=np.int64)
        return np.asarray(table[data.column(name)], dtype=np.int64)
    spec = FIELDS_BY_NAME.get(name)
    if spec is not None and spec.kind is FieldKind.CATEGORICAL:
        position = {c: i for i, c in enumerate(labels)}
        table = np.array([position.get(c, -1) for c in spec.categories] + [-1], dtype=np.int64)
        return np.asarray(table[data.column(name)], dtype=np.int64)
    assert isinstance(stat, Histogram) and stat.bins is not None
    values = data.column(name)
    edges = np.asarray(stat.bins, dtype=np.float64)
    pos = np.searchsorted(edges, values, side="right") - 1
    outside = (values < edges[0]) | (values >= edges[-1]) | np.isnan(values)
    return np.where(outside, -1, pos).astype(np.int64)


def cell_index(data: RegistryData, rows: np.ndarray, query: Query) -> tuple[np.ndarray, int]:
    """Flat cell index of each selected row (rows outside every cell dropped), and cell count."""
    axes = query.axes()
    n_cells = 1
    for _, labels in axes:
        n_cells *= len(labels)
    if not axes:
        return np.zeros(int(rows.sum()), dtype=np.int64), 1
    flat = np.zeros(int(rows.sum()), dtype=np.int64)
    valid = np.ones(flat.shape[0], dtype=bool)
    for name, labels in axes:
        codes = _axis_codes(data, name, labels, query)[rows]
        valid &= codes >= 0
        flat = flat * len(labels) + codes
    return np.where(valid, flat, -1), n_cells


def members_by_cell(cell: np.ndarray, patients: np.ndarray, n_cells: int) -> list[np.ndarray]:
    """The distinct ``patients`` of each cell (``cell[i]`` is row ``i``'s cell, -1 for none).

    >>> [m.tolist() for m in members_by_cell(np.array([0, 1, 0, -1]), np.array([5, 6, 5, 7]), 3)]
    [[5], [6], []]
    """
    keep = cell >= 0
    pairs = np.unique(np.stack([cell[keep], patients[keep].astype(np.int64)]), axis=1)
    bounds = np.searchsorted(pairs[0], np.arange(n_cells + 1))
    return [pairs[1, bounds[i] : bounds[i + 1]] for i in range(n_cells)]


def row_members(data: RegistryData, rows: np.ndarray, query: Query) -> list[np.ndarray]:
    """The distinct patients behind each cell of a count-like release (rows in their cells)."""
    idx, n_cells = cell_index(data, rows, query)
    return members_by_cell(idx, data.patients[rows], n_cells)
