"""Kaplan-Meier curves as released: step curves on the public grid, DP-aware bands, the median.

What a survival result holds (:func:`varde.estimates.survival_cells`): per group,
one cell per grid point ``"12m"``, ``"24m"``, ... with ``S`` and its 95% band
(sampling and DP noise, from the released counts), then a ``"median"`` cell
with the median survival in months and its interval (``None`` where a curve
never reaches 0.5). The network's cells are the same, computed from the pooled
counts (:mod:`varde.pooling`). So the plot draws exactly what was released:

* the curve starts at ``S = 1`` at month 0 and steps down at each grid point
  (``where="post"``: the estimate at the end of an interval holds until the
  next), the band shaded the same way;
* the median is a marker at ``S = 0.5`` with its interval as a horizontal
  whisker (``ErrorbarContainer`` labelled ``_median: <series>``), and the
  legend says it in numbers, or says "median not reached". An interval end
  beyond the horizon is drawn to the horizon and written ``>``;
* without ``group_by``: one axes, one curve per site and the network (black,
  thicker); with ``group_by``: one panel per site and the network, one curve
  per group in each.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from varde.release import Cell
from varde.results import QueryResult
from varde_client.plot_common import (
    GROUP_COLOURS,
    groups,
    panels,
    privacy_text,
    refusal_notes,
    series,
    titled,
)

MEDIAN = "median"
"""The label of each group's median cell on the time axis."""


def grid_months(result: QueryResult) -> list[int]:
    """The grid's months from the time axis labels (``"12m"`` -> 12), the median left out."""
    name, labels = result.axes[-1]
    if name != "time" or labels[-1:] != [MEDIAN]:
        raise ValueError(f"not a survival result: its last axis is {name!r} {labels[-1:]}")
    months = []
    for label in labels[:-1]:
        if not label.endswith("m") or not label[:-1].isdigit():
            raise ValueError(f"survival time label {label!r} is not '<months>m'")
        months.append(int(label[:-1]))
    return months


def _fmt_month(value: float | None, horizon: int) -> str:
    return f">{horizon}" if value is None else f"{value:.1f}"


def median_text(median: Cell, horizon: int) -> str:
    """``median 11.2 m (9.0-14.1)``, or ``median not reached`` (legend text)."""
    if median.value is None:
        return "median not reached"
    lo, hi = _fmt_month(median.ci_low, horizon), _fmt_month(median.ci_high, horizon)
    return f"median {median.value:.1f} m ({lo}\N{EN DASH}{hi})"


def draw_curve(
    ax: Axes, months: list[int], cells: list[Cell], *, name: str, colour: str, width: float = 1.5
) -> None:
    """One group's step curve, its shaded band and its median marker on ``ax``."""
    points, median = cells[:-1], cells[-1]
    if median.labels[-1:] != [MEDIAN] or len(points) != len(months):
        raise ValueError(f"survival cells of {name!r} do not follow the grid {months}")
    x = [0.0, *(float(m) for m in months)]
    y = [1.0, *(_unit(c.value) for c in points)]
    low = [1.0, *(_unit(c.ci_low if c.ci_low is not None else c.value) for c in points)]
    high = [1.0, *(_unit(c.ci_high if c.ci_high is not None else c.value) for c in points)]
    horizon = months[-1]
    label = f"{name}: {median_text(median, horizon)}"
    ax.step(x, y, where="post", color=colour, linewidth=width, label=label)
    ax.fill_between(x, low, high, step="post", color=colour, alpha=0.18, linewidth=0)
    if median.value is not None:
        lo = median.ci_low if median.ci_low is not None else 0.0
        hi = median.ci_high if median.ci_high is not None else float(horizon)
        bar = ax.errorbar(
            [median.value],
            [0.5],
            xerr=[[max(median.value - lo, 0.0)], [max(hi - median.value, 0.0)]],
            fmt="o",
            color=colour,
            markersize=5,
            capsize=3,
        )
        bar.set_label(f"_{MEDIAN}: {name}")


def _unit(value: float | None) -> float:
    """A survival probability as drawn: inside ``[0, 1]`` (released values already are)."""
    if value is None:
        raise ValueError("a survival point without a value")
    return min(max(value, 0.0), 1.0)


def _frame_axes(ax: Axes, horizon: int) -> None:
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, horizon)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("months since diagnosis")
    ax.set_ylabel("survival probability (95% band)")
    ax.legend(fontsize="small", loc="upper right")


def plot_survival(
    result: QueryResult,
    ax: Axes | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes | Figure:
    """Kaplan-Meier curves per site and for the network (per group with ``group_by``)."""
    months = grid_months(result)
    found = series(result, sites)
    n_groups = len(result.axes) - 1
    head = title or f"Kaplan\N{EN DASH}Meier survival ({privacy_text(result)})"
    notes = refusal_notes(result)
    if n_groups == 0:
        fig, (axes,) = panels(1, ax, width=6.4, height=4.4)
        for s in found:
            draw_curve(
                axes,
                months,
                s.cells,
                name=s.name,
                colour=s.colour,
                width=2.5 if s.is_network else 1.5,
            )
        _frame_axes(axes, months[-1])
        return titled(fig, [axes], head, notes)
    fig, axes_list = panels(len(found), ax, width=5.2, height=4.0)
    for a, s in zip(axes_list, found, strict=True):
        for g, (name, cells) in enumerate(groups(s.cells, n_groups)):
            colour = GROUP_COLOURS[g % len(GROUP_COLOURS)]
            draw_curve(a, months, cells, name=name, colour=colour, width=2.0)
        _frame_axes(a, months[-1])
    legend_title = " / ".join(name for name, _ in result.axes[:-1])
    for a in axes_list:
        legend = a.get_legend()
        if legend is not None:
            legend.set_title(legend_title)
    return titled(fig, axes_list, head, notes, [s.name for s in found])
