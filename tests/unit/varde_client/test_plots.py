"""Plots of real releases: synthetic registries, the node's statistics, OpenDP, the gateway's pool.

Each result is what the gateway would return for two sites that released (oslo,
bergen) and one that refused (trondheim: policy_violation): the node's own
``exact -> plan -> release`` path (or its aggregate-mode release), the gateway's
``combine`` for the network row, and the SDK's :class:`QueryResponse` parsing
the JSON. Every plot is rendered to PNG (Agg) and inspected through the artists
it made: one series per site (and group), the network distinct, whiskers and
bands present, the median marked, axes labelled, no count drawn below zero.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from gateway.combine import combine
from nodes.cohort import evaluate
from nodes.data import RegistryData, prepare
from nodes.statistics import exact, plan
from nodes.statistics.suppression import release_aggregate
from nodes.synth import generate_registry
from varde.budget import PureDP
from varde.query import parse_query
from varde.release import Cell, SiteRelease
from varde.results import QueryResult
from varde.training import EvaluationMetrics, TrainingMetrics, TrainingStatus
from varde.training_metrics import count_noise_variance, metric_std_errors, pooled_metrics
from varde_client.frames import QueryResponse
from varde_client.plots import PLOTTABLE, NoPlot, plot, plot_training
from varde_client.training import TrainingResult

MAX_ROWS = 3
RELEASED = ("oslo", "bergen")
REFUSED = "trondheim"
LUNG: dict[str, Any] = {"op": "startswith", "field": "topography", "prefix": "C34"}
STAGE_IV_LUNG: dict[str, Any] = {
    "op": "and",
    "args": [LUNG, {"op": "eq", "field": "stage", "value": "IV"}],
}
EGFR = ["positive", "negative", "not_tested"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def registries() -> dict[str, RegistryData]:
    return {
        site: prepare(
            generate_registry(site, 6000, seed=11), site=site, max_rows_per_patient=MAX_ROWS
        )
        for site in RELEASED
    }


def answer(
    registries: dict[str, RegistryData], spec: dict[str, Any], *, min_cell: int = 10
) -> QueryResponse:
    """The gateway's answer to ``spec``: two real releases, one refusal, the pooled network row."""
    body = {"project": "nsclc-feasibility", "privacy": {"mode": "dp", "epsilon": 1.0}, **spec}
    query = parse_query(body)
    releases = []
    for site, data in registries.items():
        rows = evaluate(data, query.cohort)
        ex = exact(data, rows, query)
        common: dict[str, Any] = {
            "query_id": "q1",
            "site": site,
            "status": "ok",
            "project": query.project,
            "statistic": query.statistic.kind,
            "mode": query.privacy.mode,
            "axes": query.axes(),
        }
        if query.budget is None:
            got = release_aggregate(data, rows, ex, query, min_cell=min_cell, spread=2, salt=1)
            releases.append(SiteRelease(**common, cells=got.cells, mechanism="cell_key"))
        else:
            costed = plan(ex, query, query.budget, max_rows=MAX_ROWS)
            releases.append(
                SiteRelease(
                    **common,
                    cells=costed.release(),
                    charged=costed.cost,
                    mechanism=costed.mechanism,
                    noise_std=costed.noise_std,
                    accuracy=costed.accuracy,
                )
            )
    refused = SiteRelease(
        query_id="q1",
        site=REFUSED,
        status="policy_violation",
        message=f"site {REFUSED!r} does not expose field(s) egfr",
    )
    result = QueryResult(
        query_id="q1",
        project=query.project,
        statistic=query.statistic.kind,
        mode=query.privacy.mode,
        requested=query.budget,
        axes=query.axes(),
        unit=query.unit,
        sites=[*releases, refused],
        network=combine(query, releases),
        budget_remaining={r.site: r.budget_remaining for r in [*releases, refused]},
    )
    return QueryResponse(result.model_dump(mode="json"))


def png(drawn: Axes | Figure) -> bytes:
    """Render as a script would (``savefig``) and as a notebook would (``_repr_png_``)."""
    fig = drawn if isinstance(drawn, Figure) else drawn.get_figure()
    assert isinstance(fig, Figure)
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    data = buf.getvalue()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000, len(data)  # something was drawn, not an empty canvas
    shown = drawn._repr_png_()  # type: ignore[union-attr]
    assert shown[:8] == PNG_MAGIC and len(shown) > 5000
    return data


