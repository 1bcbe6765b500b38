"""Policy hot reload in one process: valid edits apply, invalid ones are refused and audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.network import DEFAULT_POLICIES
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.reload import PolicyReloader
from tests.conftest import make_work

COUNT = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "oslo.yaml"
    path.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    return path


def test_valid_edit_is_put_in_force_and_audited(node_ctx: NodeContext, policy_file: Path) -> None:
    reloader = PolicyReloader(node_ctx, policy_file)
    assert reloader.check_once() == "unchanged"
    before = node_ctx.policy.version
    policy_file.write_text(
        policy_file.read_text().replace("epsilon_budget: 10.0", "epsilon_budget: 12.0")
    )
    assert reloader.check_once() == "reloaded"
    assert node_ctx.policy.projects["nsclc-feasibility"].epsilon_budget == 12.0
    (entry,) = node_ctx.store.events("policy_changed")
    assert entry.data["old_version"] == before
    assert entry.data["version"] == node_ctx.policy.version
    assert entry.data["changes"] == ["+ projects.nsclc-feasibility.epsilon_budget: 10 -> 12 (+2)"]
    assert "epsilon_budget: 12.0" in entry.data["text"]
    assert reloader.check_once() == "unchanged"


def test_invalid_edit_is_refused_and_the_old_policy_stays(
    node_ctx: NodeContext, policy_file: Path, gateway_key: Ed25519PrivateKey
) -> None:
    reloader = PolicyReloader(node_ctx, policy_file)
    in_force = node_ctx.policy
    policy_file.write_text(policy_file.read_text().replace("min_cell: 10", "min_cell: 2"))
    assert reloader.check_once() == "refused"
    assert node_ctx.policy is in_force
    (entry,) = node_ctx.store.events("policy_refused")
    assert entry.data["version_in_force"] == in_force.version
    assert any("aggregate.min_cell" in p and "below 5" in p for p in entry.data["problems"])
    assert handle(node_ctx, make_work(gateway_key, COUNT)).status == "ok"
    assert reloader.check_once() == "unchanged"  # refused once, not every interval


def test_lowering_the_per_patient_bound_needs_a_restart(
    node_ctx: NodeContext, policy_file: Path
) -> None:
    reloader = PolicyReloader(node_ctx, policy_file)
    policy_file.write_text(
        policy_file.read_text().replace("max_tumours_per_patient: 3", "max_tumours_per_patient: 1")
    )
    assert reloader.check_once() == "refused"
    assert node_ctx.policy.privacy_unit.max_tumours_per_patient == 3
    (entry,) = node_ctx.store.events("policy_refused")
    assert "restart the node" in entry.data["problems"][0]


def test_policy_for_another_site_is_refused(node_ctx: NodeContext, policy_file: Path) -> None:
    reloader = PolicyReloader(node_ctx, policy_file)
    policy_file.write_text(policy_file.read_text().replace("site: oslo", "site: bergen"))
    assert reloader.check_once() == "refused"
    assert node_ctx.policy.site == "oslo"


def test_removed_file_denies_everything(
    node_ctx: NodeContext, policy_file: Path, gateway_key: Ed25519PrivateKey
) -> None:
    reloader = PolicyReloader(node_ctx, policy_file)
    policy_file.unlink()
    assert reloader.check_once() == "denied"
    assert node_ctx.policy.projects == {}
    rel = handle(node_ctx, make_work(gateway_key, COUNT))
    assert rel.status == "policy_violation"
    assert node_ctx.ledger.charges() == []
    (entry,) = node_ctx.store.events("policy_changed")
    assert entry.data["reason"] == "policy file removed: deny everything"


def test_reload_keeps_the_ledger(
    node_ctx: NodeContext, policy_file: Path, gateway_key: Ed25519PrivateKey
) -> None:
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="a")).status == "ok"
    reloader = PolicyReloader(node_ctx, policy_file)
    policy_file.write_text(
        policy_file.read_text()
        .replace("epsilon_budget: 10.0", "epsilon_budget: 0.7")
        .replace("max_epsilon_per_query: 1.0", "max_epsilon_per_query: 0.5")
    )
    assert reloader.check_once() == "reloaded"
    # 0.5 already spent, 0.2 left of the new total: the next 0.5 cannot be paid
    rel = handle(
        node_ctx,
        make_work(
            gateway_key,
            {**COUNT, "cohort": {"op": "eq", "field": "sex", "value": "female"}},
            query_id="b",
        ),
    )
    assert rel.status == "budget_exhausted"
    assert node_ctx.ledger.spent("nsclc-feasibility") == pytest.approx(0.5)
