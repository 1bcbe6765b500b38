"""zCDP accounting per project: rho charged in its own ledger measure, Gaussian noise by OpenDP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData
from nodes.pipeline import handle
from nodes.policy import ProjectPolicy
from nodes.statistics import exact
from tests.conftest import make_work
from tests.unit.nodes.statistics.test_funnel import preview_work
from varde.query import parse_query

P = "nsclc-feasibility"


def query(i: int = 0, rho: float = 0.125, **extra: Any) -> dict[str, Any]:
    return {
        "project": P,
        "cohort": {"op": "<=", "field": "age_at_diagnosis", "value": 60 + i},
        "statistic": {"kind": "crosstab", "fields": ["cancer_type", "stage", "sex", "age_band"]},
        "privacy": {"mode": "zcdp", "rho": rho},
        **extra,
    }


def zcdp(ctx: NodeContext, rho_budget: float = 0.5, cap: float = 0.25) -> None:
    pol = ctx.policy
    proj = pol.projects[P].model_copy(
        update={"accounting": "zcdp", "rho_budget": rho_budget, "max_rho_per_query": cap}
    )
    ctx.set_policy(pol.model_copy(update={"projects": {**pol.projects, P: proj}}))


def test_zcdp_release_charges_rho_with_gaussian_noise_of_the_planned_scale(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, oslo_data: RegistryData
) -> None:
    zcdp(node_ctx)
    rel = handle(node_ctx, make_work(gateway_key, query(), query_id="z1"))
    assert rel.status == "ok", rel.message
    assert rel.mode == "zcdp" and rel.mechanism == "opendp.discrete_gaussian"
    assert rel.charged.rho == pytest.approx(0.125) and rel.charged.measure == "rho"
    # L2 sensitivity k = 3, rho = 0.125: scale = 3 / sqrt(2 * 0.125) = 6
    assert rel.noise_scales == {"count": pytest.approx(6.0)}
    (charge,) = node_ctx.ledger.charges()
    assert charge.measure == "rho" and charge.amount == pytest.approx(0.125)
    assert node_ctx.ledger.spent(P) == 0.0  # the epsilon account is untouched
    assert rel.budget_total.amount == 0.5 and rel.budget_remaining.amount == pytest.approx(0.375)
    q = parse_query(query())
    want = exact(oslo_data, evaluate(oslo_data, q.cohort), q).counts
    noise = np.array([c.value for c in rel.cells]) - want
    assert np.std(noise) == pytest.approx(6.0, rel=0.1)  # 1,944 cells
    inside = np.mean([c.ci_low <= w <= c.ci_high for c, w in zip(rel.cells, want, strict=True)])
    # OpenDP's discrete-Gaussian accuracy is conservative on the integer lattice (P(|X| > a) <= 5%),
    # so coverage is at least ~95% (sd of this fraction over 1,944 cells ~0.005) and may be higher
    assert 0.93 < inside <= 0.995


def test_rho_budget_is_enforced_and_repeats_are_free(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    zcdp(node_ctx, rho_budget=0.5, cap=0.25)
    statuses = [
        handle(node_ctx, make_work(gateway_key, query(i, rho=0.2), query_id=f"z{i}")).status
        for i in range(3)
    ]
    assert statuses == ["ok", "ok", "budget_exhausted"]
    again = handle(node_ctx, make_work(gateway_key, query(0, rho=0.2), query_id="again"))
    assert again.cached and again.mode == "zcdp" and again.charged.rho == 0.0
    assert node_ctx.ledger.spent(P, measure="rho") == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("setup", "body", "message"),
    [
        (True, {"privacy": {"mode": "dp", "epsilon": 0.5}}, "accounts in zcdp"),
        (False, {}, "accounts in epsilon"),
        (True, {"privacy": {"mode": "zcdp", "rho": 0.3}}, "above the per-query cap 0.25"),
    ],
)
def test_mode_must_match_the_projects_accounting(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    setup: bool,
    body: dict[str, Any],
    message: str,
) -> None:
    if setup:
        zcdp(node_ctx)
    rel = handle(node_ctx, make_work(gateway_key, {**query(), **body}))
    assert rel.status == "policy_violation" and message in rel.message
    assert node_ctx.ledger.charges() == []


def test_preview_prices_rho(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey) -> None:
    zcdp(node_ctx)
    pre = handle(node_ctx, preview_work(gateway_key, query(), "p1"))
    assert pre.status == "ok" and pre.mode == "zcdp"
    assert pre.planned.rho == pytest.approx(0.125) and pre.planned.measure == "rho"
    assert node_ctx.ledger.charges() == []


@pytest.mark.parametrize(
    ("privacy", "statistic", "message"),
    [
        ({"mode": "zcdp", "rho": 0}, None, "greater than 0"),
        ({"mode": "zcdp", "rho": -1}, None, "greater than 0"),
        ({"mode": "zcdp"}, None, "Field required"),
        ({"mode": "zcdp", "rho": float("inf")}, None, "finite number"),
        (
            {"mode": "zcdp", "rho": 0},
            {"kind": "mean", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
            "greater than 0",
        ),
    ],
)
def test_bad_zcdp_input(privacy: Any, statistic: Any, message: str) -> None:
    body = {**query(), "privacy": privacy}
    if statistic is not None:
        body["statistic"] = statistic
    with pytest.raises(ValidationError, match=message):
        parse_query(body)


def test_policy_needs_a_rho_cap_for_zcdp() -> None:
    with pytest.raises(ValidationError, match="needs max_rho_per_query"):
        ProjectPolicy(epsilon_budget=1, max_epsilon_per_query=1, accounting="zcdp", rho_budget=1)
    with pytest.raises(ValidationError, match="exceeds the whole rho_budget"):
        ProjectPolicy(
            epsilon_budget=1,
            max_epsilon_per_query=1,
            accounting="zcdp",
            rho_budget=0.1,
            max_rho_per_query=0.5,
        )