def titles(drawn: Axes | Figure) -> str:
    if isinstance(drawn, Axes):
        return drawn.get_title()
    return drawn.get_suptitle()


def label(artist: Any) -> str:
    return str(artist.get_label())


def curves(ax: Axes) -> list[Line2D]:
    """The labelled lines (one per survival curve); reference lines are ``_``-labelled."""
    return [line for line in ax.get_lines() if not label(line).startswith("_")]


def bars(ax: Axes) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def whiskers(ax: Axes) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def assert_nothing_below_zero(ax: Axes, *, horizontal: bool = False) -> None:
    """Bars start at 0 and grow upwards; every whisker lies at or above 0 on the count axis."""
    for bar in bars(ax):
        for patch in bar.patches:
            if horizontal:
                start, size = patch.get_x(), patch.get_width()
            else:
                start, size = patch.get_y(), patch.get_height()
            assert start == 0.0 and size >= 0.0
    for whisker in whiskers(ax):
        for lines in whisker.lines[2]:
            assert isinstance(lines, LineCollection)
            for seg in lines.get_segments():
                values = seg[:, 0] if horizontal else seg[:, 1]
                assert (values >= 0).all(), seg


def assert_refusal_named(drawn: Axes | Figure) -> None:
    assert f"{REFUSED}: policy_violation" in titles(drawn)


def test_count_with_group_by_has_one_bar_series_per_site_and_the_network(
    registries: dict[str, RegistryData],
) -> None:
    res = answer(
        registries, {"cohort": STAGE_IV_LUNG, "statistic": {"kind": "count"}, "group_by": ["egfr"]}
    )
    ax = plot(res)
    assert isinstance(ax, Axes)
    png(ax)
    containers = bars(ax)
    assert [c.get_label() for c in containers] == [*RELEASED, "network"]
    assert all(len(c.patches) == len(EGFR) for c in containers)
    assert len(whiskers(ax)) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == EGFR
    network = containers[-1].patches[0]
    assert network.get_hatch() == "//" and network.get_facecolor()[:3] == (0.0, 0.0, 0.0)
    site_colours = {c.patches[0].get_facecolor() for c in containers[:-1]}
    assert len(site_colours) == 2
    # the network bar is the sum of the sites' bars (what was released, clipped at 0)
    frame = res.frame()
    for i, group in enumerate(EGFR):
        drawn = containers[-1].patches[i].get_height()
        net = frame[(frame.site == "network") & (frame.egfr == group)].value.item()
        assert drawn == pytest.approx(max(net, 0.0))
    assert ax.get_xlabel() == "egfr" and ax.get_ylabel()
    assert_refusal_named(ax)
    assert_nothing_below_zero(ax)


