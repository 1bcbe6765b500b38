"""Plots of a query's result with matplotlib, chosen by the statistic it answers.

>>> from varde_client.plots import PLOTTABLE
>>> PLOTTABLE
('count', 'crosstab', 'funnel', 'histogram', 'survival')

:func:`plot` is the one entry point (``QueryResponse.plot()`` calls it): a
Kaplan-Meier curve for ``survival``, bars for ``count``, ``funnel`` and
``histogram``, heat maps for ``crosstab``, each number with its released 95%
interval. Every plot reads the typed result (``res.result``), draws the sites
that released and the network row (distinct: black), names the sites that did
not answer and why in its title, and never draws a count below zero. The
drawing modules are :mod:`varde_client.plot_counts`,
:mod:`varde_client.plot_survival` and :mod:`varde_client.plot_crosstab`.

matplotlib is imported on the first call, not with this module, so ``import
varde_client`` (and this module) stays free of it; figures are
:class:`matplotlib.figure.Figure` objects, never ``pyplot``'s, so nothing
global is touched and they need no closing (save one with ``fig.savefig``; in
a notebook, show an axes' figure with ``ax.figure``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from varde.results import QueryResult
from varde.training import TrainingMetrics, TrainingStatus

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOTTABLE = ("count", "crosstab", "funnel", "histogram", "survival")
"""The statistics :func:`plot` draws."""


def _drawers() -> dict[str, Callable[..., Axes | Figure]]:
    """Each plottable statistic's drawing function (imports matplotlib: called on first plot)."""
    from varde_client.plot_counts import plot_count, plot_funnel, plot_histogram
    from varde_client.plot_crosstab import plot_crosstab
    from varde_client.plot_survival import plot_survival

    return {
        "count": plot_count,
        "crosstab": plot_crosstab,
        "funnel": plot_funnel,
        "histogram": plot_histogram,
        "survival": plot_survival,
    }


class NoPlot(ValueError):
    """The result's statistic has no plot (sum, mean, quantile): its frame is the view."""


class HasResult(Protocol):
    """What :func:`plot` reads of a :class:`~varde_client.frames.QueryResponse`: its typed result.

    A protocol, not the class: ``frames`` imports this module to offer
    ``QueryResponse.plot()``, and this module importing ``frames`` back would
    be an import cycle.
    """

    @property
    def result(self) -> QueryResult:
        """The gateway's answer, typed."""
        ...


def plot(res: HasResult | QueryResult, ax: Axes | None = None, **kw: Any) -> Axes | Figure:
    """Draw ``res`` (a ``QueryResponse`` or its ``QueryResult``) as its statistic is best read.

    Returns the axes drawn on when the plot is one panel (``ax`` if given), and
    the figure when it has one panel per site and the network (funnels,
    histograms, heat maps, survival with ``group_by``); ``ax`` takes one panel
    only, so pass ``sites=["network"]`` (or a site's name) with it there.
    Keywords every plot takes: ``sites`` (which series to draw: site names and
    ``"network"``; the sites that did not answer are still named) and
    ``title``; ``plot_crosstab`` also takes ``cmap``.

    Raises :class:`NoPlot` for a statistic without a plot and ``ValueError``
    when no site released anything (each site's status named).
    """
    result = res if isinstance(res, QueryResult) else res.result
    if result.statistic not in PLOTTABLE:
        raise NoPlot(
            f"no plot for statistic {result.statistic!r} (plots exist for "
            f"{', '.join(PLOTTABLE)}); use res.frame() for its numbers"
        )
    return _drawers()[result.statistic](result, ax, **kw)


class HasStatus(Protocol):
    """What :func:`plot_training` reads of a :class:`~varde_client.training.TrainingResult`."""

    @property
    def status(self) -> TrainingStatus:
        """The job's last status, typed."""
        ...


def plot_training(res: HasStatus | TrainingMetrics, ax: Axes | None = None, **kw: Any) -> Axes:
    """Draw a training job's DP evaluation: each metric per site and network, 95% whiskers.

    ``res`` is a ``TrainingResult`` (``client.train(..., wait=True)``) or its
    ``status.metrics``. Raises ``ValueError`` when the job has not evaluated
    (yet), naming its state. Takes ``title``.
    """
    from varde_client.plot_training import plot_training_metrics

    if isinstance(res, TrainingMetrics):
        return plot_training_metrics(res, ax, **kw)
    if res.status.metrics is None:
        raise ValueError(
            f"training job {res.status.id} has no evaluation to plot (state {res.status.state})"
        )
    return plot_training_metrics(res.status.metrics, ax, **kw)
