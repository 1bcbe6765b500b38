"""DP Cox model at a site: sensitivity of the released step, accounting, and a federated fit.

The federated fit is compared with lifelines' ``CoxPHFitter`` stratified by site on
the pooled training rows of the same three synthetic registries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter

from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.mechanisms import plan_laplace
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from nodes.training.cox import (
    ROWS_PER_BLOCK,
    block_count,
    block_gradients,
    block_ids,
    clipped_gradient_sum,
    plan_cox_noise,
)
from nodes.training.evaluation import evaluate_model, evaluation_table
from nodes.training.features import holdout_mask, survival_design
from nodes.training.rounds import job_history
from tests.unit.nodes.training.helpers import federate
from varde.budget import epsilon_for_rho
from varde.training import TrainingPrivacy, TrainingSpec, design_columns, training_rho
from varde.training_metrics import concordance_parts, cox_metrics

FEATURES = ["sex", "age_at_diagnosis", "stage"]
FIELDS = [*FEATURES, "vital_status", "survival_days"]


def cox_spec(**changes: object) -> TrainingSpec:
    base: dict[str, object] = {
        "project": "p",
        "model": "cox",
        "features": FEATURES,
        "rounds": 3,
        "local_steps": 5,
        "privacy": TrainingPrivacy(epsilon=3.0),
    }
    return TrainingSpec.model_validate({**base, **changes})


def make_policy(site: str, budget: float = 1000.0) -> Policy:
    return Policy.model_validate(
        {
            "site": site,
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 2},
            "fields": FIELDS,
            "statistics": ["count"],
            "projects": {
                "p": {
                    "epsilon_budget": budget,
                    "max_epsilon_per_query": budget,
                    "training": ["logistic", "cox"],
                }
            },
        }
    )


# --- the sensitivity of one released step ---------------------------------------------


@st.composite
def registries(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Small registries: up to 12 patients with 1..k rows, ties in time, any features."""
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 3))
    n_patients = draw(st.integers(1, 12))
    sizes = [draw(st.integers(1, k)) for _ in range(n_patients)]
    n = sum(sizes)
    unit = st.floats(-1.0, 1.0, allow_nan=False)
    x = np.array(draw(st.lists(unit, min_size=n * d, max_size=n * d))).reshape(n, d)
    time = np.array(draw(st.lists(st.integers(1, 6), min_size=n, max_size=n)), dtype=float)
    event = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=float)
    patient = np.repeat(np.arange(n_patients), sizes)
    keys = np.array(
        draw(st.lists(st.integers(0, 2**63), min_size=n_patients, max_size=n_patients)),
        dtype=np.uint64,
    )[patient]
    # Coefficients from the server may be anything finite: huge ones exercise the floor.
    coefficient = st.one_of(st.floats(-4, 4), st.floats(-400, 400))
    beta = np.array(draw(st.lists(coefficient, min_size=d, max_size=d)))
    return x, time, event, patient, keys, beta


@settings(max_examples=300, deadline=None)
@given(
    registry=registries(),
    n_blocks=st.integers(1, 4),
    clip=st.floats(0.01, 10.0),
    pick=st.integers(0, 10**6),
)
def test_removing_one_patient_moves_the_step_by_at_most_twice_the_block_clip(
    registry: tuple[np.ndarray, ...], n_blocks: int, clip: float, pick: int
) -> None:
    """The L2 sensitivity the noise is calibrated to (``2 C_b``) holds on any data."""
    x, time, event, patient, keys, beta = registry
    victim = pick % (patient.max() + 1)
    keep = patient != victim
    blocks = block_ids(keys, n_blocks)
    full = clipped_gradient_sum(x, time, event, blocks, beta, clip)
    without = clipped_gradient_sum(x[keep], time[keep], event[keep], blocks[keep], beta, clip)
    assert np.linalg.norm(full - without) <= 2 * clip * (1 + 1e-9)


