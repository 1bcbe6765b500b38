"""Policies: the demo policies are valid; each kind of bad policy fails naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from launcher.network import DEFAULT_POLICIES
from nodes.policy import Policy
from nodes.policy_check import PolicyError, load_policy
from varde.errors import BudgetExhausted, PolicyViolation
from varde.query import parse_query

GOOD = {
    "site": "testsite",
    "privacy_unit": {"max_tumours_per_patient": 2},
    "fields": ["sex", "stage"],
    "statistics": ["count"],
    "projects": {"p1": {"epsilon_budget": 2.0, "max_epsilon_per_query": 0.5}},
}


@pytest.mark.parametrize("site", ["oslo", "bergen", "trondheim"])
def test_demo_policies_are_valid(site: str) -> None:
    policy = load_policy(DEFAULT_POLICIES / f"{site}.yaml", site=site)
    assert policy.site == site
    assert policy.projects


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"fields": ["sex", "shoe"]}, "unknown field 'shoe'"),
        ({"fields": ["patient_id"]}, "identifier and can never be exposed"),
        ({"statistics": ["count", "median"]}, "statistics.1"),
        ({"privacy_unit": {"max_tumours_per_patient": 0}}, "max_tumours_per_patient"),
        (
            {"projects": {"p1": {"epsilon_budget": -1, "max_epsilon_per_query": 0.5}}},
            "epsilon_budget",
        ),
        (
            {"projects": {"p1": {"epsilon_budget": 1, "max_epsilon_per_query": 2}}},
            "exceeds the whole",
        ),
        ({"projects": {"p1": {"epsilon_budget": 100, "max_epsilon_per_query": 50}}}, "development"),
        ({"aggregate": {"allowed": True, "min_cell": 2}}, "below 5"),
        ({"site": "Bad Site"}, "site"),
    ],
)
def test_bad_policies_name_the_problem(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(_write(tmp_path, {**GOOD, **change}))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_development_profile_allows_tiny_cells(tmp_path: Path) -> None:
    data = {**GOOD, "profile": "development", "aggregate": {"allowed": True, "min_cell": 1}}
    assert load_policy(_write(tmp_path, data)).aggregate.min_cell == 1


def test_missing_policy_denies_everything(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "absent.yaml", site="ghost")
    assert policy == Policy.deny_all("ghost")
    query = parse_query(
        {"project": "p1", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 0.1}}
    )
    with pytest.raises(PolicyViolation, match="does not serve project 'p1'"):
        policy.authorize(query, researcher="alice")


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("site: [unclosed")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ({"project": "other"}, PolicyViolation, "does not serve project 'other'"),
        (
            {"statistic": {"kind": "histogram", "field": "stage"}},
            PolicyViolation,
            "statistic 'histogram'",
        ),
        (
            {"cohort": {"op": "eq", "field": "egfr", "value": "positive"}},
            PolicyViolation,
            "expose field(s) egfr",
        ),
        (
            {"privacy": {"mode": "dp", "epsilon": 0.6}},
            PolicyViolation,
            "above the per-query cap 0.5",
        ),
        ({"privacy": {"mode": "aggregate"}}, PolicyViolation, "aggregate mode"),
    ],
)
def test_authorize_refusals(query: dict[str, object], error: type[Exception], message: str) -> None:
    policy = Policy.model_validate(GOOD)
    base = {
        "project": "p1",
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    with pytest.raises(error) as info:
        policy.authorize(parse_query({**base, **query}), researcher="alice")
    assert message in str(info.value)


def test_zero_budget_is_budget_exhausted() -> None:
    policy = Policy.model_validate(
        {**GOOD, "projects": {"p1": {"epsilon_budget": 0, "max_epsilon_per_query": 0.5}}}
    )
    query = parse_query(
        {"project": "p1", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 0.5}}
    )
    with pytest.raises(BudgetExhausted):
        policy.authorize(query, researcher="alice")


def test_researcher_restriction() -> None:
    policy = Policy.model_validate(
        {
            **GOOD,
            "projects": {
                "p1": {"epsilon_budget": 1, "max_epsilon_per_query": 0.5, "researchers": ["bob"]}
            },
        }
    )
    query = parse_query(
        {"project": "p1", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 0.5}}
    )
    with pytest.raises(PolicyViolation, match="'alice' is not allowed"):
        policy.authorize(query, researcher="alice")
    assert policy.authorize(query, researcher="bob").epsilon_budget == 1


def test_query_limits_of_a_site() -> None:
    """A site's limits refuse too fine a survival grid and too many cells, saying which."""
    policy = Policy.model_validate(
        {
            **GOOD,
            "fields": ["sex", "stage", "age_at_diagnosis", "vital_status", "survival_days"],
            "statistics": ["count", "survival", "crosstab"],
            "limits": {"min_survival_interval_months": 3, "max_cells": 100},
        }
    )
    base = {"project": "p1", "privacy": {"mode": "dp", "epsilon": 0.5}}

    def ask(statistic: dict[str, object]) -> None:
        policy.authorize(parse_query({**base, "statistic": statistic}), researcher="alice")

    ask({"kind": "survival", "interval_months": 3, "horizon_months": 36})  # 2 x 12 + 1 = 25
    with pytest.raises(PolicyViolation, match="intervals of 1 month"):
        ask({"kind": "survival", "interval_months": 1, "horizon_months": 12})
    with pytest.raises(PolicyViolation, match="would release 121 numbers .* at most 100"):
        ask({"kind": "survival", "interval_months": 3, "horizon_months": 180})
    ask({"kind": "crosstab", "fields": ["sex", "stage"]})
    with pytest.raises(ValidationError, match="min_survival_interval_months"):
        Policy.model_validate({**GOOD, "limits": {"min_survival_interval_months": 0}})
    with pytest.raises(ValidationError, match="max_cells"):
        Policy.model_validate({**GOOD, "limits": {"max_cells": 10**6}})
