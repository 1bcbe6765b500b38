"""Shared shapes: exact per-cell aggregates and the costed release plan."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nodes.data import RegistryData
from varde.query import Histogram, Query
from varde.release import Cell
from varde.schema import FIELDS_BY_NAME, FieldKind


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
class Plan:
    """A costed release: ``epsilon`` is OpenDP's map of the built measurement."""

    epsilon: float
    mechanism: str
    noise_scales: dict[str, float]
    _release: Callable[[], list[Cell]] = field(repr=False)
    noise_std: dict[str, float] = field(default_factory=dict)
    """Standard deviation of the noise on each released number, by part."""
    accuracy: dict[str, float] = field(default_factory=dict)
    """95% half-width of the noise on each released number, by part (known before release)."""

    def release(self) -> list[Cell]:
        """Draw the noise (OpenDP) and return the cells. Charge the ledger first."""
        return self._release()


def cell_labels(query: Query) -> list[list[str]]:
    """Cartesian product of the query's public axes, in row-major order."""
    axes = [labels for _, labels in query.axes()]
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _axis_codes(data: RegistryData, name: str, labels: list[str], query: Query) -> np.ndarray:
    """Per-row position along one axis, -1 where the row falls in no declared label."""
    spec = FIELDS_BY_NAME[name]
    stat = query.statistic
    if spec.kind is FieldKind.CATEGORICAL:
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