def test_without_blocks_one_patient_can_move_every_risk_set() -> None:
    """Why blocks: with one risk set per site, clipping each *row's* term is not enough.

    Removing one long survivor changes every earlier death's risk-set average, so the
    sum of per-row terms clipped to 0.5 moves by far more than 2 x 0.5.
    """
    n = 40
    x = np.zeros((n, 1))
    x[-1, 0] = 1.0  # the one patient with the feature lives longest (rows sorted by time)
    event = np.ones(n)
    event[-1] = 0.0
    w = np.exp(x[:, 0] * 3.0)

    def clipped_row_terms(rows: int) -> float:
        total = 0.0
        for i in range(rows):
            at_risk = np.arange(rows) >= i
            xbar = (w[:rows] * x[:rows, 0] * at_risk).sum() / (w[:rows] * at_risk).sum()
            total += float(np.clip(event[i] * (x[i, 0] - xbar), -0.5, 0.5))
        return total

    assert abs(clipped_row_terms(n) - clipped_row_terms(n - 1)) > 5 * 2 * 0.5


def test_block_gradient_is_the_breslow_score() -> None:
    """One block's gradient equals the numerical gradient of the Breslow log partial likelihood."""
    rng = np.random.default_rng(3)  # data only
    n, d = 30, 3
    x = rng.uniform(-1, 1, (n, d))
    time = rng.integers(1, 10, n).astype(float)  # many ties
    event = (rng.random(n) < 0.6).astype(float)
    beta = rng.normal(size=d)

    def loglik(b: np.ndarray) -> float:
        lp = x @ b
        at_risk = time[None, :] >= time[:, None]
        log_s0 = np.log((np.exp(lp)[None, :] * at_risk).sum(axis=1))
        return float((event * (lp - log_s0)).sum())

    h = 1e-6
    numeric = np.array([(loglik(beta + h * e) - loglik(beta - h * e)) / (2 * h) for e in np.eye(d)])
    analytic = block_gradients(x, time, event, np.zeros(n, dtype=np.int64), beta)[0]
    assert analytic == pytest.approx(numeric, abs=1e-5)
    # Blocks are separate strata: the sum of block gradients is the stratified score.
    blocks = np.arange(n) % 3
    per_block = block_gradients(x, time, event, blocks, beta)
    for b in range(3):
        only = blocks == b
        alone = block_gradients(x[only], time[only], event[only], blocks[only], beta)
        assert per_block[b] == pytest.approx(alone[0])


def test_blocks_come_from_the_patient_and_a_noisy_size() -> None:
    assert block_count(10 * ROWS_PER_BLOCK) == 8
    keys = np.array([5, 5, 2**40 + 5, 7], dtype=np.uint64)
    ids = block_ids(keys, 4)
    assert ids[0] == ids[1] == ids[2] and ids[3] == 3


def test_plan_pays_the_training_rho_by_opendp_map() -> None:
    spec = cox_spec(privacy=TrainingPrivacy(epsilon=2.0, evaluation_epsilon=0.2))
    plan = plan_cox_noise(spec, max_rows_per_patient=2)
    assert plan.sensitivity == pytest.approx(2 * math.sqrt(ROWS_PER_BLOCK))
    assert plan.rho_per_round * spec.rounds == pytest.approx(training_rho(spec), rel=1e-6)
    assert epsilon_for_rho(plan.rho_per_round * spec.rounds, 1e-6) == pytest.approx(1.8, rel=1e-6)
    assert plan.count_scale == pytest.approx(2 / math.sqrt(2 * 0.05 * training_rho(spec) / 3))


# --- a federated fit -------------------------------------------------------------------


SITES = ("oslo", "bergen", "trondheim")


@pytest.fixture(scope="module")
def registries_3() -> dict[str, RegistryData]:
    return {
        site: prepare(
            generate_registry(site, 20_000, seed=i + 1), site=site, max_rows_per_patient=2
        )
        for i, site in enumerate(SITES)
    }


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[dict[str, Ledger]]:
    opened = {site: Ledger.in_directory(tmp_path / site) for site in SITES}
    yield opened
    for ledger in opened.values():
        ledger.close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, NodeStore]]:
    opened = {site: NodeStore.in_directory(tmp_path / site) for site in SITES}
    yield opened
    for store in opened.values():
        store.close()


def contrasts(beta: np.ndarray) -> np.ndarray:
    """Identifiable Cox contrasts: male - female, age, each stage - stage 0."""
    return np.array([beta[1] - beta[0], beta[2], *(beta[4:9] - beta[3])])


def exact_concordance(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float, float]:
    """Harrell's ``(concordant + ties / 2, comparable)`` pairs (O(n^2), for tests)."""
    earlier = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    higher = lp[:, None] > lp[None, :]
    tied = lp[:, None] == lp[None, :]
    return float((earlier & higher).sum() + 0.5 * (earlier & tied).sum()), float(earlier.sum())


