"""Strict inputs: a number given as a string or a boolean is an error naming it, never coerced.

``"epsilon": "0.5"`` used to be read as 0.5 and ``true`` charged as epsilon 1. Every
model at a boundary (queries, training jobs, policies) now refuses both, so a
careless client gets a clear 422 and nothing is charged anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nodes.policy import Policy
from varde.query import parse_query
from varde.training import TrainingSpec

QUERY: dict[str, Any] = {
    "project": "p",
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"privacy": {"mode": "dp", "epsilon": "0.5"}}, "epsilon"),
        ({"privacy": {"mode": "dp", "epsilon": True}}, "epsilon"),
        ({"privacy": {"mode": "zcdp", "rho": "0.1"}}, "rho"),
        ({"privacy": {"mode": "zcdp", "rho": False}}, "rho"),
        ({"timeout_s": "10"}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        (
            {"statistic": {"kind": "sum", "field": "age_at_diagnosis", "lower": "0", "upper": 9}},
            "lower",
        ),
        (
            {"statistic": {"kind": "histogram", "field": "age_at_diagnosis", "bins": [0, "5"]}},
            "bins",
        ),
        (
            {"cohort": {"op": "between", "field": "age_at_diagnosis", "low": "18", "high": 75}},
            "low",
        ),
        ({"cohort": {"op": ">=", "field": "age_at_diagnosis", "value": True}}, "value"),
    ],
)
def test_query_numbers_are_never_coerced(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_query({**QUERY, **change})
    assert where in str(err.value)


def test_integers_stay_numbers() -> None:
    """A whole number where a float is expected is a number, not a coercion."""
    assert parse_query({**QUERY, "privacy": {"mode": "dp", "epsilon": 1}}).budget is not None


@pytest.mark.parametrize(
    ("privacy", "extra", "where"),
    [
        ({"epsilon": "1.0"}, {}, "epsilon"),
        ({"epsilon": True}, {}, "epsilon"),
        ({"rho": 0.2, "clip": "1"}, {}, "clip"),
        ({"epsilon": 1.0}, {"rounds": "3"}, "rounds"),
        ({"epsilon": 1.0}, {"rounds": True}, "rounds"),
        ({"epsilon": 1.0}, {"learning_rate": "0.1"}, "learning_rate"),
    ],
)
def test_training_job_numbers_are_never_coerced(
    privacy: dict[str, Any], extra: dict[str, Any], where: str
) -> None:
    body = {"project": "p", "features": ["sex"], "rounds": 2, "privacy": privacy, **extra}
    with pytest.raises(ValidationError) as err:
        TrainingSpec.model_validate(body)
    assert where in str(err.value)


@pytest.mark.parametrize(
    ("project", "where"),
    [
        ({"epsilon_budget": "5", "max_epsilon_per_query": 1.0}, "epsilon_budget"),
        ({"epsilon_budget": True, "max_epsilon_per_query": 1.0}, "epsilon_budget"),
        ({"epsilon_budget": 5.0, "max_epsilon_per_query": "1"}, "max_epsilon_per_query"),
        (
            {"epsilon_budget": 5.0, "max_epsilon_per_query": 1.0, "aggregate_mode": "yes"},
            "aggregate",
        ),
        ({"epsilon_budget": 2e9, "max_epsilon_per_query": 1.0}, "epsilon_budget"),
    ],
)
def test_policy_values_are_never_coerced(project: dict[str, Any], where: str) -> None:
    body = {
        "site": "oslo",
        "privacy_unit": {"max_tumours_per_patient": 3},
        "fields": ["sex"],
        "statistics": ["count"],
        "projects": {"p": project},
    }
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(body)
    assert where in str(err.value)
