"""Quantiles: exact interval counts, DP medians, pooling through the summed CDF, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from gateway.combine import combine
from nodes.cohort import evaluate
from nodes.data import RegistryData, bound_contributions
from nodes.statistics import exact, plan
from varde.budget import PureDP
from varde.query import parse_query
from varde.release import SiteRelease

EDGES = [float(x) for x in range(0, 111)]
MEDIAN: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "statistic": {
        "kind": "quantile",
        "field": "age_at_diagnosis",
        "candidates": EDGES,
        "alphas": [0.25, 0.5, 0.75],
    },
    "privacy": {"mode": "dp", "epsilon": 1.0},
}


def interpolated_quantile(values: np.ndarray, alpha: float) -> float:
    """The quantile the grid can express: linear within 1-year intervals [a, a+1)."""
    counts = np.bincount(np.clip(values, 0, 109).astype(int), minlength=110)
    cdf = np.cumsum(counts) / counts.sum()
    i = int(np.searchsorted(cdf, alpha))
    below = cdf[i - 1] if i > 0 else 0.0
    return float(i + (alpha - below) / (cdf[i] - below))


def test_exact_interval_counts(oslo_frame: pd.DataFrame, oslo_data: RegistryData) -> None:
    query = parse_query({**MEDIAN, "group_by": ["sex"]})
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    assert ex.labels == [[s, q] for s in ("female", "male") for q in ("q0.25", "q0.5", "q0.75")]
    frame = bound_contributions(oslo_frame, 3)
    for g, sex in enumerate(["female", "male"]):
        ages = frame.loc[frame.sex == sex, "age_at_diagnosis"].dropna().to_numpy()
        want = np.bincount(np.clip(ages, 0, 109).astype(int), minlength=110)
        assert ex.counts[g * 110 : (g + 1) * 110].tolist() == want.tolist()


def test_dp_quantiles_at_large_epsilon(oslo_frame: pd.DataFrame, oslo_data: RegistryData) -> None:
    query = parse_query(MEDIAN)
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    cells = plan(ex, query, PureDP(200.0), max_rows=3).release()
    ages = bound_contributions(oslo_frame, 3).age_at_diagnosis.dropna().to_numpy()
    for cell, alpha in zip(cells, [0.25, 0.5, 0.75], strict=True):
        assert cell.value == pytest.approx(interpolated_quantile(ages, alpha), abs=0.05)
        assert abs(cell.value - np.quantile(ages, alpha)) <= 1.0
        assert cell.ci_low <= cell.value <= cell.ci_high
        assert len(cell.parts) == 110


def test_interval_count_noise_has_the_planned_scale(oslo_data: RegistryData) -> None:
    edges = [x / 10 for x in range(0, 1001)]  # 1,000 intervals
    query = parse_query(
        {**MEDIAN, "statistic": {**MEDIAN["statistic"], "candidates": edges, "alphas": [0.5]}}
    )
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    costed = plan(ex, query, PureDP(0.5), max_rows=3)
    assert costed.noise_scales == {"count": pytest.approx(6.0)}
    (cell,) = costed.release()
    noise = np.array([cell.parts[f"bin{i}"] for i in range(1000)]) - ex.counts
    assert np.std(noise) == pytest.approx(cell.part_std["bin0"], rel=0.1)
    assert cell.ci_low < cell.value < cell.ci_high


def _site_release(data: RegistryData, site: str, mask: np.ndarray, eps: float) -> SiteRelease:
    query = parse_query({**MEDIAN, "statistic": {**MEDIAN["statistic"], "alphas": [0.5]}})
    ex = exact(data, mask, query)
    costed = plan(ex, query, PureDP(eps), max_rows=3)
    return SiteRelease(query_id="q", site=site, status="ok", cells=costed.release())


def test_pooled_median_is_the_median_of_the_union_not_the_mean_of_medians(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData
) -> None:
    """Three 'sites' with very different age profiles and sizes (non-IID, like registries)."""
    frame = bound_contributions(oslo_frame, 3)
    types = frame.cancer_type.astype(str).to_numpy()
    groups = {"a": "cervix", "b": "thyroid", "c": "colorectal"}  # two small young, one big old
    releases, ages = [], []
    for site, ctype in groups.items():
        mask = types == ctype
        releases.append(_site_release(oslo_data, site, mask, eps=200.0))
        ages.append(frame.age_at_diagnosis.to_numpy()[mask])
    query = parse_query({**MEDIAN, "statistic": {**MEDIAN["statistic"], "alphas": [0.5]}})
    net = combine(query, releases)
    assert net is not None
    (cell,) = net.cells
    union = np.concatenate(ages)
    union = union[~np.isnan(union)]
    assert cell.value == pytest.approx(interpolated_quantile(union, 0.5), abs=0.1)
    site_medians = [r.cells[0].value for r in releases]
    naive = float(np.mean(site_medians))
    assert abs(naive - float(np.median(union))) > 1.0  # the classic mistake would be off
    assert cell.ci_low <= cell.value <= cell.ci_high


def test_pooled_interval_narrows_with_more_sites(oslo_data: RegistryData) -> None:
    mask = np.ones(oslo_data.n_rows, dtype=bool)
    one = _site_release(oslo_data, "a", mask, eps=0.05)
    query = parse_query({**MEDIAN, "statistic": {**MEDIAN["statistic"], "alphas": [0.5]}})
    net = combine(query, [one, _site_release(oslo_data, "b", mask, eps=0.05)])
    assert net is not None
    width_one = one.cells[0].ci_high - one.cells[0].ci_low
    width_net = net.cells[0].ci_high - net.cells[0].ci_low
    assert width_net < width_one  # twice the data, noise grows only as sqrt(2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"candidates": [0, 10, 5]}, "strictly increasing"),
        ({"candidates": [50]}, "at least 2 items"),
        ({"candidates": [float(x) for x in range(1003)]}, "at most 1001 items"),
        ({"alphas": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"alphas": [0.75, 0.25]}, "alphas must be strictly increasing"),
        ({"field": "stage"}, "a numeric field is needed"),
        ({"candidates": [500, 600]}, "outside the domain"),
    ],
)
def test_bad_quantiles_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_query({**MEDIAN, "statistic": {**MEDIAN["statistic"], **change}})


def test_quantiles_are_dp_only() -> None:
    with pytest.raises(ValidationError, match="quantiles are DP only"):
        parse_query({**MEDIAN, "privacy": {"mode": "aggregate"}})


def test_grid_times_groups_is_capped() -> None:
    edges = [float(x) for x in range(0, 1001)]
    with pytest.raises(ValidationError, match="at most 20000"):
        parse_query(
            {
                **MEDIAN,
                "statistic": {**MEDIAN["statistic"], "candidates": edges},
                "group_by": ["cancer_type", "stage"],
            }
        )
