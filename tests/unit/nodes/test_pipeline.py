"""The node pipeline: verifies, checks its own policy, charges before releasing, refuses clearly."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.pipeline import handle
from tests.conftest import make_work
from varde.crypto import generate_key
from varde.envelope import SignedEnvelope, utcnow

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def spent(ctx: NodeContext, project: str = "nsclc-feasibility") -> float:
    return ctx.ledger.spent(project)


def test_release_is_charged_signed_shape(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    rel = handle(node_ctx, make_work(gateway_key, COUNT))
    assert rel.status == "ok", rel.message
    assert rel.charged.epsilon == pytest.approx(0.5)
    assert spent(node_ctx) == pytest.approx(0.5)
    assert rel.budget_remaining.amount == pytest.approx(9.5)
    assert rel.mechanism == "opendp.discrete_laplace"
    assert rel.noise_scales == {"count": pytest.approx(3 / 0.5)}
    (cell,) = rel.cells
    assert cell.ci_low < cell.value < cell.ci_high
    kinds = [e.kind for e in node_ctx.store.events()]
    assert kinds == ["work_received", "charged", "released"]  # the charge has its own entry


def test_project_not_in_policy_is_refused_even_if_gateway_signed_it(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    """A compromised gateway signs work for a project this site never agreed to serve."""
    rel = handle(node_ctx, make_work(gateway_key, {**COUNT, "project": "rogue-project"}))
    assert rel.status == "policy_violation"
    assert "does not serve project 'rogue-project'" in rel.message
    assert rel.cells == []
    assert node_ctx.ledger.charges() == []
    assert [e.kind for e in node_ctx.store.events()][-1] == "policy_violation"


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            {"privacy": {"mode": "dp", "epsilon": 1.5}},
            "policy_violation",
            "above the per-query cap",
        ),
        (
            {"cohort": {"op": "eq", "field": "country", "value": "NO"}},
            "field_not_available",
            "expose field(s) country",
        ),
        ({"privacy": {"mode": "aggregate"}}, "policy_violation", "aggregate mode"),
        ({"privacy": {"mode": "dp", "epsilon": -1}}, "invalid_query", "greater than 0"),
        ({"statistic": {"kind": "median"}}, "invalid_query", "statistic needs a kind: count"),
    ],
)
def test_refusals_charge_nothing(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    change: dict[str, Any],
    status: str,
    message: str,
) -> None:
    rel = handle(node_ctx, make_work(gateway_key, {**COUNT, **change}))
    assert rel.status == status
    assert message in rel.message
    assert node_ctx.ledger.charges() == []


def test_forged_signature(node_ctx: NodeContext) -> None:
    rel = handle(node_ctx, make_work(generate_key(), COUNT))
    assert rel.status == "envelope_rejected"
    assert rel.message.startswith("forged")
    assert node_ctx.ledger.charges() == []
    assert node_ctx.store.events("envelope_rejected")


def test_replayed_work_is_refused_and_not_charged_twice(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    env = make_work(gateway_key, COUNT)
    assert handle(node_ctx, env).status == "ok"
    again = handle(node_ctx, env)
    assert again.status == "envelope_rejected" and again.message.startswith("replayed")
    assert spent(node_ctx) == pytest.approx(0.5)


def test_misaddressed_and_expired(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey) -> None:
    rel = handle(node_ctx, make_work(gateway_key, COUNT, site="bergen"))
    assert rel.message.startswith("misaddressed")
    rel = handle(node_ctx, make_work(gateway_key, COUNT, ttl=0.001))
    assert rel.message.startswith("expired")
    assert node_ctx.ledger.charges() == []


def test_expiry_rechecked_before_charging(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    env = make_work(gateway_key, COUNT, ttl=5)
    late = utcnow() + dt.timedelta(seconds=10)  # the item sat in the node's queue past its expiry
    rel = handle(node_ctx, env, now=late)
    assert rel.status == "envelope_rejected" and "before it could be charged" in rel.message
    assert node_ctx.ledger.charges() == []


def test_budget_exhaustion(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey) -> None:
    def query(i: int) -> dict[str, Any]:
        # distinct questions: a repeat would be served from the release cache for free
        age = {"op": "<=", "field": "age_at_diagnosis", "value": 80 + i}
        cohort = {"op": "and", "args": [COUNT["cohort"], age]}
        return {**COUNT, "cohort": cohort, "privacy": {"mode": "dp", "epsilon": 1.0}}

    statuses = [
        handle(node_ctx, make_work(gateway_key, query(i), query_id=f"q{i}")).status
        for i in range(12)
    ]
    assert statuses == ["ok"] * 10 + ["budget_exhausted"] * 2
    assert spent(node_ctx) == pytest.approx(10.0)


def test_aggregate_mode_where_policy_allows(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    query = {
        "project": "breast-outcomes",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "breast"},
        "statistic": {"kind": "histogram", "field": "stage"},
        "privacy": {"mode": "aggregate"},
    }
    rel = handle(node_ctx, make_work(gateway_key, query))
    assert rel.status == "ok" and rel.mode == "aggregate"
    assert rel.charged is None and node_ctx.ledger.charges() == []
    assert all(c.status == "suppressed" or c.value == int(c.value) for c in rel.cells)


def test_garbage_payload(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey) -> None:
    env = make_work(gateway_key, COUNT)
    broken = SignedEnvelope(payload=env.payload[:-5], signature=env.signature)
    rel = handle(node_ctx, broken)
    assert rel.status == "envelope_rejected"
