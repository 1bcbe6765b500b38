"""zCDP for every statistic: Gaussian releases through OpenDP, rho charged, exact at large rho.

OpenDP's RNG cannot be seeded, so every statistical bound below is at least
six standard deviations of the quantity it bounds (the bound is computed from
the number of noise draws, not guessed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.combine import combine
from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.data import RegistryData, bound_contributions
from nodes.pipeline import handle
from nodes.statistics import exact, plan, price
from tests.conftest import make_work
from tests.unit.nodes.statistics.test_funnel import STEPS, exact_attrition, preview_work
from tests.unit.nodes.statistics.test_quantiles import interpolated_quantile
from tests.unit.nodes.statistics.test_zcdp import zcdp
from varde.budget import ZCDP
from varde.estimates import survival_from_counts
from varde.query import DAYS_PER_MONTH, Query, parse_query
from varde.release import SiteRelease

P = "nsclc-feasibility"
K = 3  # oslo's max_tumours_per_patient
HUGE = 1e6
"""A rho so large that the noise is negligible (count sd 3/sqrt(2e6) ~ 0.002)."""
GROUPS = ["cancer_type", "stage", "sex", "age_band"]

STATISTICS: dict[str, dict[str, Any]] = {
    "sum": {"kind": "sum", "field": "age_at_diagnosis", "lower": 0, "upper": 100},
    "mean": {"kind": "mean", "field": "age_at_diagnosis", "lower": 18, "upper": 90},
    "funnel": {"kind": "funnel", "steps": STEPS},
    "quantile": {
        "kind": "quantile",
        "field": "age_at_diagnosis",
        "candidates": [float(x) for x in range(0, 111)],
        "alphas": [0.25, 0.5, 0.75],
    },
    "survival": {"kind": "survival", "interval_months": 1, "horizon_months": 60},
}


def body(kind: str, rho: float, **extra: Any) -> dict[str, Any]:
    privacy = {"mode": "zcdp", "rho": rho}
    return {"project": P, "statistic": STATISTICS[kind], "privacy": privacy, **extra}


def bounded(frame: pd.DataFrame) -> pd.DataFrame:
    return bound_contributions(frame, K)


def six_sd_rel(n: int) -> float:
    """Six standard deviations of a sample sd of ``n`` Gaussian draws, relative (sd ~ 1/sqrt 2n)."""
    return 6.0 / math.sqrt(2.0 * n)


def assert_sd(noise: np.ndarray, sd: float) -> None:
    """The sample sd of ``noise`` is ``sd`` within six of its standard deviations; mean ~0."""
    n = noise.size
    assert np.std(noise) == pytest.approx(sd, rel=six_sd_rel(n)), (np.std(noise), sd, n)
    assert abs(float(np.mean(noise))) <= 6.0 * sd / math.sqrt(n)


# ---------------------------------------------------------------- correctness at large rho


@pytest.fixture
def generous(node_ctx: NodeContext) -> NodeContext:
    zcdp(node_ctx, rho_budget=10 * HUGE, cap=HUGE)
    return node_ctx


def test_sum_and_mean_match_pandas_at_large_rho(
    generous: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    ages = bounded(oslo_frame).age_at_diagnosis.dropna()
    rel = handle(generous, make_work(gateway_key, body("sum", HUGE), query_id="s"))
    assert rel.status == "ok", rel.message
    assert rel.mode == "zcdp" and rel.mechanism == "opendp.gaussian"
    # L2 sensitivity k * max(|L|, |U|) = 300; scale 300 / sqrt(2 rho)
    assert rel.noise_scales["sum"] == pytest.approx(300 / math.sqrt(2 * HUGE))
    assert rel.charged.rho == pytest.approx(HUGE) and rel.charged.rho <= HUGE
    assert rel.charged.measure == "rho"  # no epsilon is charged in zCDP mode
    (cell,) = rel.cells
    assert cell.value == pytest.approx(float(ages.clip(0, 100).sum()), abs=1.0)
    assert cell.ci_low < cell.value < cell.ci_high

    rel = handle(generous, make_work(gateway_key, body("mean", HUGE), query_id="m"))
    assert rel.status == "ok", rel.message
    (cell,) = rel.cells
    assert cell.value == pytest.approx(float(ages.clip(18, 90).mean()), abs=1e-3)
    assert cell.parts["count"] == pytest.approx(len(ages), abs=0.1)
    assert cell.ci_low <= cell.value <= cell.ci_high
    charges = generous.ledger.charges()
    assert [c.measure for c in charges] == ["rho", "rho"]


def test_funnel_matches_the_exact_attrition_at_large_rho(
    generous: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    rel = handle(generous, make_work(gateway_key, body("funnel", HUGE, group_by=["sex"])))
    assert rel.status == "ok", rel.message
    assert rel.mechanism == "opendp.composition(4 x discrete_gaussian)"
    # rho split over 4 steps by OpenDP's composition: each step's scale is 3 / sqrt(2 rho / 4)
    assert rel.noise_scales["count"] == pytest.approx(K / math.sqrt(2 * HUGE / 4))
    assert rel.charged.rho == pytest.approx(HUGE) and rel.charged.rho <= HUGE
    want = exact_attrition(bounded(oslo_frame), by="sex").to_numpy().reshape(-1)
    assert [c.value for c in rel.cells] == want.tolist()


def test_quantiles_match_the_pooled_data_at_large_rho(
    generous: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    rel = handle(generous, make_work(gateway_key, body("quantile", HUGE)))
    assert rel.status == "ok", rel.message
    assert rel.mechanism == "opendp.discrete_gaussian"
    ages = bounded(oslo_frame).age_at_diagnosis.dropna().to_numpy()
    for cell, alpha in zip(rel.cells, [0.25, 0.5, 0.75], strict=True):
        assert cell.value == pytest.approx(interpolated_quantile(ages, alpha), abs=0.01)
        assert cell.ci_low <= cell.value <= cell.ci_high
        assert len(cell.parts) == 110


def test_survival_matches_the_exact_counts_at_large_rho(
    generous: NodeContext, gateway_key: Ed25519PrivateKey, oslo_frame: pd.DataFrame
) -> None:
    cohort = {"op": "eq", "field": "cancer_type", "value": "lung"}
    rel = handle(generous, make_work(gateway_key, body("survival", HUGE, cohort=cohort)))
    assert rel.status == "ok", rel.message
    f = bounded(oslo_frame)
    f = f[(f.cancer_type == "lung") & f.survival_days.notna() & f.vital_status.notna()]
    months = np.floor(f.survival_days / DAYS_PER_MONTH).to_numpy()
    dead = (f.vital_status == "dead").to_numpy()
    inside = months < 60
    d = np.bincount(months[dead & inside].astype(int), minlength=60)
    c = np.bincount(months[~dead & inside].astype(int), minlength=60)
    curve, median = survival_from_counts(
        list(range(1, 61)), d.tolist(), c.tolist(), float((~inside).sum()), 0.0
    )
    got = [cell.value for cell in rel.cells[:60]]
    assert got == pytest.approx([v for v, _, _ in curve], abs=1e-9)
    assert rel.cells[60].parts["beyond"] == float((~inside).sum())
    assert rel.cells[60].value == median[0]


# ---------------------------------------------------------------- noise scale at small rho


def _plan(data: RegistryData, spec: dict[str, Any], rho: float) -> tuple[Query, Any, Any]:
    q = parse_query(spec)
    ex = exact(data, evaluate(data, q.cohort), q)
    return q, ex, plan(ex, q, ZCDP(rho), max_rows=K)


def test_sum_noise_has_the_gaussian_scale(oslo_data: RegistryData) -> None:
    rho = 0.5
    _, ex, plan = _plan(oslo_data, body("sum", rho, group_by=GROUPS), rho)
    sd = K * 100 / math.sqrt(2 * rho)  # 300
    assert plan.noise_scales == {"sum": pytest.approx(sd)} and plan.cost.rho <= rho
    cells = plan.release()
    noise = np.array([c.value for c in cells]) - ex.sums
    assert noise.size == 1944
    assert_sd(noise, sd)
    assert plan.accuracy["sum"] == pytest.approx(1.959964 * sd, rel=1e-5)
    covered = np.mean([c.ci_low <= s <= c.ci_high for c, s in zip(cells, ex.sums, strict=True)])
    # 95% coverage; the fraction's sd over 1,944 cells is ~0.005, so 6 sd is 0.03
    assert abs(covered - 0.95) < 0.03


def test_mean_parts_have_the_gaussian_scale(oslo_data: RegistryData) -> None:
    rho = 0.5
    _, ex, plan = _plan(oslo_data, body("mean", rho, group_by=GROUPS), rho)
    sigma = math.sqrt(2.0) / math.sqrt(2 * rho)  # L2 sqrt(2) on the normalised vector
    h = (90 - 18) / 2
    assert plan.noise_std == {
        "sum": pytest.approx(sigma * K * h),
        "count": pytest.approx(sigma * K),
    }
    cells = plan.release()
    sums = np.array([c.parts["centred_sum"] for c in cells]) - ex.sums
    counts = np.array([c.parts["count"] for c in cells]) - ex.counts
    assert_sd(sums, sigma * K * h)
    assert_sd(counts, sigma * K)
    # one Gaussian vector: the two halves' noise is independent (|r| < 6 / sqrt(n))
    assert abs(np.corrcoef(sums, counts)[0, 1]) < 6 / math.sqrt(sums.size)


def test_funnel_steps_have_the_composed_gaussian_scale(oslo_data: RegistryData) -> None:
    rho = 0.4
    spec = body("funnel", rho, group_by=["cancer_type", "stage", "sex"])
    _, ex, plan = _plan(oslo_data, spec, rho)
    sd = K / math.sqrt(2 * rho / len(STEPS))  # 3 / sqrt(0.2) ~ 6.7 per step
    assert plan.noise_scales == {"count": pytest.approx(sd)}
    assert plan.cost.rho == pytest.approx(rho) and plan.cost.rho <= rho
    noise = np.array([c.value for c in plan.release()]) - ex.counts
    assert noise.size == len(ex.labels) == 864  # 216 (type, stage, sex) groups x 4 steps
    assert_sd(noise, sd)


def test_quantile_interval_counts_have_the_gaussian_scale(oslo_data: RegistryData) -> None:
    rho = 0.125
    _, ex, plan = _plan(oslo_data, body("quantile", rho, group_by=["sex", "stage"]), rho)
    sd = K / math.sqrt(2 * rho)  # 6
    assert plan.noise_scales == {"count": pytest.approx(sd)}
    cells = plan.release()
    noisy = [[cells[g * 3].parts[f"bin{i}"] for i in range(110)] for g in range(len(cells) // 3)]
    noise = np.array(noisy).reshape(-1) - ex.counts
    assert noise.size == 12 * 110
    assert_sd(noise, sd)
    for c in cells:
        assert list(c.part_std.values()) == pytest.approx([sd] * 110)


def test_survival_counts_have_the_gaussian_scale(oslo_data: RegistryData) -> None:
    rho = 0.125
    _, ex, plan = _plan(oslo_data, body("survival", rho, group_by=["stage"]), rho)
    sd = K / math.sqrt(2 * rho)
    assert plan.noise_scales == {"count": pytest.approx(sd)}
    cells = plan.release()
    carriers = cells[60::61]  # each group's median cell carries its 121 counts
    assert len(carriers) == 6
    noise = np.array([list(c.parts.values()) for c in carriers]).reshape(-1) - ex.counts
    assert_sd(noise, sd)


# ---------------------------------------------------------------- network row, preview


def test_network_row_adds_gaussian_variances(oslo_data: RegistryData) -> None:
    rho = 0.5
    q, _, plan = _plan(oslo_data, body("sum", rho), rho)
    releases = [
        SiteRelease(
            query_id="n",
            site=site,
            status="ok",
            mode="zcdp",
            charged=plan.cost,
            cells=plan.release(),
        )
        for site in ("a", "b", "c")
    ]
    net = combine(q, releases)
    assert net is not None
    (cell,) = net.cells
    assert cell.std == pytest.approx(math.sqrt(3) * 300)
    assert cell.value == pytest.approx(sum(r.cells[0].value or 0 for r in releases))
    assert cell.ci_high - cell.value == pytest.approx(1.959964 * math.sqrt(3) * 300, rel=1e-5)
    assert {s: b.rho for s, b in net.spent.items()} == {s: pytest.approx(rho) for s in "abc"}


@pytest.mark.parametrize("kind", sorted(STATISTICS))
def test_preview_prices_rho_for_every_statistic(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, kind: str
) -> None:
    zcdp(node_ctx, rho_budget=0.5, cap=0.25)
    pre = handle(node_ctx, preview_work(gateway_key, body(kind, 0.2), "p"))
    assert pre.status == "ok", pre.message
    assert pre.mode == "zcdp" and "gaussian" in pre.mechanism
    assert pre.planned.rho == pytest.approx(0.2) and pre.planned.measure == "rho"
    assert pre.budget_remaining.amount == pytest.approx(0.5)
    assert pre.accuracy and all(v > 0 for v in pre.accuracy.values())
    assert node_ctx.ledger.charges() == []
    # the preview's price is the plan's: OpenDP's map of the measurement that would release
    assert price(parse_query(body(kind, 0.2)), ZCDP(0.2), max_rows=K).cost.rho == pre.planned.rho


# ---------------------------------------------------------------- bad input: 4xx, nothing charged


@pytest.mark.parametrize("kind", sorted(STATISTICS))
def test_rho_above_the_cap_is_refused_uncharged(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, kind: str
) -> None:
    zcdp(node_ctx, rho_budget=0.5, cap=0.25)
    rel = handle(node_ctx, make_work(gateway_key, body(kind, 0.3)))
    assert rel.status == "policy_violation"
    assert rel.message == (f"rho 0.3 is above the per-query cap 0.25 of project {P!r} at 'oslo'")
    assert node_ctx.ledger.charges() == []


@pytest.mark.parametrize("kind", sorted(STATISTICS))
def test_zcdp_query_to_an_epsilon_project_is_refused_uncharged(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, kind: str
) -> None:
    rel = handle(node_ctx, make_work(gateway_key, body(kind, 0.1)))
    assert rel.status == "policy_violation"
    assert rel.message == (
        f"project {P!r} accounts in epsilon at 'oslo': "
        'ask with privacy {"mode": "dp", "epsilon": ...}'
    )
    assert node_ctx.ledger.charges() == []


def test_rho_over_the_remaining_budget_is_refused_uncharged(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    zcdp(node_ctx, rho_budget=0.3, cap=0.25)
    assert handle(node_ctx, make_work(gateway_key, body("mean", 0.25), query_id="a")).status == "ok"
    rel = handle(node_ctx, make_work(gateway_key, body("survival", 0.25), query_id="b"))
    assert rel.status == "budget_exhausted"
    assert node_ctx.ledger.spent(P, measure="rho") == pytest.approx(0.25)
