"""The vectorised cohort filter agrees with a plain-pandas reference on any predicate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from nodes.cohort import evaluate
from nodes.data import RegistryData, bound_contributions, prepare
from tests.unit.varde.test_query import predicates
from varde.query import parse_query
from varde.schema import FIELDS_BY_NAME, FieldKind


@pytest.fixture(scope="module")
def unbounded(oslo_frame: pd.DataFrame) -> RegistryData:
    # max 3 tumours per patient in the synthetic data, so a bound of 20 drops nothing
    return prepare(oslo_frame, site="oslo", max_rows_per_patient=20)


def reference(frame: pd.DataFrame, p: dict[str, Any]) -> pd.Series:
    """Plain pandas, written independently of nodes/cohort.py."""
    op = p["op"]
    if op == "and":
        out = reference(frame, p["args"][0])
        for a in p["args"][1:]:
            out = out & reference(frame, a)
        return out
    if op == "or":
        out = reference(frame, p["args"][0])
        for a in p["args"][1:]:
            out = out | reference(frame, a)
        return out
    if op == "not":
        return ~reference(frame, p["arg"])
    col = frame[p["field"]]
    spec = FIELDS_BY_NAME[p["field"]]
    conv = (lambda v: pd.Timestamp(v)) if spec.kind is FieldKind.DATE else (lambda v: v)
    if spec.kind is FieldKind.CATEGORICAL:
        col = col.astype(object)
    if op == "eq":
        return (col == conv(p["value"])).fillna(False).astype(bool)
    if op == "in":
        return col.isin([conv(v) for v in p["values"]]).astype(bool)
    if op == "between":
        return ((col >= conv(p["low"])) & (col <= conv(p["high"]))).fillna(False).astype(bool)
    if op == ">=":
        return (col >= conv(p["value"])).fillna(False).astype(bool)
    if op == "<=":
        return (col <= conv(p["value"])).fillna(False).astype(bool)
    if op == "startswith":
        return col.astype(str).str.startswith(p["prefix"]).astype(bool)
    raise AssertionError(op)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pred=predicates)
def test_mask_matches_pandas(
    pred: dict[str, Any], oslo_frame: pd.DataFrame, unbounded: RegistryData
) -> None:
    query = parse_query(
        {
            "project": "p",
            "cohort": pred,
            "statistic": {"kind": "count"},
            "privacy": {"mode": "aggregate"},
        }
    )
    got = evaluate(unbounded, query.cohort)
    want = reference(oslo_frame, pred).to_numpy()
    np.testing.assert_array_equal(got, want)


def test_feasibility_filter(oslo_frame: pd.DataFrame, unbounded: RegistryData) -> None:
    pred = {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "eq", "field": "egfr", "value": "positive"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            {"op": ">=", "field": "diagnosis_date", "value": "2020-01-01"},
        ],
    }
    query = parse_query(
        {
            "project": "p",
            "cohort": pred,
            "statistic": {"kind": "count"},
            "privacy": {"mode": "aggregate"},
        }
    )
    got = int(evaluate(unbounded, query.cohort).sum())
    want = int(reference(oslo_frame, pred).sum())
    assert got == want > 0


def test_bounding_keeps_earliest_tumours(oslo_frame: pd.DataFrame) -> None:
    bounded = bound_contributions(oslo_frame, 1)
    assert bounded["patient_id"].is_unique
    earliest = oslo_frame.groupby("patient_id", observed=True)["diagnosis_date"].min()
    kept = bounded.set_index("patient_id")["diagnosis_date"]
    assert (kept.sort_index() == earliest.sort_index()).all()
    assert len(bounded) == oslo_frame["patient_id"].nunique() < len(oslo_frame)
