"""Budgets that renew per period: each period is its own ledger account, the node enforces it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.periods import period_key
from nodes.pipeline import handle
from tests.conftest import make_work


def query(i: int, epsilon: float = 1.0) -> dict[str, Any]:
    # distinct questions: a repeat would be served from the release cache for free
    return {
        "project": "nsclc-feasibility",
        "cohort": {"op": "<=", "field": "age_at_diagnosis", "value": 30 + i},
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": epsilon},
    }


def monthly(ctx: NodeContext, budget: float) -> None:
    pol = ctx.policy
    proj = pol.projects["nsclc-feasibility"].model_copy(
        update={"budget_period": "month", "epsilon_budget": budget}
    )
    ctx.set_policy(pol.model_copy(update={"projects": {**pol.projects, "nsclc-feasibility": proj}}))


def test_monthly_budget_renews_next_month(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    monthly(node_ctx, 2.0)
    node_ctx.clock = lambda: dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)
    releases = [
        handle(node_ctx, make_work(gateway_key, query(i), query_id=f"n{i}")) for i in range(3)
    ]
    assert [r.status for r in releases] == ["ok", "ok", "budget_exhausted"]
    # the refusal says what is left, when the budget renews and whom to ask (the policy's contact)
    said = releases[2].message
    assert "remaining 0.0 of 2.0" in said and "the budget renews on 2026-12-01" in said, said
    assert "ask the Oslo registry team, registry@oslo.example" in said, said
    assert node_ctx.remaining()["nsclc-feasibility"].epsilon == 0.0
    node_ctx.clock = lambda: dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC)
    assert node_ctx.remaining()["nsclc-feasibility"].epsilon == pytest.approx(2.0)
    rel = handle(node_ctx, make_work(gateway_key, query(9), query_id="d1"))
    assert rel.status == "ok" and rel.budget_remaining.amount == pytest.approx(1.0)
    assert node_ctx.ledger.spent("nsclc-feasibility", period="2026-11") == pytest.approx(2.0)
    assert node_ctx.ledger.spent("nsclc-feasibility", period="2026-12") == pytest.approx(1.0)
    assert node_ctx.ledger.spent("nsclc-feasibility") == 0.0  # the lifetime account is untouched
    assert {c.period for c in node_ctx.ledger.charges()} == {"2026-11", "2026-12"}


def test_preview_reads_the_current_period(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    monthly(node_ctx, 1.0)
    node_ctx.clock = lambda: dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    handle(node_ctx, make_work(gateway_key, query(0), query_id="m1"))
    from tests.unit.nodes.statistics.test_funnel import preview_work

    pre = handle(node_ctx, preview_work(gateway_key, query(1), "p1"))
    assert pre.status == "budget_exhausted" and pre.budget_remaining.amount == 0.0
    node_ctx.clock = lambda: dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    pre = handle(node_ctx, preview_work(gateway_key, query(1), "p2"))
    assert pre.status == "ok" and pre.budget_remaining.amount == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("period", "when", "key"),
    [
        ("quarter", dt.datetime(2026, 3, 31, 23, 59, tzinfo=dt.UTC), "2026-Q1"),
        ("quarter", dt.datetime(2026, 4, 1, tzinfo=dt.UTC), "2026-Q2"),
        ("year", dt.datetime(2027, 1, 1, tzinfo=dt.UTC), "2027"),
        # calendar periods are UTC: 00:30 in Oslo on 1 January is still last year in UTC
        ("year", dt.datetime(2027, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2026"),
    ],
)
def test_period_keys(period: Any, when: dt.datetime, key: str) -> None:
    assert period_key(period, when) == key


def test_unknown_period_is_a_policy_error() -> None:
    from pydantic import ValidationError

    from nodes.policy import ProjectPolicy

    with pytest.raises(ValidationError, match="budget_period"):
        ProjectPolicy(epsilon_budget=1, max_epsilon_per_query=1, budget_period="fortnight")  # type: ignore[arg-type]
