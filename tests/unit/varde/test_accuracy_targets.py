"""The wire shape of an accuracy target, strict, and the one terms check on it (gateway side)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from varde.budget import ZCDP, PureDP
from varde.errors import BudgetExhausted, PolicyViolation
from varde.query import AccuracyTarget, DPAccuracy, ZCDPAccuracy, parse_query
from varde.release import Manifest, ProjectTerms
from varde.terms import check_query

P = "p"


def q(privacy: dict[str, Any], statistic: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"project": P, "statistic": statistic or {"kind": "count"}, "privacy": privacy}


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as err:
        parse_query(body)
    return str(err.value)


def test_an_accuracy_target_asks_no_budget_and_resolves_in_its_modes_measure() -> None:
    dp = parse_query(q({"mode": "dp", "accuracy": {"pm95": 10}}))
    assert isinstance(dp.privacy, DPAccuracy) and dp.budget is None
    assert dp.accuracy == AccuracyTarget(pm95=10.0)
    assert dp.resolved(PureDP(0.3)).budget == PureDP(0.3)
    zcdp = parse_query(q({"mode": "zcdp", "accuracy": {"pm95": 10}}))
    assert isinstance(zcdp.privacy, ZCDPAccuracy) and zcdp.resolved(ZCDP(0.1)).budget == ZCDP(0.1)
    with pytest.raises(TypeError, match="cannot be asked with rho"):
        dp.resolved(ZCDP(0.1))
    assert parse_query(q({"mode": "dp", "epsilon": 0.5})).accuracy is None


@pytest.mark.parametrize(
    ("privacy", "words"),
    [
        ({"mode": "dp", "accuracy": {"pm95": "10"}}, "Input should be a valid number"),
        ({"mode": "dp", "accuracy": {"pm95": True}}, "Input should be a valid number"),
        ({"mode": "dp", "accuracy": {"pm95": math.nan}}, "finite number"),
        ({"mode": "dp", "accuracy": {"pm95": math.inf}}, "finite number"),
        ({"mode": "dp", "accuracy": {"pm95": -1}}, "greater than 0"),
        ({"mode": "dp", "accuracy": {"pm95": 0}}, "greater than 0"),
        ({"mode": "dp", "accuracy": {}}, "Field required"),
        ({"mode": "dp", "accuracy": 10}, "valid dictionary"),
        ({"mode": "dp", "accuracy": {"pm95": 10, "pm99": 3}}, "Extra inputs"),
        (
            {"mode": "dp", "epsilon": 0.5, "accuracy": {"pm95": 10}},
            "give exactly one of privacy.epsilon or privacy.accuracy",
        ),
        (
            {"mode": "zcdp", "rho": 0.1, "accuracy": {"pm95": 10}},
            "give exactly one of privacy.rho or privacy.accuracy",
        ),
        ({"mode": "dp"}, "give privacy.epsilon or privacy.accuracy"),
        ({"mode": "zcdp"}, "give privacy.rho or privacy.accuracy"),
        ({"mode": "aggregate", "accuracy": {"pm95": 10}}, "Extra inputs"),
    ],
)
def test_strict_inputs_are_refused_with_a_clear_message(
    privacy: dict[str, Any], words: str
) -> None:
    assert words in refusal(q(privacy))


@pytest.mark.parametrize(
    ("statistic", "accuracy", "words"),
    [
        (
            {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
            {"pm95": 1},
            "accepted for count, histogram, crosstab, funnel, sum, survival, not for a mean",
        ),
        (
            {"kind": "quantile", "field": "age_at_diagnosis", "candidates": [0, 50, 100]},
            {"pm95": 1},
            "not for a quantile: its error depends on the data",
        ),
        ({"kind": "survival"}, {"pm95": 0.05}, "needs 'cohort_size'"),
        ({"kind": "survival"}, {"pm95": 1.5, "cohort_size": 100}, "must be below 1"),
        ({"kind": "survival"}, {"pm95": 0.05, "cohort_size": 0}, "greater than or equal to 1"),
        ({"kind": "survival"}, {"pm95": 0.05, "cohort_size": 10.5}, "valid integer"),
        ({"kind": "count"}, {"pm95": 5, "cohort_size": 100}, "for survival targets only"),
    ],
)
def test_targets_a_statistic_cannot_honour_are_refused(
    statistic: dict[str, Any], accuracy: dict[str, Any], words: str
) -> None:
    assert words in refusal(q({"mode": "dp", "accuracy": accuracy}, statistic))


@given(
    pm95=st.floats(min_value=1e-6, max_value=1e12, allow_nan=False),
    mode=st.sampled_from(["dp", "zcdp"]),
)
def test_any_positive_finite_target_round_trips_through_json(pm95: float, mode: str) -> None:
    query = parse_query(q({"mode": mode, "accuracy": {"pm95": pm95}}))
    again = parse_query(json.loads(query.model_dump_json(exclude_none=True)))
    assert again == query and again.accuracy is not None and again.accuracy.pm95 == pm95


@given(bad=st.one_of(st.text(), st.booleans(), st.none(), st.lists(st.integers())))
def test_a_target_that_is_not_a_number_is_refused(bad: Any) -> None:
    with pytest.raises(ValidationError):
        parse_query(q({"mode": "dp", "accuracy": {"pm95": bad}}))


def manifest(accounting: str = "epsilon", remaining: float | None = None) -> Manifest:
    make = ZCDP if accounting == "zcdp" else PureDP
    return Manifest(
        site="oslo",
        fields=["topography", "stage"],
        statistics=["count"],
        projects={
            P: ProjectTerms(
                accounting=accounting,  # type: ignore[arg-type]
                budget=make(10.0),
                max_per_query=make(0.01),
                remaining=None if remaining is None else make(remaining),
            )
        },
    )


def test_the_gateway_check_passes_a_target_without_knowing_the_sites_epsilon() -> None:
    """The cap (0.01 here) is the node's to check: only it knows the least budget."""
    query = parse_query(q({"mode": "dp", "accuracy": {"pm95": 1}}))
    assert check_query(manifest(), query).accounting == "epsilon"
    assert check_query(manifest(remaining=5.0), query).accounting == "epsilon"


def test_the_gateway_check_refuses_a_target_in_the_wrong_mode_or_with_nothing_left() -> None:
    dp = parse_query(q({"mode": "dp", "accuracy": {"pm95": 1}}))
    with pytest.raises(PolicyViolation, match=r'accounts in zcdp .*"mode": "zcdp", "accuracy"'):
        check_query(manifest("zcdp"), dp)
    with pytest.raises(BudgetExhausted, match="has no epsilon left at 'oslo'"):
        check_query(manifest(remaining=0.0), dp)