def test_count_without_groups_is_one_bar_per_site_then_the_network(
    registries: dict[str, RegistryData],
) -> None:
    res = answer(registries, {"cohort": STAGE_IV_LUNG, "statistic": {"kind": "count"}})
    ax = plot(res)
    assert isinstance(ax, Axes)
    png(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == [*RELEASED, "network"]
    assert [len(c.patches) for c in bars(ax)] == [1, 1, 1]
    assert len(whiskers(ax)) == 3
    assert_refusal_named(ax)
    assert_nothing_below_zero(ax)


def test_a_negative_noisy_count_is_drawn_at_zero_and_kept_raw_in_the_data(
    registries: dict[str, RegistryData],
) -> None:
    real = answer(registries, {"cohort": STAGE_IV_LUNG, "statistic": {"kind": "count"}})
    first = real.result.sites[0]
    negative = Cell(value=-3.0, ci_low=-10.0, ci_high=4.0, std=3.5)
    result = real.result.model_copy(
        update={"sites": [first.model_copy(update={"cells": [negative]}), *real.result.sites[1:]]}
    )
    res = QueryResponse(result.model_dump(mode="json"))
    ax = plot(res)
    assert isinstance(ax, Axes)
    patch = bars(ax)[0].patches[0]
    assert patch.get_height() == 0.0
    (segment,) = whiskers(ax)[0].lines[2][0].get_segments()
    assert sorted(segment[:, 1].tolist()) == [0.0, 4.0]
    assert res.result.sites[0].cells[0].value == -3.0  # the data keep the released number


def test_funnel_has_a_panel_per_site_and_the_network_with_steps_top_down(
    registries: dict[str, RegistryData],
) -> None:
    steps = [
        {"label": "lung", "criterion": LUNG},
        {"label": "stage IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
        {"label": "EGFR+", "criterion": {"op": "eq", "field": "egfr", "value": "positive"}},
    ]
    res = answer(registries, {"statistic": {"kind": "funnel", "steps": steps}})
    fig = plot(res)
    assert isinstance(fig, Figure)
    png(fig)
    assert [a.get_title() for a in fig.axes] == [*RELEASED, "network"]
    for ax in fig.axes:
        (container,) = bars(ax)
        assert len(container.patches) == len(steps)
        assert len(whiskers(ax)) == 1
        assert [t.get_text() for t in ax.get_yticklabels()] == ["lung", "stage IV", "EGFR+"]
        assert ax.yaxis_inverted()  # the first step on top
        assert ax.get_xlabel() and ax.get_ylabel() == "step"
        assert_nothing_below_zero(ax, horizontal=True)
    assert bars(fig.axes[-1])[0].patches[0].get_hatch() == "//"
    assert_refusal_named(fig)


def test_histogram_by_sex_has_one_series_per_group_in_each_panel(
    registries: dict[str, RegistryData],
) -> None:
    bins = [0, 40, 50, 60, 70, 80, 120]
    spec = {
        "cohort": LUNG,
        "statistic": {"kind": "histogram", "field": "age_at_diagnosis", "bins": bins},
        "group_by": ["sex"],
    }
    fig = plot(answer(registries, spec))
    assert isinstance(fig, Figure)
    png(fig)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert [c.get_label() for c in bars(ax)] == ["female", "male"]
        assert all(len(c.patches) == len(bins) - 1 for c in bars(ax))
        assert len(whiskers(ax)) == 2
        assert ax.get_xlabel() == "age_at_diagnosis" and ax.get_ylabel()
        assert ax.get_legend() is not None
        assert_nothing_below_zero(ax)
    assert_refusal_named(fig)


def test_crosstab_heat_map_annotates_every_cell_with_value_and_interval(
    registries: dict[str, RegistryData],
) -> None:
    spec = {"cohort": LUNG, "statistic": {"kind": "crosstab", "fields": ["stage", "egfr"]}}
    fig = plot(answer(registries, spec))
    assert isinstance(fig, Figure)
    png(fig)
    panels = [a for a in fig.axes if a.get_title()]  # colour bars are axes too, untitled
    assert [a.get_title() for a in panels] == [*RELEASED, "network"]
    for ax in panels:
        (image,) = [i for i in ax.get_images() if isinstance(i, AxesImage)]
        shown = np.ma.masked_invalid(np.asarray(image.get_array(), dtype=float))
        assert shown.shape == (6, 3) and float(shown.min()) >= 0.0
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 18 and all("\N{PLUS-MINUS SIGN}" in t for t in texts)
        assert ax.get_xlabel() == "egfr" and ax.get_ylabel() == "stage"
    assert_refusal_named(fig)


def test_aggregate_crosstab_shows_suppressed_cells_as_suppressed(
    registries: dict[str, RegistryData],
) -> None:
    spec = {
        "cohort": LUNG,
        "statistic": {"kind": "crosstab", "fields": ["stage", "egfr"]},
        "privacy": {"mode": "aggregate"},
    }
    res = answer(registries, spec, min_cell=15)
    suppressed = {
        s.site: sum(c.status == "suppressed" for c in s.cells) for s in res.result.sites[:2]
    }
    assert all(n > 0 for n in suppressed.values()), suppressed  # stage 0 and unknown are small
    fig = plot(res)
    assert isinstance(fig, Figure)
    png(fig)
    assert "aggregate mode" in titles(fig)
    for ax, site in zip([a for a in fig.axes if a.get_title()], RELEASED, strict=False):
        texts = [t.get_text() for t in ax.texts]
        assert texts.count("suppressed") == suppressed[site]
        hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch() == "xx"]
        assert len(hatched) == suppressed[site]


def test_survival_has_a_curve_band_and_median_per_site_and_the_network(
    registries: dict[str, RegistryData],
) -> None:
    spec = {
        "cohort": STAGE_IV_LUNG,
        "statistic": {"kind": "survival", "interval_months": 6, "horizon_months": 60},
    }
    res = answer(registries, spec)
    ax = plot(res)
    assert isinstance(ax, Axes)
    png(ax)
    lines = curves(ax)
    assert [label(c).split(":")[0] for c in lines] == [*RELEASED, "network"]
    assert lines[-1].get_color() == "black"
    assert lines[-1].get_linewidth() > lines[0].get_linewidth()
    for curve in lines:
        x, y = (np.asarray(v, dtype=float) for v in curve.get_data())
        assert x[0] == 0.0 and y[0] == 1.0  # S(0) = 1
        assert ((y >= 0) & (y <= 1)).all()  # as released: noise may make it rise a little
        assert curve.get_drawstyle() == "steps-post"
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3
    assert res.result.network is not None
    medians = [s.cells[-1] for s in res.result.sites[:2]] + [res.result.network.cells[-1]]
    assert all(m.labels == ["median"] and m.value is not None for m in medians)  # within 5 years
    markers = [c for c in whiskers(ax) if label(c).startswith("_median")]
    assert len(markers) == 3
    for marker, median, curve in zip(markers, medians, lines, strict=True):
        assert median.value is not None
        point = marker.lines[0]
        assert point is not None
        x, y = (np.asarray(v, dtype=float) for v in point.get_data())
        assert x[0] == pytest.approx(median.value) and y[0] == 0.5
        assert f"median {median.value:.1f} m" in label(curve)
    assert ax.get_xlabel() == "months since diagnosis" and ax.get_ylabel()
    assert ax.get_xlim() == (0.0, 60.0)
    assert_refusal_named(ax)


def test_survival_by_egfr_has_one_panel_per_site_and_one_curve_per_group(
    registries: dict[str, RegistryData],
) -> None:
    spec = {
        "cohort": STAGE_IV_LUNG,
        "statistic": {"kind": "survival", "interval_months": 12, "horizon_months": 60},
        "group_by": ["egfr"],
    }
    fig = plot(answer(registries, spec))
    assert isinstance(fig, Figure)
    png(fig)
    assert [a.get_title() for a in fig.axes] == [*RELEASED, "network"]
    for ax in fig.axes:
        assert [label(c).split(":")[0] for c in curves(ax)] == EGFR
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3
        legend = ax.get_legend()
        assert legend is not None and legend.get_title().get_text() == "egfr"
    assert_refusal_named(fig)


def test_one_panel_of_a_panelled_plot_goes_into_the_given_axes(
    registries: dict[str, RegistryData],
) -> None:
    spec = {"cohort": LUNG, "statistic": {"kind": "crosstab", "fields": ["stage", "egfr"]}}
    res = answer(registries, spec)
    fig = Figure()
    ax = fig.add_subplot()
    with pytest.raises(ValueError, match="3 panels"):
        plot(res, ax=ax)
    assert plot(res, ax=ax, sites=["network"]) is ax
    assert "network" in ax.get_title() and f"{REFUSED}: policy_violation" in ax.get_title()
    with pytest.raises(ValueError, match="no released series named \\['tromso'\\]"):
        plot(res, sites=["tromso"])


def test_statistics_without_a_plot_and_results_without_a_release_are_refused_by_name(
    registries: dict[str, RegistryData],
) -> None:
    mean = {"statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100}}
    with pytest.raises(NoPlot, match="no plot for statistic 'mean'"):
        plot(answer(registries, mean))
    assert "mean" not in PLOTTABLE
    res = answer(registries, {"statistic": {"kind": "count"}})
    nobody = res.result.model_copy(
        update={
            "sites": [
                s.model_copy(update={"status": "budget_exhausted", "cells": []})
                for s in res.result.sites[:2]
            ],
            "network": None,
        }
    )
    with pytest.raises(ValueError, match="oslo: budget_exhausted, bergen: budget_exhausted"):
        plot(nobody)


def score_table(shift: int, size: int) -> np.ndarray:
    """A site's released (outcome, score bin) histogram: the positives score higher."""
    bins = np.arange(20)
    negatives = np.round(size * np.exp(-(((bins - 7) / 3.0) ** 2))).astype(np.int64)
    positives = np.round(size * np.exp(-(((bins - 7 - shift) / 3.0) ** 2)) / 2).astype(np.int64)
    return np.stack([negatives, positives])


def evaluation(sites: list[str], tables: list[np.ndarray]) -> EvaluationMetrics:
    variance = count_noise_variance("opendp.discrete_laplace", 10.0)  # epsilon 0.1, k = 1
    return EvaluationMetrics(
        values=pooled_metrics("logistic", tables),
        std_errors=metric_std_errors("logistic", tables, [variance] * len(tables)),
        charged={s: PureDP(0.1) for s in sites},
        sites=sites,
    )


def test_training_metrics_have_one_whiskered_marker_per_site_and_network_per_metric() -> None:
    tables = {"oslo": score_table(4, 30), "bergen": score_table(2, 12)}
    metrics = TrainingMetrics(
        network=evaluation(list(tables), list(tables.values())),
        sites={name: evaluation([name], [table]) for name, table in tables.items()},
        refusals={REFUSED: "budget_exhausted: nothing left to evaluate with"},
    )
    status = TrainingStatus(id="job1", state="finished", rounds=2, metrics=metrics)
    ax = plot_training(TrainingResult(status))
    png(ax)
    markers = whiskers(ax)
    assert [label(m).split(" (")[0] for m in markers] == ["bergen", "oslo", "network"]
    metric_names = [t.get_text() for t in ax.get_yticklabels()]
    assert metric_names == ["auc", "accuracy", "sensitivity", "specificity"]  # n is a count
    assert "n \N{ALMOST EQUAL TO}" in label(markers[0])
    for marker in markers:
        point = marker.lines[0]
        assert point is not None
        x = np.asarray(point.get_data()[0], dtype=float)
        assert ((x >= 0) & (x <= 1)).all() and len(x) == 4
        for lines in marker.lines[2]:
            assert all(((seg[:, 0] >= 0) & (seg[:, 0] <= 1)).all() for seg in lines.get_segments())
    assert metrics.network is not None
    auc = np.asarray(markers[-1].lines[0].get_data()[0], dtype=float)[0]
    assert auc == pytest.approx(metrics.network.values["auc"])
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_xlabel()
    assert f"{REFUSED}: budget_exhausted" in ax.get_title()
    with pytest.raises(ValueError, match="job2 has no evaluation to plot"):
        plot_training(TrainingResult(TrainingStatus(id="job2", state="running", rounds=2)))


def test_importing_the_client_and_plotting_leave_pyplot_alone() -> None:
    """``import varde_client`` does not import matplotlib; plotting never imports pyplot."""
    code = (
        "import sys, varde_client, varde_client.plots\n"
        "assert 'matplotlib' not in sys.modules, 'imported with the client'\n"
        "from varde.results import QueryResult\n"
        "from varde_client.plots import plot\n"
        "r = QueryResult(query_id='q', project='p', statistic='count', mode='aggregate',\n"
        "    requested=None, axes=[], budget_remaining={}, network=None,\n"
        "    sites=[{'query_id': 'q', 'site': 'oslo', 'status': 'ok', 'cells': [{'value': 12}]}])\n"
        "plot(r).get_figure().savefig(__import__('io').BytesIO(), format='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_count_of_patients_says_so_on_its_value_axis(
    registries: dict[str, RegistryData],
) -> None:
    res = answer(registries, {"statistic": {"kind": "count"}, "group_by": ["egfr"]})
    assert res.plot().get_ylabel() == "tumours (95% interval)"  # type: ignore[union-attr]
    patients = answer(
        registries, {"statistic": {"kind": "count"}, "group_by": ["egfr"], "unit": "patients"}
    )
    assert patients.result.unit == "patients"
    assert patients.plot().get_ylabel() == "patients (95% interval)"  # type: ignore[union-attr]
