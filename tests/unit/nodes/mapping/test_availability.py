"""Fields a site lacks leave the policy in force, and the refusal names them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.data import RegistryData
from nodes.mapping.availability import restrict_policy
from nodes.policy import Policy, PrivacyUnit, ProjectPolicy
from varde.errors import FieldNotAvailable
from varde.query import Query
from varde.terms import check_query


def test_a_query_reading_a_missing_field_is_refused_by_name() -> None:
    policy = Policy(
        site="oslo",
        privacy_unit=PrivacyUnit(max_tumours_per_patient=1),
        fields=["sex", "stage", "egfr"],
        statistics=["count"],
        projects={"p": ProjectPolicy(epsilon_budget=1.0, max_epsilon_per_query=0.5)},
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


def test_a_node_without_a_field_refuses_it_and_keeps_refusing_after_a_reload(
    tmp_path: Path, oslo_data: RegistryData, oslo_policy: Policy, gateway_key: Ed25519PrivateKey
) -> None:
    from launcher.network import DEFAULT_POLICIES
    from nodes.context import NodeContext
    from nodes.ledger import Ledger
    from nodes.pipeline import handle
    from nodes.reload import PolicyReloader
    from nodes.store import NodeStore
    from tests.conftest import make_work
    from varde.crypto import generate_key, public_key_b64

    folder = tmp_path
    data = dataclasses.replace(oslo_data, not_available=frozenset({"egfr"}))
    ctx = NodeContext(
        site="oslo",
        data=data,
        ledger=Ledger.in_directory(folder),
        store=NodeStore.in_directory(folder),
        node_key=generate_key(),
        gateway_key=public_key_b64(gateway_key),
        _policy=oslo_policy,
    )
    query: dict[str, object] = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "eq", "field": "egfr", "value": "positive"},
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    try:
        assert "egfr" not in ctx.policy.fields and "egfr" not in ctx.policy.manifest({}).fields
        refused = handle(ctx, make_work(gateway_key, query))
        assert refused.status == "field_not_available" and "egfr" in refused.message
        policy_file = folder / "oslo.yaml"
        policy_file.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
        reloader = PolicyReloader(ctx, policy_file)
        policy_file.write_text(policy_file.read_text().replace("10.0", "11.0", 1))
        assert reloader.check_once() == "reloaded"
        assert "egfr" not in ctx.policy.fields
        again = handle(ctx, make_work(gateway_key, query, query_id="q2"))
        assert again.status == "field_not_available"
        sex = {**query, "cohort": {"op": "eq", "field": "sex", "value": "female"}}
        assert handle(ctx, make_work(gateway_key, sex, query_id="q3")).status == "ok"
    finally:
        ctx.ledger.close()
        ctx.store.close()
