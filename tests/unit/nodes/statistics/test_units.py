"""Counting patients: each once, by their first matching tumour, released at sensitivity 1.

The references are pandas, computed from the bounded registry as the rule in
``nodes/statistics/units.py`` states it: sort by patient, diagnosis date and tumour id,
keep the first row meeting the criteria, count those rows per cell.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.canonical import query_key
from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions, prepare
from nodes.mechanisms import discrete_laplace_std
from nodes.pipeline import handle
from nodes.statistics import exact, price
from nodes.statistics.accuracy_first import least_budget
from tests.conftest import make_work
from varde.budget import ZCDP, PureDP
from varde.query import parse_query
from varde.schema import FIELDS_BY_NAME

K = 3
LUNG_OR_BREAST = {"op": "in", "field": "cancer_type", "values": ["lung", "breast"]}


def first_rows(frame: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """Each patient's first row among ``mask`` (diagnosis date, then tumour id)."""
    ordered = frame[mask].sort_values(["patient_id", "diagnosis_date", "tumour_id"], kind="stable")
    return ordered.drop_duplicates("patient_id", keep="first")


def per_cell(rows: pd.DataFrame, axes: list[str]) -> list[int]:
    cats = [list(FIELDS_BY_NAME[a].categories) for a in axes]
    if len(axes) == 1:
        counts = rows.groupby(axes[0], observed=False).size()
        return counts.reindex(cats[0], fill_value=0).astype(int).tolist()
    index = pd.MultiIndex.from_tuples(list(itertools.product(*cats)))
    counts = rows.groupby(axes, observed=False).size()
    return counts.reindex(index, fill_value=0).astype(int).tolist()


@pytest.fixture(scope="module")
def bounded(oslo_frame: pd.DataFrame) -> pd.DataFrame:
    return bound_contributions(oslo_frame, K)


def test_the_data_has_patients_with_tumours_in_different_groups(bounded: pd.DataFrame) -> None:
    """What the references below rely on: the rule's choice of group is actually exercised."""
    types = bounded.groupby("patient_id").cancer_type.nunique()
    assert (types >= 2).sum() > 1000


def test_count_by_group_matches_pandas(oslo_data: RegistryData, bounded: pd.DataFrame) -> None:
    body: dict[str, Any] = {
        "project": "p",
        "cohort": LUNG_OR_BREAST,
        "statistic": {"kind": "count"},
        "group_by": ["cancer_type", "sex"],
        "privacy": {"mode": "dp", "epsilon": 1.0},
    }
    patients = parse_query({**body, "unit": "patients"})
    tumours = parse_query(body)
    mask = evaluate(oslo_data, patients.cohort)
    want = first_rows(bounded, bounded.cancer_type.isin(["lung", "breast"]))
    got = exact(oslo_data, mask, patients).counts
    assert got.tolist() == per_cell(want, ["cancer_type", "sex"])
    assert int(got.sum()) == want.patient_id.nunique()
    # a patient with a lung and a breast tumour is in one group only: fewer than tumours
    n_tumours = exact(oslo_data, mask, tumours).counts
    assert int(n_tumours.sum()) == int(bounded.cancer_type.isin(["lung", "breast"]).sum())
    assert int(n_tumours.sum()) > int(got.sum())


def test_histogram_and_crosstab_match_pandas(
    oslo_data: RegistryData, bounded: pd.DataFrame
) -> None:
    every = bounded.cancer_type.notna()
    want = first_rows(bounded, every)
    hist = parse_query(
        {
            "project": "p",
            "statistic": {"kind": "histogram", "field": "cancer_type"},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 1.0},
        }
    )
    assert exact(oslo_data, evaluate(oslo_data, None), hist).counts.tolist() == per_cell(
        want, ["cancer_type"]
    )
    cross = parse_query(
        {
            "project": "p",
            "statistic": {"kind": "crosstab", "fields": ["cancer_type", "stage"]},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 1.0},
        }
    )
    assert exact(oslo_data, evaluate(oslo_data, None), cross).counts.tolist() == per_cell(
        want, ["cancer_type", "stage"]
    )


