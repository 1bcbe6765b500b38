"""What every plot of a query result shares: its series, its panels, refusal notes, clipped bars.

A *series* is what one site released (status ``ok``) or the network row. Sites
that did not answer draw nothing, but every plot names them and why in its
title (``trondheim: policy_violation``): a missing bar must never look like a
zero. Everything reads the typed :class:`~varde.results.QueryResult`, not the
frames, so the plots follow the wire format and nothing else.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global state, nothing to close, the same code headless (Agg) and
in a notebook. Only the plot modules import matplotlib, and
:func:`varde_client.plots.plot` imports them on first use, so ``import
varde_client`` stays free of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from varde.release import Cell
from varde.results import QueryResult

NETWORK = "network"
"""The name of the network row's series (what ``sites=[...]`` selects it by)."""

NETWORK_COLOUR = "black"
SITE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
GROUP_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:olive")
SUPPRESSED = "suppressed"
"""The legend label of the marker drawn where an aggregate-mode cell was suppressed."""

PANEL_COLUMNS = 3


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg, whatever backend is active)."""
    buf = BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


class ShownFigure(Figure):
    """A figure that a notebook displays when a cell returns it, with no ``pyplot`` involved.

    IPython shows an object by its ``_repr_png_``; a plain ``Figure`` has none
    unless ``pyplot``'s inline backend registered a formatter for it, which a
    figure built without ``pyplot`` cannot count on.
    """

    def _repr_png_(self) -> bytes:
        return png(self)


class ShownAxes(Axes):
    """An axes a notebook displays (as its whole figure) when a cell returns it."""

    def _repr_png_(self) -> bytes:
        fig = self.get_figure(root=True)
        assert isinstance(fig, Figure)
        return png(fig)


@dataclass(frozen=True)
class Series:
    """One site's released cells (or the network's), with the colour it is drawn in."""

    name: str
    cells: list[Cell]
    colour: str

    @property
    def is_network(self) -> bool:
        """True for the pooled network row (drawn distinct from every site)."""
        return self.name == NETWORK


def series(result: QueryResult, sites: Sequence[str] | None = None) -> list[Series]:
    """The sites that released (``ok``) and then the network row, optionally only ``sites``.

    A site keeps its colour whichever others answered (its place in the result),
    so the same site looks the same in every plot of one query. Raises
    ``ValueError`` naming what was asked for when ``sites`` names no series, and
    naming every site's status when nothing at all was released.
    """
    out = [
        Series(s.site, list(s.cells), SITE_COLOURS[i % len(SITE_COLOURS)])
        for i, s in enumerate(result.sites)
        if s.status == "ok" and s.cells
    ]
    if result.network is not None and result.network.cells:
        out.append(Series(NETWORK, list(result.network.cells), NETWORK_COLOUR))
    if not out:
        said = ", ".join(f"{s.site}: {s.status}" for s in result.sites) or "no site"
        raise ValueError(f"nothing to plot: no site released a result ({said})")
    if sites is not None:
        unknown = sorted(set(sites) - {s.name for s in out})
        if unknown:
            have = ", ".join(s.name for s in out)
            raise ValueError(f"no released series named {unknown}; released: {have}")
        out = [s for s in out if s.name in set(sites)]
    return out


def refusal_notes(result: QueryResult) -> list[str]:
    """``site: status`` for every site that released nothing.

    Named whichever series a plot shows: the network row is the pool of the
    sites that answered, and who did not answer is part of reading it.
    """
    return [f"{s.site}: {s.status}" for s in result.sites if s.status != "ok"]


def privacy_text(result: QueryResult) -> str:
    """What each site spent, for a title: ``epsilon 0.5 per site`` or ``aggregate mode``."""
    if result.requested is None:
        return "aggregate mode"
    return f"{result.requested.measure} {result.requested.amount:g} per site"


def groups(cells: list[Cell], n_group_axes: int) -> list[tuple[str, list[Cell]]]:
    """Cells split by their first ``n_group_axes`` labels (the group_by cells), in order.

    The group's name joins its labels with `` / ``; ungrouped cells are one
    group named ``""``.
    """
    out: dict[str, list[Cell]] = {}
    for cell in cells:
        out.setdefault(" / ".join(cell.labels[:n_group_axes]), []).append(cell)
    return list(out.items())


def clipped(cell: Cell) -> tuple[float, float, float]:
    """A count's drawn height and whisker lengths below and above, never below zero.

    DP noise can make a released count (or its interval's low end) negative;
    the data keep the raw number, the drawing clips it at 0. A cell without a
    value (suppressed) is drawn as nothing: ``nan``.
    """
    if cell.status != "ok" or cell.value is None:
        return math.nan, 0.0, 0.0
    height = max(cell.value, 0.0)
    low = max(cell.ci_low if cell.ci_low is not None else cell.value, 0.0)
    high = max(cell.ci_high if cell.ci_high is not None else cell.value, 0.0)
    return height, max(height - low, 0.0), max(high - height, 0.0)


def panels(
    n: int, ax: Axes | None, *, width: float = 4.8, height: float = 3.6
) -> tuple[Figure, list[Axes]]:
    """``n`` axes: ``ax`` itself when given and ``n == 1``, else a new figure of ``n`` panels.

    An ``ax`` cannot hold several panels: a plot with one panel per site asks
    for ``sites=[...]`` naming one of them instead of drawing over each other.
    """
    if ax is not None:
        if n != 1:
            raise ValueError(
                f"this plot has {n} panels (one per site and the network); pass ax=None "
                "for a figure of all of them, or sites=[name] to draw one into ax"
            )
        fig = ax.get_figure()
        assert isinstance(fig, Figure)
        return fig, [ax]
    cols = min(n, PANEL_COLUMNS)
    rows = math.ceil(n / cols)
    fig = ShownFigure(figsize=(width * cols, height * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False, subplot_kw={"axes_class": ShownAxes})
    axes = [a for row in grid for a in row]
    for extra in axes[n:]:
        extra.remove()
    return fig, axes[:n]


def titled(
    fig: Figure, axes: list[Axes], title: str, notes: list[str], names: list[str] | None = None
) -> Axes | Figure:
    """Title the plot (with the refusal notes); return its one axes, or the figure of several.

    ``names`` are the panels' own titles (the site each shows). A single panel
    gets everything as its axes title, so an ``ax`` passed in is titled and
    the caller's figure is left alone; several panels get the figure's title.
    """
    text = title if not notes else f"{title}\nno answer from {', '.join(notes)}"
    if len(axes) == 1:
        head = f"{title}: {names[0]}" if names else title
        axes[0].set_title(head if not notes else f"{head}\nno answer from {', '.join(notes)}")
        return axes[0]
    for a, name in zip(axes, names or [], strict=False):
        a.set_title(name)
    fig.suptitle(text)
    return fig
