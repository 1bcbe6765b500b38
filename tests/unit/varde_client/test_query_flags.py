"""``varde query`` flags build valid query documents, and refuse what they cannot mean."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from varde.query import parse_query, predicate_fields
from varde_client.query_flags import (
    QueryFlagError,
    QueryFlags,
    build_query,
    csv_list,
    number_list,
)

BASE = QueryFlags(project="nsclc-feasibility", epsilon=0.5)


@pytest.mark.parametrize(
    ("flags", "statistic"),
    [
        (BASE, {"kind": "count"}),
        (
            replace(BASE, statistic="histogram", field="stage"),
            {"kind": "histogram", "field": "stage"},
        ),
        (
            replace(BASE, statistic="histogram", field="age_at_diagnosis", bins="0,40,65.5,120"),
            {"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, 40, 65.5, 120]},
        ),
        (
            replace(BASE, statistic="mean", field="age_at_diagnosis", lower=18, upper=90),
            {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 90},
        ),
        (
            replace(
                BASE,
                statistic="quantile",
                field="age_at_diagnosis",
                bins="0,50,100",
                alphas="0.25,0.5",
            ),
            {
                "kind": "quantile",
                "field": "age_at_diagnosis",
                "candidates": [0, 50, 100],
                "alphas": [0.25, 0.5],
            },
        ),
        (
            replace(BASE, statistic="crosstab", field="stage, sex"),
            {"kind": "crosstab", "fields": ["stage", "sex"]},
        ),
        (
            replace(BASE, statistic="survival", months=24, interval=3),
            {"kind": "survival", "horizon_months": 24, "interval_months": 3},
        ),
    ],
)
def test_each_statistic_builds_a_valid_query(flags: QueryFlags, statistic: dict[str, Any]) -> None:
    query = build_query(flags)
    assert query["statistic"] == statistic
    parsed = parse_query(query)
    assert parsed.statistic.kind == statistic["kind"]


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ({"epsilon": 0.25}, {"mode": "dp", "epsilon": 0.25}),
        ({"rho": 0.01}, {"mode": "zcdp", "rho": 0.01}),
        ({"aggregate": True}, {"mode": "aggregate"}),
        ({"accuracy": 10.0}, {"mode": "dp", "accuracy": {"pm95": 10.0}}),
        ({"accuracy": 10.0, "zcdp": True}, {"mode": "zcdp", "accuracy": {"pm95": 10.0}}),
    ],
)
def test_privacy_flags(privacy: dict[str, Any], expected: dict[str, Any]) -> None:
    flags = QueryFlags(project="p", by="stage,sex", sites="oslo", **privacy)
    query = build_query(flags)
    assert query["privacy"] == expected
    assert query["group_by"] == ["stage", "sex"] and query["sites"] == ["oslo"]
    assert parse_query(query).privacy.mode == expected["mode"]


def test_survival_accuracy_takes_a_cohort_size() -> None:
    flags = QueryFlags(project="p", statistic="survival", accuracy=0.05, cohort_size=400)
    query = build_query(flags)
    assert query["privacy"] == {"mode": "dp", "accuracy": {"pm95": 0.05, "cohort_size": 400}}
    parse_query(query)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (QueryFlags(epsilon=1), "--project is needed"),
        (
            QueryFlags(project="p"),
            "give exactly one of --epsilon, --rho, --aggregate or --accuracy",
        ),
        (QueryFlags(project="p", epsilon=1, rho=0.1), "(given: --epsilon, --rho)"),
        (
            QueryFlags(project="p", epsilon=1, zcdp=True),
            "--zcdp and --cohort-size go with --accuracy",
        ),
        (
            replace(BASE, bins="1,2"),
            "--bins does not apply to --statistic count (it takes no options)",
        ),
        (
            replace(BASE, statistic="survival", field="stage"),
            "--field does not apply to --statistic survival",
        ),
        (replace(BASE, statistic="mean", field="age_at_diagnosis"), "needs --lower and --upper"),
        (replace(BASE, statistic="histogram"), "--statistic histogram needs --field"),
        (replace(BASE, statistic="funnel"), "write it in a query file"),
        (replace(BASE, statistic="median"), "--statistic 'median' is not known"),
        (
            replace(BASE, statistic="histogram", field="age_at_diagnosis", bins="0,,10"),
            "empty item",
        ),
        (
            replace(BASE, statistic="histogram", field="age_at_diagnosis", bins="0,ten"),
            "'ten' is not a number",
        ),
        (
            replace(BASE, statistic="histogram", field="age_at_diagnosis", bins="0,inf"),
            "not a finite",
        ),
        (replace(BASE, by="stage,"), "--by 'stage,' has an empty item"),
    ],
)
def test_flags_that_do_not_make_one_query_are_refused(flags: QueryFlags, message: str) -> None:
    with pytest.raises(QueryFlagError) as err:
        build_query(flags)
    assert message in str(err.value)


@given(st.lists(st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False),
                min_size=1, max_size=20))  # fmt: skip
def test_number_lists_read_back_exactly(numbers: list[int | float]) -> None:
    text = ",".join(repr(n) for n in numbers)
    read = number_list(text, "--bins")
    assert read == numbers
    assert [type(n) for n in read or []] == [type(n) for n in numbers]


@given(st.lists(st.text("abcdefghij_", min_size=1, max_size=8), min_size=1, max_size=6))
def test_csv_lists_read_back(items: list[str]) -> None:
    assert csv_list(" , ".join(items), "--by") == items
    assert csv_list(None, "--by") is None


def test_a_cohort_is_parsed_by_the_cohort_text_parser() -> None:
    pytest.importorskip("varde_client.cohort_text", reason="the cohort text parser is not in yet")
    query = build_query(
        replace(BASE, cohort="topography^=C34 and stage=IV and age_at_diagnosis in 18..75")
    )
    cohort = parse_query(query).cohort
    assert cohort is not None and cohort.op == "and"
    assert predicate_fields(cohort) == {"topography", "stage", "age_at_diagnosis"}
    with pytest.raises(QueryFlagError, match=r"^--cohort: .*'stag'"):
        build_query(replace(BASE, cohort="stag=IV"))


def test_unit_counts_patients_or_tumours() -> None:
    assert "unit" not in build_query(BASE)
    assert parse_query(build_query(replace(BASE, unit="patients"))).unit == "patients"
    assert build_query(replace(BASE, unit="tumours"))["unit"] == "tumours"
    with pytest.raises(QueryFlagError, match="--unit is patients or tumours"):
        build_query(replace(BASE, unit="people"))