def test_funnel_counts_each_patient_by_their_first_tumour_per_step(
    oslo_data: RegistryData, bounded: pd.DataFrame
) -> None:
    steps = [
        ("lung or breast", LUNG_OR_BREAST),
        ("stage III-IV", {"op": "in", "field": "stage", "values": ["III", "IV"]}),
        ("female", {"op": "eq", "field": "sex", "value": "female"}),
    ]
    query = parse_query(
        {
            "project": "p",
            "statistic": {
                "kind": "funnel",
                "steps": [{"label": lab, "criterion": c} for lab, c in steps],
            },
            "group_by": ["cancer_type"],
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 1.0},
        }
    )
    alive = pd.Series(True, index=bounded.index)
    filters = [
        bounded.cancer_type.isin(["lung", "breast"]),
        bounded.stage.isin(["III", "IV"]),
        bounded.sex == "female",
    ]
    want_steps = []
    for f in filters:
        alive &= f
        want_steps.append(per_cell(first_rows(bounded, alive), ["cancer_type"]))
    want = np.array(want_steps).T.reshape(-1)  # (group, step), step fastest
    got = exact(oslo_data, evaluate(oslo_data, None), query).counts
    assert got.tolist() == want.tolist()
    totals = got.reshape(-1, 3).sum(axis=0)
    assert totals[0] >= totals[1] >= totals[2]  # patient totals never rise


def test_a_patient_with_tumours_in_three_groups_counts_once_in_the_first() -> None:
    """A hand-made registry: the rule on one patient, whatever order the rows come in."""
    from nodes.synth import generate_registry

    base = generate_registry("oslo", 40, seed=3).iloc[:4].copy()
    base["patient_id"] = ["a", "a", "a", "b"]
    base["tumour_id"] = [12, 11, 10, 20]
    base["cancer_type"] = ["lung", "breast", "melanoma", "lung"]
    base["diagnosis_date"] = pd.to_datetime(
        ["2015-03-01", "2012-06-01", "2012-06-01", "2011-01-01"]
    )
    data = prepare(base, site="oslo", max_rows_per_patient=K)
    query = parse_query(
        {
            "project": "p",
            "statistic": {"kind": "histogram", "field": "cancer_type"},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 1.0},
        }
    )
    labels = query.axes()[0][1]
    counts = dict(
        zip(labels, exact(data, evaluate(data, None), query).counts.tolist(), strict=True)
    )
    # patient a: 2012-06-01 twice, tumour 10 (melanoma) before 11 (breast); b: lung
    assert (counts["melanoma"], counts["breast"], counts["lung"]) == (1, 0, 1)
    no_melanoma = parse_query(
        {
            "project": "p",
            "cohort": {
                "op": "not",
                "arg": {"op": "eq", "field": "cancer_type", "value": "melanoma"},
            },
            "statistic": {"kind": "histogram", "field": "cancer_type"},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 1.0},
        }
    )
    mask = evaluate(data, no_melanoma.cohort)
    counts = dict(zip(labels, exact(data, mask, no_melanoma).counts.tolist(), strict=True))
    assert (counts["melanoma"], counts["breast"], counts["lung"]) == (0, 1, 1)


