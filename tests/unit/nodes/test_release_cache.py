"""Repeat-query defence at the node: a repeat gets the same numbers and costs nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.ledger import Ledger
from nodes.pipeline import handle
from nodes.store import NodeStore
from tests.conftest import make_work

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
        ],
    },
    "statistic": {"kind": "histogram", "field": "stage"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}

REWRITTEN: dict[str, Any] = {
    **COUNT,
    "cohort": {
        "op": "and",
        "args": [
            {"op": "<=", "field": "age_at_diagnosis", "value": 75},
            {
                "op": "and",
                "args": [
                    {"op": ">=", "field": "age_at_diagnosis", "value": 18.0},
                    {"op": "startswith", "field": "topography", "prefix": "C34"},
                ],
            },
        ],
    },
    "timeout_s": 30,
}


def test_repeat_returns_the_same_release_and_charges_nothing(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    first = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    again = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2"))
    rewritten = handle(node_ctx, make_work(gateway_key, REWRITTEN, query_id="q3"))
    assert first.status == again.status == rewritten.status == "ok"
    assert not first.cached and again.cached and rewritten.cached
    assert again.cells == first.cells == rewritten.cells
    assert again.charged.epsilon == 0.0 and first.charged.epsilon == pytest.approx(0.5)
    assert again.noise_scales == first.noise_scales and again.mechanism == first.mechanism
    assert "repeat of query q1" in again.message
    assert [c.query_id for c in node_ctx.ledger.charges()] == ["q1"]
    assert again.budget_remaining.amount == pytest.approx(9.5)
    assert [e.kind for e in node_ctx.store.events()].count("released_from_cache") == 2


def test_a_different_question_is_charged(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    other_eps = {**COUNT, "privacy": {"mode": "dp", "epsilon": 0.25}}
    other_cohort = {**COUNT, "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"}}
    a = handle(node_ctx, make_work(gateway_key, other_eps, query_id="q2"))
    b = handle(node_ctx, make_work(gateway_key, other_cohort, query_id="q3"))
    assert not a.cached and not b.cached
    assert node_ctx.ledger.spent("nsclc-feasibility") == pytest.approx(1.25)


def test_policy_is_checked_before_the_cache(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    """A project the site stops serving gets no answer, not even a cached one."""
    handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    pol = node_ctx.policy
    projects = {k: v for k, v in pol.projects.items() if k != "nsclc-feasibility"}
    node_ctx.set_policy(pol.model_copy(update={"projects": projects}))
    again = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2"))
    assert again.status == "policy_violation" and again.cells == []


def test_cache_survives_a_restart(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    first = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    node_ctx.ledger.close()
    node_ctx.store.close()
    restarted = NodeContext(
        site="oslo",
        data=node_ctx.data,
        ledger=Ledger.in_directory(tmp_path),
        store=NodeStore.in_directory(tmp_path),
        node_key=node_ctx.node_key,
        gateway_key=node_ctx.gateway_key,
        _policy=node_ctx.policy,
    )
    try:
        again = handle(restarted, make_work(gateway_key, COUNT, query_id="q2"))
        assert again.cached and again.cells == first.cells
        assert len(restarted.ledger.charges()) == 1
    finally:
        restarted.ledger.close()
        restarted.store.close()


def test_new_data_is_a_new_question(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    import dataclasses

    import numpy as np

    handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    cols = dict(node_ctx.data.columns)
    cols["age_at_diagnosis"] = np.asarray(cols["age_at_diagnosis"]).copy()
    cols["age_at_diagnosis"][0] = 50 if cols["age_at_diagnosis"][0] != 50 else 51
    node_ctx.data = dataclasses.replace(node_ctx.data, columns=cols)
    node_ctx._data_version = ""
    again = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2"))
    assert again.status == "ok" and not again.cached
    assert len(node_ctx.ledger.charges()) == 2
