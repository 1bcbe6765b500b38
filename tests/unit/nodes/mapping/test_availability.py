"""Fields a site lacks leave the policy in force, and the refusal names them."""

from __future__ import annotations

import pytest

from nodes.mapping.availability import restrict_policy
from nodes.policy import Policy, PrivacyUnit
from varde.errors import FieldNotAvailable
from varde.query import Query
from varde.terms import check_query


def test_a_query_reading_a_missing_field_is_refused_by_name() -> None:
    policy = Policy(
        site="oslo",
        privacy_unit=PrivacyUnit(max_tumours_per_patient=1),
        fields=["sex", "stage", "egfr"],
        statistics=["count"],
        projects={"p": {"epsilon_budget": 1.0, "max_epsilon_per_query": 0.5}},
    )
    restricted = restrict_policy(policy, {"stage", "region"})
    assert restricted.fields == ["sex", "egfr"] and restricted.version != policy.version
    assert restricted.manifest({}).fields == ["sex", "egfr"]
    query = Query.model_validate(
        {
            "project": "p",
            "cohort": {"op": "eq", "field": "stage", "value": "IV"},
            "statistic": {"kind": "count"},
            "privacy": {"mode": "dp", "epsilon": 0.1},
        }
    )
    check_query(policy.terms(), query)
    with pytest.raises(FieldNotAvailable) as err:
        check_query(restricted.terms(), query)
    assert err.value.fields == ["stage"] and "oslo" in err.value.message
