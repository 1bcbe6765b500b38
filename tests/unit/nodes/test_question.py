"""The one-line rendering of a question: never raises, names every field the query reads."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.question import (
    claimed_question,
    describe_cohort,
    describe_query,
    question_record,
)
from tests.unit.nodes.test_canonical import predicates
from varde.query import Query, parse_query

Json = dict[str, Any]

STATISTICS: list[Json] = [
    {"kind": "count"},
    {"kind": "sum", "field": "days_to_treatment", "lower": 0, "upper": 365},
    {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 90},
    {"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, 50, 70, 110]},
    {"kind": "histogram", "field": "stage"},
    {"kind": "crosstab", "fields": ["sex", "stage"]},
    {"kind": "quantile", "field": "age_at_diagnosis", "candidates": [0, 40, 60, 80, 110]},
    {"kind": "survival", "interval_months": 6, "horizon_months": 24},
]
PRIVACY: list[Json] = [
    {"mode": "dp", "epsilon": 0.5},
    {"mode": "zcdp", "rho": 0.02},
    {"mode": "aggregate"},
]


@st.composite
def queries(draw: st.DrawFn) -> Query:
    stat = draw(st.sampled_from(STATISTICS))
    if draw(st.booleans()):  # a funnel whose steps are predicate trees too
        steps = draw(st.lists(predicates(), min_size=1, max_size=3))
        stat = {
            "kind": "funnel",
            "steps": [{"label": f"step {i}", "criterion": c} for i, c in enumerate(steps)],
        }
    privacy = draw(st.sampled_from(PRIVACY))
    if stat["kind"] in ("quantile", "survival") and privacy["mode"] == "aggregate":
        privacy = PRIVACY[0]
    group_by = draw(st.sampled_from([[], ["region"], ["age_band", "grade"]]))
    spec: Json = {"project": "p", "statistic": stat, "privacy": privacy, "group_by": group_by}
    if draw(st.booleans()):
        spec["cohort"] = draw(predicates())
    return parse_query(spec)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_the_line_names_every_field_and_the_privacy(query: Query) -> None:
    text = describe_query(query)
    assert "\n" not in text
    words = set(re.findall(r"[a-z_0-9]+", text))
    assert query.fields_read() <= words, query.fields_read() - words
    budget = query.budget
    if budget is None:
        assert "aggregate" in text
    else:
        assert f"{budget.measure} {budget.amount:g}" in text


@settings(max_examples=300)
@given(predicates())
def test_every_predicate_tree_renders(tree: Json) -> None:
    query = parse_query(
        {"project": "p", "cohort": tree, "statistic": {"kind": "count"}, "privacy": PRIVACY[0]}
    )
    text = describe_cohort(query.cohort)
    # every leaf shows its field, and a connective never appears at either end
    assert query.fields_read() <= set(re.findall(r"[a-z_0-9]+", text))
    assert not re.match(r"^(and|or) |.* (and|or)$", text)
    assert text.count("(") == text.count(")")


def test_nested_connectives_are_parenthesised() -> None:
    query = parse_query(
        {
            "project": "p",
            "cohort": {
                "op": "and",
                "args": [
                    {"op": "eq", "field": "sex", "value": "female"},
                    {
                        "op": "or",
                        "args": [
                            {"op": "eq", "field": "stage", "value": "III"},
                            {"op": "eq", "field": "stage", "value": "IV"},
                        ],
                    },
                    {"op": "not", "arg": {"op": "in", "field": "egfr", "values": ["positive"]}},
                ],
            },
            "statistic": {"kind": "count"},
            "privacy": PRIVACY[0],
        }
    )
    assert describe_cohort(query.cohort) == (
        "sex = female and (stage = III or stage = IV) and not (egfr in {positive})"
    )


def test_long_lists_are_counted_not_spelled_out() -> None:
    values = [f"C{n:02d}.{d}" for n in range(0, 4) for d in range(10)]
    query = parse_query(
        {
            "project": "p",
            "cohort": {"op": "in", "field": "topography", "values": values},
            "statistic": {"kind": "count"},
            "privacy": PRIVACY[0],
        }
    )
    text = describe_cohort(query.cohort)
    assert "(40 in all)" in text and "C03.9" not in text and len(text) < 120


def test_the_record_carries_the_canonical_json_without_the_timeout() -> None:
    spec = {"project": "p", "statistic": {"kind": "count"}, "privacy": PRIVACY[1], "timeout_s": 5}
    record = question_record(parse_query(spec))
    assert record["question"] == {
        "project": "p",
        "statistic": {"kind": "count"},
        "privacy": {"mode": "zcdp", "rho": 0.02},
        "group_by": [],
    }
    assert record["summary"] == "count; rho 0.02 (zcdp)"


@pytest.mark.parametrize("raw", [None, "text", {"project": "p"}, [1, 2]])
def test_a_claimed_question_that_does_not_validate_is_kept_as_sent(raw: object) -> None:
    record = claimed_question(raw)
    assert record["summary"] == ""
    assert record["question"] == (raw if isinstance(raw, dict) else str(raw))
