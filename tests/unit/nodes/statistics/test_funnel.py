"""Feasibility funnel: exact attrition, OpenDP-composed epsilon, noise scale, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions
from nodes.pipeline import handle
from nodes.statistics import exact, plan
from nodes.statistics.base import Exact
from tests.conftest import make_work
from varde.budget import PureDP
from varde.query import Funnel, Query, parse_query

STEPS = [
    {"label": "lung", "criterion": {"op": "startswith", "field": "topography", "prefix": "C34"}},
    {"label": "stage IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
    {"label": "EGFR+", "criterion": {"op": "eq", "field": "egfr", "value": "positive"}},
    {
        "label": "age 18-75",
        "criterion": {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
    },
]
FUNNEL: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "statistic": {"kind": "funnel", "steps": STEPS},
    "privacy": {"mode": "dp", "epsilon": 1.0},
}


def exact_attrition(frame: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    masks = [
        frame.topography.astype(str).str.startswith("C34"),
        frame.stage == "IV",
        frame.egfr == "positive",
        frame.age_at_diagnosis.between(18, 75),
    ]
    alive = pd.Series(True, index=frame.index)
    out = {}
    for step, m in zip(STEPS, masks, strict=True):
        alive &= m.fillna(False).astype(bool)
        out[step["label"]] = (
            frame[alive].groupby(by, observed=False).size() if by else pd.Series([alive.sum()])
        )
    return pd.DataFrame(out)


def test_exact_attrition_matches_pandas(oslo_frame: pd.DataFrame, oslo_data: RegistryData) -> None:
    query = parse_query({**FUNNEL, "group_by": ["sex"]})
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    frame = bound_contributions(oslo_frame, 3)
    want = exact_attrition(frame, by="sex")
    assert ex.labels[:2] == [["female", "lung"], ["female", "stage IV"]]
    got = ex.counts.reshape(2, 4)
    assert got.tolist() == want.loc[["female", "male"]].to_numpy().tolist()
    assert (np.diff(got, axis=1) <= 0).all()  # exact attrition never rises


def test_funnel_release_at_large_epsilon_is_close_and_charged_once(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    rel = handle(node_ctx, make_work(gateway_key, FUNNEL))
    assert rel.status == "ok", rel.message
    assert rel.axes == [("step", [s["label"] for s in STEPS])]
    assert rel.charged.epsilon == pytest.approx(1.0)
    assert rel.charged.epsilon <= 1.0
    assert rel.mechanism == "opendp.composition(4 x discrete_laplace)"
    # each of the 4 steps gets eps/4: scale = k * 4 / eps
    assert rel.noise_scales == {"count": pytest.approx(3 * 4 / 1.0)}
    assert node_ctx.ledger.spent("nsclc-feasibility") == pytest.approx(1.0)
    assert len(node_ctx.ledger.charges()) == 1
    want = exact_attrition(bound_contributions(oslo_frame, 3)).iloc[0].tolist()
    for cell, w in zip(rel.cells, want, strict=True):
        assert abs(cell.value - w) < 12 * 12  # |Laplace| > 12 scales has probability e^-12
        assert cell.ci_high - cell.ci_low == pytest.approx(2 * (cell.value - cell.ci_low))


def funnel_query(stat: Funnel) -> Query:
    """The funnel query of the module with ``stat`` as its statistic."""
    return parse_query({**FUNNEL, "statistic": stat.model_dump(mode="json")})


def test_composition_map_is_the_sum_of_the_steps() -> None:
    stat = Funnel.model_validate({"kind": "funnel", "steps": STEPS[:3]})
    ex = Exact(labels=[["a"], ["b"], ["c"]], counts=np.zeros(3, dtype=np.int64))
    costed = plan(ex, funnel_query(stat), PureDP(0.9), max_rows=2)
    assert costed.cost.epsilon == pytest.approx(0.9) and costed.cost.epsilon <= 0.9
    assert costed.noise_scales["count"] == pytest.approx(2 * 3 / 0.9)


def test_noise_scale_is_statistically_right() -> None:
    """At small epsilon the empirical sd of the noise matches the plan (many cells, one draw)."""
    m, groups = 4, 1500
    stat = Funnel.model_validate({"kind": "funnel", "steps": STEPS[:m]})
    labels = [[str(g), s["label"]] for g in range(groups) for s in STEPS[:m]]
    counts = np.full(groups * m, 1000, dtype=np.int64)
    ex = Exact(labels=labels, counts=counts)
    cells = plan(ex, funnel_query(stat), PureDP(0.2), max_rows=1).release()
    noise = np.array([c.value for c in cells]) - 1000
    want = cells[0].std
    assert want == pytest.approx(np.sqrt(2) * 1 * m / 0.2, rel=0.01)
    assert np.std(noise) == pytest.approx(want, rel=0.08)  # 6000 draws: sd of sd ~ 1.5%
    assert abs(np.mean(noise)) < 5 * want / np.sqrt(noise.size)
    inside = np.mean([c.ci_low <= 1000 <= c.ci_high for c in cells])
    assert 0.93 < inside < 0.97


def test_funnel_in_aggregate_mode_is_within_the_cell_key_spread(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, oslo_data: RegistryData
) -> None:
    query = {
        "project": "breast-outcomes",
        "statistic": {"kind": "funnel", "steps": STEPS[:2]},
        "privacy": {"mode": "aggregate"},
    }
    rel = handle(node_ctx, make_work(gateway_key, query))
    assert rel.status == "ok" and rel.mode == "aggregate"
    ex = exact(oslo_data, evaluate(oslo_data, None), parse_query(query))
    spread = node_ctx.policy.aggregate.cell_key_spread
    for cell, n in zip(rel.cells, ex.counts, strict=True):
        assert cell.status == "suppressed" or abs(cell.value - n) <= spread
    assert any(c.status == "ok" for c in rel.cells)


@pytest.mark.parametrize(
    ("statistic", "message"),
    [
        ({"kind": "funnel", "steps": []}, "at least 1 item"),
        ({"kind": "funnel", "steps": [STEPS[0], STEPS[0]]}, "labels must not repeat"),
        ({"kind": "funnel", "steps": [STEPS[0]] * 13}, "at most 12 items"),
        (
            {
                "kind": "funnel",
                "steps": [
                    {"label": "x", "criterion": {"op": "eq", "field": "stage", "value": "V"}}
                ],
            },
            "unknown category 'V'",
        ),
        (
            {"kind": "funnel", "steps": [{"label": "", "criterion": STEPS[0]["criterion"]}]},
            "at least 1 character",
        ),
    ],
)
def test_bad_funnels_are_refused_before_anything(statistic: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_query({**FUNNEL, "statistic": statistic})


def test_funnel_needs_policy_exposure_of_every_criterion_field(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    hidden = {
        "label": "country",
        "criterion": {"op": "eq", "field": "country", "value": "NO"},
    }
    query = {**FUNNEL, "statistic": {"kind": "funnel", "steps": [*STEPS[:1], hidden]}}
    rel = handle(node_ctx, make_work(gateway_key, query))
    assert rel.status == "field_not_available" and "country" in rel.message
    assert node_ctx.ledger.charges() == []


def test_plan_dp_routes_funnels(oslo_data: RegistryData) -> None:
    query = parse_query(FUNNEL)
    ex = exact(oslo_data, evaluate(oslo_data, None), query)
    assert plan(ex, query, PureDP(1.0), max_rows=3).mechanism.startswith("opendp.composition")


def preview_work(key: Ed25519PrivateKey, query: dict[str, Any], query_id: str) -> Any:
    import datetime as dt

    from varde.envelope import seal
    from varde.release import WorkItem

    work = WorkItem(
        query_id=query_id, project=str(query["project"]), researcher="a", query=query, preview=True
    )
    return seal(
        key,
        kind="work",
        sender="gateway",
        recipient="oslo",
        body=work.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=30),
    )


def test_preview_prices_exactly_what_the_release_then_costs(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    pre = handle(node_ctx, preview_work(gateway_key, FUNNEL, "p1"))
    assert pre.status == "ok" and pre.preview and pre.cells == []
    assert node_ctx.ledger.charges() == []
    assert pre.planned.epsilon == pytest.approx(1.0)
    assert "previewed" in [e.kind for e in node_ctx.store.events()]
    rel = handle(node_ctx, make_work(gateway_key, FUNNEL, query_id="q1"))
    assert rel.charged.epsilon == pre.planned.epsilon
    assert rel.noise_scales == pre.noise_scales and rel.mechanism == pre.mechanism
    cell = rel.cells[0]
    assert cell.ci_high - cell.value == pytest.approx(pre.accuracy["count"])
    assert cell.std == pytest.approx(pre.noise_std["count"])
    # a repeat would come from the cache: priced at zero
    again = handle(node_ctx, preview_work(gateway_key, FUNNEL, "p2"))
    assert again.cached and again.planned.epsilon == 0.0
    assert len(node_ctx.ledger.charges()) == 1


def test_preview_flags_a_budget_it_would_exceed(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    node_ctx.ledger.charge(
        project="nsclc-feasibility", cost=PureDP(9.5), total=PureDP(10.0), query_id="x"
    )
    pre = handle(node_ctx, preview_work(gateway_key, FUNNEL, "p1"))
    assert pre.status == "budget_exhausted" and "needs 1" in pre.message
    assert pre.budget_remaining.amount == pytest.approx(0.5)
    assert len(node_ctx.ledger.charges()) == 1


def test_preview_of_a_mean_gives_the_accuracy_of_its_parts(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    mean = {
        **FUNNEL,
        "statistic": {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 90},
    }
    pre = handle(node_ctx, preview_work(gateway_key, mean, "p1"))
    assert set(pre.accuracy) == {"sum", "count"}
    assert pre.accuracy["sum"] == pytest.approx(36 * pre.accuracy["count"])
