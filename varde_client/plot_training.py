"""A trained model's DP evaluation: each metric per site and for the network, with 95% whiskers.

The metrics (logistic ``auc``, ``accuracy``, ``sensitivity``, ``specificity``;
Cox ``concordance``) are post-processing of each site's DP counts on its
held-out patients (:class:`varde.training.EvaluationMetrics`); each carries the
standard error its DP noise adds, drawn as ``±1.96`` of it and clipped to
``[0, 1]`` like the metric. The counts among the values (``n``, ``positives``,
``events``) are not metrics: they go into the legend. Sites that refused to
evaluate are named in the title with their reason.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from varde.estimates import Z95
from varde.training import EvaluationMetrics, TrainingMetrics
from varde_client.plot_common import (
    NETWORK,
    NETWORK_COLOUR,
    SITE_COLOURS,
    panels,
    titled,
)

COUNTS = ("n", "positives", "events")
"""Values of an evaluation that are (noisy) counts, not metrics on ``[0, 1]``."""


def _legend(name: str, m: EvaluationMetrics) -> str:
    said = ", ".join(f"{k} \N{ALMOST EQUAL TO} {m.values[k]:.0f}" for k in COUNTS if k in m.values)
    return f"{name} ({said})" if said else name


def _short(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "\N{HORIZONTAL ELLIPSIS}"


def plot_training_metrics(
    metrics: TrainingMetrics, ax: Axes | None = None, *, title: str | None = None
) -> Axes:
    """Each metric along the vertical axis, one marker with its 95% whisker per site and network."""
    scopes = sorted(metrics.sites.items())
    if metrics.network is not None:
        scopes.append((NETWORK, metrics.network))
    if not scopes:
        said = ", ".join(f"{s}: {why}" for s, why in sorted(metrics.refusals.items()))
        raise ValueError(f"nothing to plot: no site evaluated the model ({said or 'no site'})")
    names = [k for k in scopes[0][1].values if k not in COUNTS]
    fig, (axes,) = panels(1, ax, width=6.0, height=1.0 + 0.8 * max(len(names), 1))
    step = 0.8 / len(scopes)
    for i, (scope, m) in enumerate(scopes):
        colour = NETWORK_COLOUR if scope == NETWORK else SITE_COLOURS[i % len(SITE_COLOURS)]
        pos = np.arange(len(names)) + (i - (len(scopes) - 1) / 2) * step
        value = np.array([min(max(m.values.get(k, np.nan), 0.0), 1.0) for k in names])
        half = np.array([Z95 * m.std_errors.get(k, 0.0) for k in names])
        err = np.array([value - np.clip(value - half, 0, 1), np.clip(value + half, 0, 1) - value])
        axes.errorbar(
            value, pos, xerr=err, fmt="o", color=colour, capsize=3, label=_legend(scope, m)
        )
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("value on held-out patients (95% interval from the DP noise)")
    axes.set_ylabel("metric")
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    notes = [f"{site}: {_short(why)}" for site, why in sorted(metrics.refusals.items())]
    out = titled(fig, [axes], title or "model evaluation (DP)", notes)
    assert isinstance(out, Axes)
    return out
