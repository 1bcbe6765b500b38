"""Study fields in the query language: declarations, validation against them, completion."""

from __future__ import annotations

import contextvars
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from varde.query import Query, parse_query
from varde.study_fields import StudyField, merge_declarations, resolve_with

ARM = {"name": "trial_arm", "kind": "categorical", "categories": ["A", "B"]}
CRP = {"name": "crp", "kind": "bounded", "lower": 0.5, "upper": 250.0, "unit": "mg/L"}
BASE: dict[str, Any] = {
    "project": "p",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 1.0},
}


def query(**parts: Any) -> Query:
    return parse_query({**BASE, "study_fields": [ARM, CRP], **parts})


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"name": "sex", "kind": "categorical", "categories": ["x"]}, "common schema already"),
        ({"name": "arm", "kind": "categorical"}, "needs its 'categories'"),
        ({"name": "arm", "kind": "categorical", "categories": ["A", "A"]}, "must not repeat"),
        ({"name": "arm", "kind": "categorical", "categories": ["A"], "lower": 1}, "no bounds"),
        ({"name": "crp", "kind": "bounded", "lower": 1}, "needs 'lower' and 'upper'"),
        ({"name": "crp", "kind": "bounded", "lower": 5, "upper": 5}, "must be < upper"),
        ({"name": "crp", "kind": "bounded", "lower": 0, "upper": 1, "categories": ["a"]}, "no cat"),
        ({"name": "Crp", "kind": "bounded", "lower": 0, "upper": 1}, "pattern"),
        ({"name": "crp", "kind": "bounded", "lower": True, "upper": 1}, "valid number"),
        ({"name": "crp", "kind": "number", "lower": 0, "upper": 1}, "categorical"),
    ],
)
def test_bad_declarations_are_refused_by_name(declaration: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        StudyField.model_validate(declaration)


@given(
    lower=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(1e-3, 1e6, allow_nan=False),
    cats=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=10, unique=True),
)
def test_declarations_round_trip_through_json(lower: float, width: float, cats: list[str]) -> None:
    for f in (
        StudyField(name="lab", kind="bounded", lower=lower, upper=lower + width),
        StudyField(name="arm", kind="categorical", categories=cats),
    ):
        assert StudyField.model_validate_json(f.model_dump_json()) == f


def test_a_query_uses_the_study_fields_it_declares() -> None:
    q = query(
        cohort={
            "op": "and",
            "args": [
                {"op": "eq", "field": "trial_arm", "value": "A"},
                {"op": "between", "field": "crp", "low": 1.5, "high": 10},
            ],
        },
        statistic={"kind": "mean", "field": "crp", "lower": 0.5, "upper": 100},
        group_by=["trial_arm", "sex"],
    )
    assert q.axes() == [("trial_arm", ["A", "B"]), ("sex", ["female", "male"])]
    assert q.fields_read() == {"trial_arm", "crp", "sex"}
    again = Query.model_validate(q.model_dump(mode="json"))  # self-contained, anywhere
    assert again == q and again.axes() == q.axes()


def test_a_study_histogram_spells_out_its_declared_categories() -> None:
    q = query(statistic={"kind": "histogram", "field": "trial_arm"})
    assert q.model_dump(mode="json")["statistic"]["categories"] == ["A", "B"]
    assert q.axes() == [("trial_arm", ["A", "B"])]
    numeric = query(statistic={"kind": "histogram", "field": "crp", "bins": [0, 5, 50, 250]})
    assert numeric.axes()[0][1] == ["[0, 5)", "[5, 50)", "[50, 250)"]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"cohort": {"op": "eq", "field": "trial_arm", "value": "C"}}, "unknown category 'C'"),
        ({"cohort": {"op": ">=", "field": "trial_arm", "value": 1}}, "categorical"),
        ({"cohort": {"op": "eq", "field": "crp", "value": "high"}}, "not a number"),
        ({"group_by": ["crp"]}, "public categorical"),
        ({"statistic": {"kind": "sum", "field": "trial_arm", "lower": 0, "upper": 1}}, "numeric"),
        ({"statistic": {"kind": "sum", "field": "crp", "lower": 300, "upper": 400}}, "outside"),
        ({"cohort": {"op": "eq", "field": "ecog", "value": 1}}, "unknown field 'ecog'"),
        ({"study_fields": [ARM, ARM]}, "must not repeat"),
    ],
)
def test_study_fields_are_checked_like_schema_fields(parts: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        query(**parts)


def test_without_a_declaration_a_study_name_is_an_unknown_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown field 'trial_arm'"):
        parse_query({**BASE, "group_by": ["trial_arm"]})
    assert "study_fields" not in parse_query(BASE).model_dump(mode="json")  # old JSON unchanged


def _in_gateway_context(resolver: Any, body: dict[str, Any]) -> Query:
    """Validate ``body`` where the gateway's resolver is set (a fresh context: no leak)."""

    def run() -> Query:
        resolve_with(resolver)
        return parse_query(body)

    return contextvars.copy_context().run(run)


def test_the_gateway_completes_a_query_with_what_the_sites_declare() -> None:
    published = {
        "oslo": [StudyField.model_validate(ARM), StudyField.model_validate(CRP)],
        "bergen": [StudyField.model_validate(ARM)],
    }
    asked: list[tuple[str, set[str]]] = []

    def resolver(project: str, names: set[str]) -> list[StudyField]:
        asked.append((project, names))
        return merge_declarations(project, names, published)

    q = _in_gateway_context(resolver, {**BASE, "group_by": ["trial_arm"]})
    assert [f.name for f in q.study_fields] == ["trial_arm"]  # only what it names
    assert asked == [("p", {"trial_arm"})]
    with pytest.raises(pydantic.ValidationError, match="unknown field 'ecog'"):
        _in_gateway_context(resolver, {**BASE, "group_by": ["ecog"]})
    schema_only = _in_gateway_context(resolver, BASE)
    assert schema_only.study_fields == []


def test_sites_that_disagree_on_a_declaration_make_the_query_ambiguous() -> None:
    other = StudyField(name="trial_arm", kind="categorical", categories=["A", "B", "C"])
    published = {"oslo": [StudyField.model_validate(ARM)], "bergen": [other]}
    with pytest.raises(pydantic.ValidationError, match=r"differently \(bergen, oslo\)"):
        _in_gateway_context(
            lambda p, n: merge_declarations(p, n, published), {**BASE, "group_by": ["trial_arm"]}
        )
