"""Bar charts of released counts with their 95% whiskers: feasibility counts, funnels, histograms.

* :func:`plot_count`: one bar per site and the network (drawn distinct, black
  and hatched); with ``group_by``, the groups along the axis and one bar per
  site and the network in each.
* :func:`plot_funnel`: one panel per site and the network, the steps down the
  vertical axis in their order, one bar per group in each step.
* :func:`plot_histogram`: one panel per site and the network, the bins or
  categories along the axis, one bar per group in each.

Every bar carries its interval as a whisker (``ErrorbarContainer``), clipped at
zero like the bar (:func:`~varde_client.plot_common.clipped`). An aggregate-mode
cell that was suppressed gets no bar but an ``x`` at zero, labelled
``suppressed`` in the legend: suppressed is not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from varde.release import Cell
from varde.results import QueryResult
from varde_client.plot_common import (
    GROUP_COLOURS,
    NETWORK_COLOUR,
    SUPPRESSED,
    Series,
    clipped,
    groups,
    panels,
    privacy_text,
    refusal_notes,
    series,
    titled,
)


def count_label(result: QueryResult) -> str:
    """The value axis of a count: what the query counted, with its interval."""
    return f"{result.unit} (95% interval)"


@dataclass(frozen=True)
class Bars:
    """One bar series: a label for the legend and one cell per category, in category order."""

    label: str
    cells: Sequence[Cell | None]
    colour: str
    hatch: str | None = None


def draw_bars(
    ax: Axes, categories: list[str], rows: list[Bars], *, horizontal: bool, slots: int | None = None
) -> None:
    """Side-by-side bars of ``rows`` at each category, each with its clipped 95% whiskers.

    A ``None`` cell is a category the series has nothing for (no bar, no mark);
    ``slots`` is how many bars share a category (default: one per row).
    """
    n = slots or max(len(rows), 1)
    width = 0.8 / n
    centre = np.arange(len(categories), dtype=np.float64)
    marked = False
    for i, row in enumerate(rows):
        offset = 0.0 if slots == 1 else (i - (n - 1) / 2) * width
        shown = [(centre[j] + offset, c) for j, c in enumerate(row.cells) if c is not None]
        ok = [(p, clipped(c)) for p, c in shown if c.status == "ok" and c.value is not None]
        gone = [p for p, c in shown if c.status != "ok" or c.value is None]
        if ok:
            pos = np.array([p for p, _ in ok])
            size = np.array([d[0] for _, d in ok])
            err = np.array([[d[1] for _, d in ok], [d[2] for _, d in ok]])
            style: dict[str, Any] = {"color": row.colour, "label": row.label}
            if row.hatch:  # drawn in the edge colour: white lines show on any fill
                style.update(hatch=row.hatch, edgecolor="white", linewidth=0)
            if horizontal:
                ax.barh(pos, size, height=width, **style)
                ax.errorbar(size, pos, xerr=err, fmt="none", ecolor="0.2", capsize=3)
            else:
                ax.bar(pos, size, width=width, **style)
                ax.errorbar(pos, size, yerr=err, fmt="none", ecolor="0.2", capsize=3)
        if gone:
            zeros = np.zeros(len(gone))
            xy = (zeros, gone) if horizontal else (gone, zeros)
            label = SUPPRESSED if not marked else f"_{SUPPRESSED}"
            ax.scatter(*xy, marker="x", color="0.3", zorder=3, clip_on=False, label=label)
            marked = True
    if horizontal:
        ax.set_yticks(centre, categories)
        ax.set_xlim(left=0)
        ax.invert_yaxis()  # the first step on top, as a funnel reads
    else:
        ax.set_xticks(centre, categories)
        ax.set_ylim(bottom=0)
        if sum(len(c) for c in categories) > 60:
            ax.tick_params(axis="x", labelrotation=45)


def _count_title(result: QueryResult, what: str) -> str:
    return f"{what} ({privacy_text(result)})"


def plot_count(
    result: QueryResult,
    ax: Axes | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Feasibility count per site and for the network, with 95% whiskers (one axes)."""
    found = series(result, sites)
    fig, (axes,) = panels(1, ax, width=max(4.8, 1.2 * len(found) + 2))
    n_groups = len(result.axes)
    if n_groups == 0:
        rows: list[Bars] = []
        for i, s in enumerate(found):
            cells: list[Cell | None] = [None] * len(found)
            cells[i] = s.cells[0]
            rows.append(_site_bars(s, cells))
        draw_bars(axes, [s.name for s in found], rows, horizontal=False, slots=1)
        axes.set_xlabel("site")
    else:
        names = [name for name, _ in groups(found[0].cells, n_groups)]
        rows = [_site_bars(s, [cs[0] for _, cs in groups(s.cells, n_groups)]) for s in found]
        draw_bars(axes, names, rows, horizontal=False)
        axes.set_xlabel(" / ".join(name for name, _ in result.axes))
        axes.legend(fontsize="small")
    axes.set_ylabel(count_label(result))
    out = titled(fig, [axes], title or _count_title(result, "count"), refusal_notes(result))
    assert isinstance(out, Axes)
    return out


def _colour(s: Series) -> str:
    return NETWORK_COLOUR if s.is_network else s.colour


def _site_bars(s: Series, cells: list[Cell | None]) -> Bars:
    """A site's bars in its colour; the network's black and hatched, distinct from every site."""
    return Bars(
        s.name, cells, NETWORK_COLOUR if s.is_network else s.colour, "//" if s.is_network else None
    )


def _panelled(
    result: QueryResult,
    ax: Axes | None,
    sites: Sequence[str] | None,
    title: str,
    *,
    horizontal: bool,
) -> Axes | Figure:
    """One panel per series; the statistic's own axis along the bars, one bar per group."""
    found = series(result, sites)
    fig, axes = panels(len(found), ax, height=3.6 if not horizontal else 3.0)
    n_groups = len(result.axes) - 1
    own_name, categories = result.axes[-1]
    for a, s in zip(axes, found, strict=True):
        split = groups(s.cells, n_groups)
        rows = [
            Bars(
                name or s.name,
                list(cells),
                GROUP_COLOURS[g % len(GROUP_COLOURS)] if n_groups else _colour(s),
                "//" if s.is_network else None,
            )
            for g, (name, cells) in enumerate(split)
        ]
        draw_bars(a, categories, rows, horizontal=horizontal)
        value_axis, category_axis = (
            (a.set_xlabel, a.set_ylabel) if horizontal else (a.set_ylabel, a.set_xlabel)
        )
        value_axis(count_label(result))
        category_axis(own_name)
        if n_groups or any(c.status != "ok" for c in s.cells):
            a.legend(fontsize="small", title=" / ".join(n for n, _ in result.axes[:-1]) or None)
    names = [s.name for s in found]
    return titled(fig, axes, title, refusal_notes(result), names)


def plot_funnel(
    result: QueryResult,
    ax: Axes | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes | Figure:
    """Attrition funnel per site and for the network: steps top to bottom, 95% whiskers."""
    head = title or _count_title(result, "attrition")
    return _panelled(result, ax, sites, head, horizontal=True)


def plot_histogram(
    result: QueryResult,
    ax: Axes | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes | Figure:
    """Histogram per site and for the network: bins or categories along the axis, 95% whiskers."""
    field = result.axes[-1][0]
    head = title or _count_title(result, f"histogram of {field}")
    return _panelled(result, ax, sites, head, horizontal=False)