@pytest.mark.parametrize("kind", ["count", "histogram", "crosstab", "funnel", "sum", "survival"])
def test_a_patient_release_is_planned_at_sensitivity_one(kind: str) -> None:
    stats: dict[str, Any] = {
        "count": {"kind": "count"},
        "histogram": {"kind": "histogram", "field": "stage"},
        "crosstab": {"kind": "crosstab", "fields": ["stage", "sex"]},
        "funnel": {"kind": "funnel", "steps": [{"label": "a", "criterion": LUNG_OR_BREAST}]},
        "sum": {"kind": "sum", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
        "survival": {"kind": "survival", "interval_months": 12, "horizon_months": 24},
    }
    body = {"project": "p", "statistic": stats[kind], "privacy": {"mode": "dp", "epsilon": 0.5}}
    tumours = price(parse_query(body), PureDP(0.5), max_rows=K)
    patients = price(parse_query({**body, "unit": "patients"}), PureDP(0.5), max_rows=K)
    for part, scale in tumours.noise_scales.items():
        assert patients.noise_scales[part] == pytest.approx(scale / K, rel=1e-6)
    assert patients.cost.amount == pytest.approx(tumours.cost.amount, rel=1e-6)


def test_patient_noise_has_the_scale_of_sensitivity_one_not_k(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, bounded: pd.DataFrame
) -> None:
    """A statistical check on released noise: 1,944 cells of a crosstab, k = 3, epsilon 1.

    Noise of sensitivity 1 has sd ~1.4 (discrete Laplace at scale 1); at k = 3 it would be
    ~4.2. The sample sd of 1,944 draws is within 10% of the truth with overwhelming odds.
    """
    axes = ["cancer_type", "stage", "sex", "age_band"]
    body = {
        "project": "nsclc-feasibility",
        "statistic": {"kind": "crosstab", "fields": axes},
        "unit": "patients",
        "privacy": {"mode": "dp", "epsilon": 1.0},
    }
    rel = handle(node_ctx, make_work(gateway_key, body))
    assert rel.status == "ok", rel.message
    assert node_ctx.policy.privacy_unit.max_tumours_per_patient == K
    assert rel.noise_scales == {"count": pytest.approx(1.0)}
    want = np.array(per_cell(first_rows(bounded, bounded.cancer_type.notna()), axes))
    noise = np.array([c.value for c in rel.cells]) - want
    assert np.std(noise) == pytest.approx(discrete_laplace_std(1.0), rel=0.1)
    assert np.std(noise) < discrete_laplace_std(float(K)) / 2
    assert rel.cells[0].std == pytest.approx(discrete_laplace_std(1.0))


def test_patients_and_tumours_are_different_questions() -> None:
    body = {"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 1}}
    old = parse_query(body)
    assert old.unit == "tumours"  # the default: old queries keep their meaning
    assert query_key(old) == query_key(parse_query({**body, "unit": "tumours"}))
    assert query_key(old) != query_key(parse_query({**body, "unit": "patients"}))
    with pytest.raises(ValueError, match="unit"):
        parse_query({**body, "unit": "people"})


def test_an_accuracy_target_costs_k_times_less_counting_patients() -> None:
    body = {
        "project": "p",
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "accuracy": {"pm95": 10}},
    }
    tumours = least_budget(parse_query(body), max_rows=K).budget
    patients = least_budget(parse_query({**body, "unit": "patients"}), max_rows=K).budget
    assert tumours is not None and patients is not None
    assert patients.amount == pytest.approx(tumours.amount / K, rel=1e-3)


def test_aggregate_mode_counts_patients(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, bounded: pd.DataFrame
) -> None:
    body = {
        "project": "breast-outcomes",
        "statistic": {"kind": "count"},
        "group_by": ["cancer_type"],
        "unit": "patients",
        "privacy": {"mode": "aggregate"},
    }
    rel = handle(node_ctx, make_work(gateway_key, body))
    assert rel.status == "ok", rel.message
    want = per_cell(first_rows(bounded, bounded.cancer_type.notna()), ["cancer_type"])
    spread = node_ctx.policy.aggregate.cell_key_spread
    for cell, w in zip(rel.cells, want, strict=True):
        if cell.status == "ok":
            assert cell.value is not None and abs(cell.value - w) <= spread


def test_a_zcdp_patient_count_has_l2_sensitivity_one() -> None:
    """The discrete Gaussian of a patient count: sigma = 1 / sqrt(2 rho), not k / sqrt(2 rho)."""
    body = {"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "zcdp", "rho": 0.5}}
    tumours = price(parse_query(body), ZCDP(0.5), max_rows=K)
    patients = price(parse_query({**body, "unit": "patients"}), ZCDP(0.5), max_rows=K)
    assert patients.noise_scales["count"] == pytest.approx(1.0, rel=1e-6)
    assert tumours.noise_scales["count"] == pytest.approx(float(K), rel=1e-6)
    assert patients.cost.amount == pytest.approx(0.5, rel=1e-6)
