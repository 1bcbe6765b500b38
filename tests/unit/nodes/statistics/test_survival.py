"""DP Kaplan-Meier: exact counts, agreement with lifelines at large epsilon, pooling, bad input."""

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
from varde.estimates import survival_from_counts
from varde.query import DAYS_PER_MONTH, parse_query
from varde.release import SiteRelease

lifelines = pytest.importorskip("lifelines", reason="lifelines validates the KM curve (dev extra)")

SURV: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
    "statistic": {"kind": "survival", "interval_months": 1, "horizon_months": 60},
    "privacy": {"mode": "dp", "epsilon": 1.0},
}
TOLERANCE = 0.02
"""At epsilon 100 the DP curve must stay within 0.02 of lifelines' exact KM at every month."""


def lung(frame: pd.DataFrame) -> pd.DataFrame:
    f = bound_contributions(frame, 3)
    return f[(f.cancer_type == "lung") & f.survival_days.notna() & f.vital_status.notna()]


def km_exact(f: pd.DataFrame, months: list[int]) -> np.ndarray:
    kmf = lifelines.KaplanMeierFitter()
    kmf.fit(f.survival_days / DAYS_PER_MONTH, event_observed=f.vital_status == "dead")
    return np.asarray(kmf.survival_function_at_times(months).to_numpy(), dtype=float)


def test_exact_counts_partition_the_cohort(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData
) -> None:
    query = parse_query(SURV)
    ex = exact(oslo_data, evaluate(oslo_data, query.cohort), query)
    f = lung(oslo_frame)
    assert ex.counts.size == 121 and int(ex.counts.sum()) == len(f)
    deaths = ex.counts[:60]
    months = np.floor(f.survival_days / DAYS_PER_MONTH)
    want = np.bincount(months[(f.vital_status == "dead") & (months < 60)].astype(int), minlength=60)
    assert deaths.tolist() == want.tolist()
    assert ex.counts[120] == int((months >= 60).sum())


def test_dp_curve_matches_lifelines_at_large_epsilon(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData
) -> None:
    query = parse_query(SURV)
    ex = exact(oslo_data, evaluate(oslo_data, query.cohort), query)
    cells = plan(ex, query, PureDP(100.0), max_rows=3).release()
    assert len(cells) == 61 and cells[-1].labels == ["median"]
    curve = np.array([c.value for c in cells[:60]])
    want = km_exact(lung(oslo_frame), list(range(1, 61)))
    assert np.max(np.abs(curve - want)) < TOLERANCE
    assert all(c.ci_low <= c.value <= c.ci_high for c in cells[:60])
    kmf = lifelines.KaplanMeierFitter().fit(
        lung(oslo_frame).survival_days / DAYS_PER_MONTH,
        event_observed=lung(oslo_frame).vital_status == "dead",
    )
    median = cells[-1]
    assert median.value == pytest.approx(kmf.median_survival_time_, abs=1.0)
    assert median.ci_low <= median.value <= median.ci_high


def test_band_covers_the_exact_curve_at_small_epsilon(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData
) -> None:
    """The band includes the DP noise: over repeated releases it covers the exact KM ~95%."""
    query = parse_query(SURV)
    ex = exact(oslo_data, evaluate(oslo_data, query.cohort), query)
    want = km_exact(lung(oslo_frame), [12, 24, 36])
    costed = plan(ex, query, PureDP(0.2), max_rows=3)
    hits, total = 0, 0
    for _ in range(60):
        cells = costed.release()
        for j, month in enumerate([12, 24, 36]):
            cell = cells[month - 1]
            hits += cell.ci_low <= want[j] <= cell.ci_high
            total += 1
    assert hits / total > 0.85


def test_pooled_curve_is_the_curve_of_the_pooled_data(
    oslo_frame: pd.DataFrame, oslo_data: RegistryData
) -> None:
    query = parse_query({**SURV, "cohort": None})
    f = bound_contributions(oslo_frame, 3)
    types = f.cancer_type.astype(str).to_numpy()
    releases = []
    for site, ctype in {"a": "lung", "b": "breast", "c": "pancreas"}.items():
        mask = types == ctype
        cells = plan(exact(oslo_data, mask, query), query, PureDP(100.0), max_rows=3).release()
        releases.append(SiteRelease(query_id="q", site=site, status="ok", cells=cells))
    net = combine(query, releases)
    assert net is not None and len(net.cells) == 61
    union = f[np.isin(types, ["lung", "breast", "pancreas"])]
    union = union[union.survival_days.notna() & union.vital_status.notna()]
    want = km_exact(union, list(range(1, 61)))
    curve = np.array([c.value for c in net.cells[:60]])
    assert np.max(np.abs(curve - want)) < TOLERANCE
    averaged = np.mean([[c.value for c in r.cells[:60]] for r in releases], axis=0)
    assert np.max(np.abs(averaged - want)) > 0.05  # averaging site curves would be wrong


def test_group_by_stage_gives_one_curve_per_stage(oslo_data: RegistryData) -> None:
    query = parse_query(
        {**SURV, "group_by": ["stage"], "statistic": {"kind": "survival", "horizon_months": 24}}
    )
    ex = exact(oslo_data, evaluate(oslo_data, query.cohort), query)
    cells = plan(ex, query, PureDP(100.0), max_rows=3).release()
    assert len(cells) == 6 * 25
    by_stage = {c.labels[0]: c.value for c in cells if c.labels[1] == "24m"}
    assert by_stage["I"] > by_stage["IV"]  # stage IV lung cancer dies faster


def test_estimator_on_known_counts() -> None:
    curve, median = survival_from_counts([1, 2, 3], [10.0, 0.0, 45.0], [0.0, 0.0, 0.0], 45.0, 0.0)
    assert [round(v[0], 6) for v in curve] == [0.9, 0.9, 0.45]
    assert median[0] == pytest.approx(2 + (0.9 - 0.5) / (0.9 - 0.45))


@pytest.mark.parametrize(
    ("statistic", "message"),
    [
        ({"kind": "survival", "interval_months": 0}, "greater than or equal to 1"),
        ({"kind": "survival", "horizon_months": 300}, "less than or equal to 240"),
        ({"kind": "survival", "interval_months": 7, "horizon_months": 60}, "multiple of"),
        ({"kind": "survival", "time_field": "age"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_survival_is_refused(statistic: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_query({**SURV, "statistic": statistic})


def test_survival_is_dp_only_and_cannot_group_by_its_own_fields() -> None:
    with pytest.raises(ValidationError, match="survival is DP only"):
        parse_query({**SURV, "privacy": {"mode": "aggregate"}})
    with pytest.raises(ValidationError, match="own field"):
        parse_query({**SURV, "group_by": ["vital_status"]})
