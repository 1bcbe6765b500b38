"""The query language: valid documents parse, invalid ones fail with a precise message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from varde.budget import PureDP
from varde.query import Query, parse_query, predicate_fields
from varde.schema import FIELDS_BY_NAME, FieldKind

BASE: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def q(**over: Any) -> dict[str, Any]:
    return {**BASE, **over}


def test_feasibility_query_parses() -> None:
    query = parse_query(
        q(
            cohort={
                "op": "and",
                "args": [
                    {"op": "startswith", "field": "topography", "prefix": "C34"},
                    {"op": "eq", "field": "stage", "value": "IV"},
                    {"op": "eq", "field": "egfr", "value": "positive"},
                    {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
                    {"op": ">=", "field": "diagnosis_date", "value": "2020-01-01"},
                    {"op": "not", "arg": {"op": "in", "field": "sex", "values": ["male"]}},
                ],
            }
        )
    )
    assert query.fields_read() == {
        "topography", "stage", "egfr", "age_at_diagnosis", "diagnosis_date", "sex",
    }  # fmt: skip
    assert query.budget == PureDP(0.5)
    assert query.cell_count() == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cohort": {"op": "eq", "field": "shoe_size", "value": 3}}, "unknown field 'shoe_size'"),
        ({"cohort": {"op": "eq", "field": "stage", "value": "V"}}, "unknown category 'V'"),
        ({"cohort": {"op": "eq", "field": "patient_id", "value": "x"}}, "identifier"),
        ({"cohort": {"op": "eq", "field": "age_at_diagnosis", "value": "old"}}, "not a number"),
        (
            {"cohort": {"op": "between", "field": "age_at_diagnosis", "low": 80, "high": 18}},
            "low 80 > high 18",
        ),
        ({"cohort": {"op": ">=", "field": "diagnosis_date", "value": "2020-13-01"}}, "ISO date"),
        ({"cohort": {"op": "startswith", "field": "topography", "prefix": "X9"}}, "starts with"),
        ({"cohort": {"op": "between", "field": "stage", "low": "I", "high": "II"}}, "categorical"),
        ({"cohort": {"op": "like", "field": "stage", "value": "I"}}, "a criterion needs an op: eq"),
        ({"privacy": {"mode": "dp", "epsilon": 0}}, "greater than 0"),
        ({"privacy": {"mode": "dp", "epsilon": -1}}, "greater than 0"),
        ({"privacy": {"mode": "dp", "epsilon": float("nan")}}, "finite number"),
        ({"privacy": {"mode": "dp", "epsilon": float("inf")}}, "finite number"),
        ({"privacy": {"mode": "dp"}}, "Field required"),
        ({"privacy": {"mode": "magic"}}, "privacy needs a mode: dp, zcdp or aggregate"),
        (
            {"statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 90, "upper": 18}},
            "bounds inverted",
        ),
        (
            {"statistic": {"kind": "mean", "field": "stage", "lower": 0, "upper": 1}},
            "numeric field",
        ),
        (
            {"statistic": {"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, 50, 40]}},
            "strictly increasing",
        ),
        (
            {"statistic": {"kind": "histogram", "field": "age_at_diagnosis"}},
            "needs declared 'bins'",
        ),
        (
            {"statistic": {"kind": "histogram", "field": "stage", "categories": ["IV", "V"]}},
            "unknown category 'V'",
        ),
        ({"group_by": ["age_at_diagnosis"]}, "public categorical"),
        ({"group_by": ["no_such"]}, "unknown field"),
        ({"group_by": ["sex", "sex"]}, "must not repeat"),
        (
            {"statistic": {"kind": "crosstab", "fields": ["topography", "morphology", "region"]}},
            "at most 20000",
        ),
        ({"project": "Bad Name"}, "should match pattern"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
        ({"statistic": {"kind": "count", "extra": 1}}, "Extra inputs are not permitted"),
        ({"timeout_s": 0}, "greater than 0"),
    ],
)
def test_invalid_queries_fail_precisely(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_query(q(**override))
    assert message in str(info.value)


def test_histogram_labels_and_axes() -> None:
    query = parse_query(
        q(
            statistic={"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, 18, 65, 111]},
            group_by=["sex"],
        )
    )
    assert query.axes() == [
        ("sex", ["female", "male"]),
        ("age_at_diagnosis", ["[0, 18)", "[18, 65)", "[65, 111)"]),
    ]
    assert query.cell_count() == 6


# --- property tests: any generated predicate tree round-trips through JSON ----------------------

CATEGORICAL = [f for f in FIELDS_BY_NAME.values() if f.kind is FieldKind.CATEGORICAL]
INTEGER = [f for f in FIELDS_BY_NAME.values() if f.kind is FieldKind.INTEGER]


@st.composite
def leaf(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        f = draw(st.sampled_from(CATEGORICAL))
        if draw(st.booleans()):
            return {"op": "eq", "field": f.name, "value": draw(st.sampled_from(f.categories))}
        values = draw(st.lists(st.sampled_from(f.categories), min_size=1, max_size=4))
        return {"op": "in", "field": f.name, "values": values}
    f = draw(st.sampled_from(INTEGER))
    a = draw(st.integers(0, 3000))
    b = draw(st.integers(a, 3000))
    return draw(
        st.sampled_from(
            [
                {"op": "between", "field": f.name, "low": a, "high": b},
                {"op": ">=", "field": f.name, "value": a},
                {"op": "<=", "field": f.name, "value": b},
            ]
        )
    )


predicates = st.recursive(
    leaf(),
    lambda children: st.one_of(
        st.builds(
            lambda args: {"op": "and", "args": args}, st.lists(children, min_size=1, max_size=3)
        ),
        st.builds(
            lambda args: {"op": "or", "args": args}, st.lists(children, min_size=1, max_size=3)
        ),
        st.builds(lambda arg: {"op": "not", "arg": arg}, children),
    ),
    max_leaves=8,
)


def _leaf_fields(p: dict[str, Any]) -> set[str]:
    if p["op"] in ("and", "or"):
        return set().union(*(_leaf_fields(a) for a in p["args"]))
    if p["op"] == "not":
        return _leaf_fields(p["arg"])
    return {p["field"]}


@given(predicates)
def test_generated_predicates_round_trip(pred: dict[str, Any]) -> None:
    query = parse_query(q(cohort=pred))
    again = Query.model_validate_json(query.model_dump_json())
    assert again == query
    assert predicate_fields(query.cohort) == _leaf_fields(pred)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"privacy": {"epsilon": 0.5}}, "privacy needs a mode: dp, zcdp or aggregate"),
        ({"statistic": {"kind": "average"}}, "statistic needs a kind: count, sum, mean"),
        ({"cohort": {"op": "eq", "field": "stge", "value": "IV"}}, "did you mean 'stage'"),
        ({"cohort": {"op": "eq", "field": "stage", "value": "iv"}}, "did you mean 'IV'?"),
        ({"cohort": {"op": "eq", "field": "topography", "value": "C34"}}, "'C34.0', 'C34.1'"),
        ({"group_by": ["sexx"]}, "did you mean 'sex'"),
    ],
)
def test_refusals_say_what_to_do(override: dict[str, Any], says: str) -> None:
    """A mistyped name gets its close matches; a missing tag says which values it takes."""
    with pytest.raises(ValidationError) as info:
        Query.model_validate({**BASE, **override})
    assert says in str(info.value)
    assert "does not match any of the expected tags" not in str(info.value)
