"""Crosstab heat maps: a panel per site and for the network, cells annotated ``value ± half-width``.

The last axis of the result runs across the columns; every axis before it
(the ``group_by`` keys and the other crosstab fields) makes the rows, their
labels joined with `` / ``. Colour is the count clipped at zero (noise can make
a released count negative; the data keep the raw number) on each panel's own
scale, with its colour bar: a site and the network differ by an order of
magnitude, so a shared scale would leave every site panel blank. A suppressed
cell (aggregate mode) is hatched grey and written ``suppressed``, never
coloured as a zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from varde.release import Cell
from varde.results import QueryResult
from varde_client.plot_common import (
    SUPPRESSED,
    clipped,
    panels,
    privacy_text,
    refusal_notes,
    series,
    titled,
)

MAX_ANNOTATED = 300
"""Cells per panel up to which each is written out; beyond it the text would be unreadable."""


def _grid(cells: list[Cell], rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Drawn values (nan where suppressed), 95% half-widths and each cell's text."""
    values = np.full(rows * cols, np.nan)
    half = np.zeros(rows * cols)
    texts: list[str] = []
    for i, cell in enumerate(cells):
        height, below, above = clipped(cell)
        if np.isnan(height):
            texts.append(SUPPRESSED)
            continue
        values[i] = height
        if cell.ci_low is not None and cell.ci_high is not None:
            half[i] = (cell.ci_high - cell.ci_low) / 2.0
        texts.append(f"{height:.0f}\n\N{PLUS-MINUS SIGN}{half[i]:.0f}")
    return values.reshape(rows, cols), half.reshape(rows, cols), texts


def draw_heatmap(
    ax: Axes,
    cells: list[Cell],
    row_labels: list[str],
    col_labels: list[str],
    cmap: Colormap,
    unit: str = "tumours",
) -> None:
    """One panel: coloured counts, suppressed cells hatched, text where there is room."""
    rows, cols = len(row_labels), len(col_labels)
    if len(cells) != rows * cols:
        raise ValueError(f"{len(cells)} cells do not fill a {rows} x {cols} table")
    values, _half, texts = _grid(cells, rows, cols)
    shown = np.ma.masked_invalid(values)
    top = float(shown.max()) if shown.count() else 1.0
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=max(top, 1.0), aspect="auto")
    ax.figure.colorbar(image, ax=ax, label=unit, shrink=0.9)
    for r, c in zip(*np.nonzero(np.isnan(values)), strict=True):
        ax.add_patch(
            Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="0.85", hatch="xx", edgecolor="0.6", lw=0)
        )

    def _ink(value: float) -> str:
        """Black on light cells (and on suppressed grey), white on dark ones."""
        if np.isnan(value):
            return "black"
        red, green, blue, _ = cmap(value / max(top, 1.0))
        return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"

    if rows * cols <= MAX_ANNOTATED:
        size = "small" if rows * cols <= 60 else "x-small"
        for i, text in enumerate(texts):
            r, c = divmod(i, cols)
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=_ink(values[r, c]))
    ax.set_xticks(range(cols), col_labels)
    ax.set_yticks(range(rows), row_labels)
    if sum(len(c) for c in col_labels) > 40:
        ax.tick_params(axis="x", labelrotation=45)


def _row_labels(result: QueryResult) -> list[str]:
    """Every combination of the axes before the last, joined with `` / `` (row-major order)."""
    combos: list[list[str]] = [[]]
    for _, labels in result.axes[:-1]:
        combos = [[*c, label] for c in combos for label in labels]
    return [" / ".join(c) for c in combos]


def plot_crosstab(
    result: QueryResult,
    ax: Axes | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "viridis",
) -> Axes | Figure:
    """Heat map of a crosstab per site and for the network, cells annotated with value ± 95%."""
    import matplotlib

    if len(result.axes) < 2:
        raise ValueError(f"a heat map needs two axes; this result has {len(result.axes)}")
    found = series(result, sites)
    row_labels = _row_labels(result)
    col_name, col_labels = result.axes[-1]
    colours = matplotlib.colormaps[cmap]
    width = max(4.8, 0.9 * len(col_labels) + 2.5)
    height = max(3.2, 0.45 * len(row_labels) + 1.5)
    fig, axes = panels(len(found), ax, width=width, height=height)
    for a, s in zip(axes, found, strict=True):
        draw_heatmap(a, s.cells, row_labels, col_labels, colours, result.unit)
        a.set_xlabel(col_name)
        a.set_ylabel(" / ".join(name for name, _ in result.axes[:-1]))
    head = title or f"crosstab, {result.unit} ({privacy_text(result)})"
    return titled(fig, axes, head, refusal_notes(result), [s.name for s in found])