def test_federated_cox_matches_lifelines_stratified_by_site(
    registries_3: dict[str, RegistryData],
    ledgers: dict[str, Ledger],
    stores: dict[str, NodeStore],
) -> None:
    """At epsilon 100 per site (1 of it for the DP evaluation), FedAvg over three sites.

    Tolerance: every identifiable contrast within ``0.1 + 1.5 SE`` of lifelines (SE:
    lifelines' standard error). Figures seen (60,000 tumours, ~12,700 training rows a
    site): sex and age within 0.035 (about 1 SE); stage contrasts (against the rare
    stage 0, a direction plain gradient steps converge slowly in) within 0.07-0.13
    (at most 1.4 SE); held-out concordance 0.7475 federated vs 0.7474 central; the
    public bins add +0.003; the DP concordance at evaluation epsilon 1 is unbiased with
    a standard deviation of about 0.01 (0.009 over 300 OpenDP draws).
    """
    spec = cox_spec(
        rounds=5,
        local_steps=40,
        learning_rate=5.0,
        privacy=TrainingPrivacy(epsilon=100.0, clip=0.5, evaluation_epsilon=1.0),
    )
    beta = federate(
        spec, {s: registries_3[s] for s in SITES}, ledgers, stores, make_policy, job_id="cox"
    )
    assert all(job_history(ledgers[s], "p", "cox")[0] == spec.rounds for s in SITES)

    frames = []
    for site in SITES:
        rows = survival_design(registries_3[site], spec, "train")
        frame = pd.DataFrame(rows.x, columns=design_columns(FEATURES, "cox"))
        frames.append(frame.assign(T=rows.time, E=rows.event, site=site))
    pooled = pd.concat(frames, ignore_index=True)
    reference = ["sex=female", "stage=0"]  # dropped: lifelines needs a full-rank design
    central = CoxPHFitter().fit(pooled.drop(columns=reference), "T", "E", strata=["site"])
    central_beta = np.array(
        [0.0 if c in reference else central.params_[c] for c in design_columns(FEATURES, "cox")]
    )
    se = np.array(
        [central.standard_errors_[c] for c in design_columns(FEATURES, "cox") if c not in reference]
    )
    error = np.abs(contrasts(beta) - contrasts(central_beta))
    assert (error <= 0.1 + 1.5 * se).all(), (error, se)

    # Concordance on the held-out patients, within sites (the model is stratified by site).
    fed = cen = np.zeros(2)
    tables = []
    for site in SITES:
        rows = survival_design(registries_3[site], spec, "holdout")
        fed = fed + exact_concordance(rows.x @ beta, rows.time, rows.event)
        cen = cen + exact_concordance(rows.x @ central_beta, rows.time, rows.event)
        tables.append(evaluation_table(registries_3[site], spec, beta))
    c_fed, c_central = fed[0] / fed[1], cen[0] / cen[1]
    assert abs(c_fed - c_central) <= 0.02, (c_fed, c_central)
    binned = cox_metrics(tables)["concordance"]
    assert abs(binned - c_fed) <= 0.01, (binned, c_fed)  # what the public bins cost

    released = [
        evaluate_model(
            data=registries_3[site],
            policy=make_policy(site),
            ledger=ledgers[site],
            store=stores[site],
            spec=spec,
            job_id="cox",
            researcher="alice",
            weights=beta,
        )
        for site in SITES
    ]
    dp_c = cox_metrics([r.table for r in released])["concordance"]
    # Spread of the DP concordance, from repeated OpenDP draws of the same tables (no charge).
    plan = plan_laplace(sensitivity=2, epsilon=1.0, integer=True)
    draws = [
        cox_metrics([plan.release(t.ravel()).reshape(t.shape) for t in tables])["concordance"]
        for _ in range(60)
    ]
    assert abs(dp_c - binned) <= 6 * float(np.std(draws)) + 1e-3, (dp_c, binned, np.std(draws))
    for site, r in zip(SITES, released, strict=True):
        assert r.charged.amount == pytest.approx(1.0)
        assert ledgers[site].spent("p") == pytest.approx(100.0, abs=1e-6)  # the whole job
    assert concordance_parts(tables[0])[1] > 0
    held = holdout_mask(registries_3["oslo"], spec.holdout)
    assert 0.17 < held.mean() < 0.23
