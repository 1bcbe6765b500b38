"""Each pipeline step alone, one policy snapshot per item, faults that leave the node serving."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes import pipeline
from nodes.accounts import Account, reconcile
from nodes.context import NodeContext
from nodes.pipeline import PIPELINE, WorkState, handle, run
from nodes.policy import Policy
from tests.conftest import make_work
from varde.budget import PureDP
from varde.envelope import utcnow
from varde.errors import EnvelopeRejected, PolicyViolation

P = "nsclc-feasibility"
COUNT: dict[str, Any] = {
    "project": P,
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def state(ctx: NodeContext, key: Ed25519PrivateKey, query: dict[str, Any], **kw: Any) -> WorkState:
    return WorkState(envelope=make_work(key, query, **kw), policy=ctx.policy)


def through(ctx: NodeContext, item: WorkState, last: str) -> None:
    """Run the steps up to and including ``last`` (none may end the item early)."""
    for step in PIPELINE:
        assert step(ctx, item) is None, step.__name__
        if step.__name__ == last:
            return
    raise AssertionError(f"no step {last}")


def test_verify_parse_authorise_fill_the_state(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    item = state(node_ctx, gateway_key, COUNT)
    pipeline.verify(node_ctx, item)
    assert item.payload is not None and item.work is None
    pipeline.parse(node_ctx, item)
    assert item.question.budget == PureDP(0.5)
    pipeline.authorise(node_ctx, item)
    assert item.terms is node_ctx.policy.projects[P]
    rogue = state(node_ctx, gateway_key, {**COUNT, "project": "rogue"}, query_id="q2")
    pipeline.verify(node_ctx, rogue)
    pipeline.parse(node_ctx, rogue)
    with pytest.raises(PolicyViolation, match="does not serve project 'rogue'"):
        pipeline.authorise(node_ctx, rogue)
    assert node_ctx.ledger.charges() == []


def test_price_then_charge_then_release_then_audit(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    item = state(node_ctx, gateway_key, COUNT)
    through(node_ctx, item, "price_step")
    assert item.priced.cost == PureDP(0.5) and node_ctx.ledger.charges() == []
    pipeline.expiry(node_ctx, item)
    pipeline.charge(node_ctx, item)
    assert item.charge is not None and item.charge.cost == PureDP(0.5)
    (charged,) = node_ctx.store.events("charged")
    assert charged.data["what"] == "query" and charged.data["amount"] == 0.5
    assert item.cells == []  # nothing released yet: the charge came first
    pipeline.release(node_ctx, item)
    assert len(item.cells) == 1
    rel = pipeline.audit(node_ctx, item)
    assert rel.status == "ok" and rel.charged == PureDP(0.5)
    assert rel.budget_remaining == PureDP(9.5)
    # the cache step now finds the release for a repeat
    again = state(node_ctx, gateway_key, COUNT, query_id="q2")
    through(node_ctx, again, "cache")
    assert again.cached is not None and again.cached.cells == item.cells


def test_expiry_step_refuses_a_late_item_before_the_charge(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    item = state(node_ctx, gateway_key, COUNT, ttl=5)
    through(node_ctx, item, "price_step")
    item.now = utcnow() + dt.timedelta(seconds=10)
    with pytest.raises(EnvelopeRejected, match="before it could be charged"):
        pipeline.expiry(node_ctx, item)
    assert node_ctx.ledger.charges() == []


def test_one_policy_snapshot_from_first_step_to_last(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    """A policy reload while an item is in flight applies to the next item, not half of this."""

    def reload_mid_item(ctx: NodeContext, _item: WorkState) -> None:
        ctx.set_policy(Policy.deny_all(ctx.site))  # staff withdraw everything right now

    steps = list(PIPELINE)
    steps.insert(steps.index(pipeline.authorise) + 1, reload_mid_item)
    item = state(node_ctx, gateway_key, COUNT)
    rel = run(node_ctx, item, steps)
    assert rel.status == "ok", rel.message
    assert rel.charged == PureDP(0.5)
    # the next item sees the new policy
    nxt = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2"))
    assert nxt.status == "policy_violation"


@pytest.mark.parametrize("step", [s.__name__ for s in PIPELINE] + ["audit"])
def test_a_fault_in_any_step_is_answered_audited_and_the_node_goes_on(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("injected fault")

    with monkeypatch.context() as patch:
        steps = [broken if s.__name__ == step else s for s in PIPELINE]
        patch.setattr(pipeline, "PIPELINE", tuple(steps))
        if step == "audit":
            patch.setattr(pipeline, "audit", broken)
        rel = handle(node_ctx, make_work(gateway_key, COUNT, query_id="bad"))
    assert rel.status == "error" and rel.message == "internal error at the site"
    assert rel.cells == []
    assert [e.query_id for e in node_ctx.store.events("error")] == ["bad"]
    ok = handle(node_ctx, make_work(gateway_key, COUNT, query_id="next"))
    assert ok.status == "ok", ok.message
    assert ok.cached is (step == "audit")  # a fault after the release left it cached


def test_reconcile_audits_a_charge_whose_entry_was_lost(node_ctx: NodeContext) -> None:
    account = Account.of(P, node_ctx.policy.projects[P])
    account.pay(node_ctx.ledger, node_ctx.store, cost=PureDP(0.1), query_id="a", what="query")
    # a crash between the ledger's commit and the audit entry
    node_ctx.ledger.charge(project=P, cost=PureDP(0.2), total=account.total, query_id="b")
    assert reconcile(node_ctx.ledger, node_ctx.store) == 1
    assert reconcile(node_ctx.ledger, node_ctx.store) == 0
    entries = {e.query_id: e.data for e in node_ctx.store.events("charged")}
    assert entries["b"]["recovered"] is True and entries["b"]["amount"] == 0.2
    assert sum(e["amount"] for e in entries.values()) == pytest.approx(node_ctx.ledger.spent(P))
    assert node_ctx.store.verify().ok
