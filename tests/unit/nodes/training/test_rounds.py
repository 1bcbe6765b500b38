"""One training round at a site: policy first, ledger charged before training, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.periods import period_key
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from nodes.training import rounds
from nodes.training.dp import plan_noise
from nodes.training.features import (
    design,
    encode_features,
    holdout_mask,
    outcome_death_within_2y,
)
from nodes.training.rounds import job_history, run_round
from varde.budget import PureDP, epsilon_for_rho
from varde.envelope import utcnow
from varde.errors import BudgetExhausted, PolicyViolation
from varde.schema import FIELDS_BY_NAME
from varde.training import TrainingPrivacy, TrainingSpec, design_columns

FIELDS = ["sex", "age_at_diagnosis", "stage", "first_treatment", "vital_status", "survival_days"]


def make_policy(
    *,
    fields: list[str] = FIELDS,
    budget: float = 20.0,
    cap: float = 10.0,
    researchers: list[str] | None = None,
) -> Policy:
    return Policy.model_validate(
        {
            "site": "oslo",
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 2},
            "fields": fields,
            "statistics": ["count"],
            "projects": {
                "p": {
                    "epsilon_budget": budget,
                    "max_epsilon_per_query": cap,
                    "researchers": researchers,
                    "training": ["logistic", "cox"],
                }
            },
        }
    )


def make_spec(**changes: object) -> TrainingSpec:
    base: dict[str, object] = {
        "project": "p",
        "features": ["sex", "age_at_diagnosis", "stage"],
        "rounds": 3,
        "local_steps": 5,
        "privacy": TrainingPrivacy(epsilon=3.0),
    }
    return TrainingSpec.model_validate({**base, **changes})


@pytest.fixture(scope="module")
def data() -> RegistryData:
    return prepare(generate_registry("oslo", 6_000, seed=11), site="oslo", max_rows_per_patient=2)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger.in_directory(tmp_path) as led:
        yield led


def play(
    data: RegistryData,
    ledger: Ledger,
    store: NodeStore,
    spec: TrainingSpec,
    policy: Policy,
    job: str = "j1",
):
    return run_round(
        data=data,
        policy=policy,
        ledger=ledger,
        store=store,
        spec=spec,
        job_id=job,
        researcher="alice",
        weights=np.zeros(spec.n_coefficients()),
    )


def test_design_matches_public_columns_and_outcome(data: RegistryData) -> None:
    spec = make_spec()
    x = encode_features(data, spec.features)
    assert x.shape == (data.n_rows, len(design_columns(spec.features)))
    assert (x[:, 0] == 1).all()
    sex = x[:, 1:3]
    assert set(sex.sum(axis=1)) <= {0.0, 1.0}
    age = x[:, 3]
    assert age.min() >= -1 and age.max() <= 1
    y, known = outcome_death_within_2y(data)
    days = data.column("survival_days")
    dead = data.column("vital_status") == FIELDS_BY_NAME["vital_status"].categories.index("dead")
    assert (y[known & dead & (days <= 730)] == 1).all()
    assert (y[known & (days > 730)] == 0).all()
    assert not known[~dead & (days < 730)].any()  # censored before two years
    held = holdout_mask(data, spec.holdout)
    assert 0.17 < held.mean() < 0.23  # a fifth of the patients, by a public hash
    xs, ys = design(data, spec)
    assert len(xs) == len(ys) == (known & ~held).sum()
    xh, _ = design(data, spec, "holdout")
    assert len(xh) == (known & held).sum()
    assert (holdout_mask(data, spec.holdout) == held).all()  # the same split every time


def test_round_is_charged_before_training_and_totals_telescope(
    data: RegistryData, ledger: Ledger, store: NodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, policy = make_spec(), make_policy()
    seen: list[float] = []
    real = rounds.noisy_gradient_descent

    def spy(*args: object, **kwargs: object):
        seen.append(ledger.spent("p"))  # the charge is committed before any noise is drawn
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds, "noisy_gradient_descent", spy)
    results = [play(data, ledger, store, spec, policy) for _ in range(spec.rounds)]
    charges = ledger.charges("p")
    assert [c.query_id for c in charges] == [f"training:j1:round:{i}" for i in (1, 2, 3)]
    assert seen == pytest.approx([c.spent_after for c in charges])
    plan = plan_noise(spec, max_rows_per_patient=2)
    total = epsilon_for_rho(plan.rho_per_round * spec.rounds, spec.privacy.delta)
    assert ledger.spent("p") == pytest.approx(total, abs=1e-8)
    # The rounds cost what was asked, less the tenth kept for the final evaluation.
    assert total == pytest.approx(2.7, rel=1e-6)
    paid = [r.charged.epsilon for r in results if isinstance(r.charged, PureDP)]
    assert len(paid) == 3 and paid[0] > paid[1] > paid[2]
    assert results[-1].job_total.measure == "epsilon"
    assert results[-1].job_total.amount == pytest.approx(total)
    assert results[-1].remaining.amount == pytest.approx(20.0 - total, abs=1e-8)
    assert json.loads(charges[-1].note)["features"] == spec.features
    assert job_history(ledger, "p", "j1")[0] == 3


def test_more_rounds_than_declared_are_refused(
    data: RegistryData, ledger: Ledger, store: NodeStore
) -> None:
    spec, policy = make_spec(rounds=1), make_policy()
    play(data, ledger, store, spec, policy)
    with pytest.raises(PolicyViolation, match="already ran its 1 round"):
        play(data, ledger, store, spec, policy)
    assert len(ledger.charges()) == 1


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            make_policy(fields=[f for f in FIELDS if f != "stage"]),
            "does not expose field\\(s\\) stage",
        ),
        (make_policy(fields=[f for f in FIELDS if f != "survival_days"]), "survival_days"),
        (make_policy(researchers=["bob"]), "researcher 'alice' is not allowed"),
        (make_policy(budget=0.0, cap=10.0), "project 'p' has no epsilon budget at 'oslo'"),
        (make_policy(cap=0.1), "above the per-query cap"),
    ],
)
def test_refusals_charge_nothing(
    data: RegistryData, ledger: Ledger, store: NodeStore, policy: Policy, message: str
) -> None:
    with pytest.raises((PolicyViolation, BudgetExhausted), match=message):
        play(data, ledger, store, make_spec(), policy)
    assert ledger.charges() == []


def test_unknown_project_is_refused(data: RegistryData, ledger: Ledger, store: NodeStore) -> None:
    with pytest.raises(PolicyViolation, match="does not serve project 'other'"):
        play(data, ledger, store, make_spec(project="other"), make_policy())


def test_budget_runs_out_mid_job(data: RegistryData, ledger: Ledger, store: NodeStore) -> None:
    """A budget of 2.2 pays the first rounds of a 3-epsilon job, then refuses; nothing overspent."""
    spec, policy = make_spec(rounds=3), make_policy(budget=2.2, cap=2.2)
    paid = 0
    with pytest.raises(BudgetExhausted, match="privacy budget exhausted"):
        for _ in range(spec.rounds):
            play(data, ledger, store, spec, policy)
            paid += 1
    assert 1 <= paid < 3
    assert len(ledger.charges("p")) == paid
    assert ledger.spent("p") <= 2.2
    assert ledger.spent("p") == pytest.approx(sum(c.amount for c in ledger.charges("p")))


def test_changing_delta_mid_job_is_refused(
    data: RegistryData, ledger: Ledger, store: NodeStore
) -> None:
    play(data, ledger, store, make_spec(), make_policy())
    other = make_spec(privacy=TrainingPrivacy(epsilon=3.0, delta=1e-7))
    with pytest.raises(PolicyViolation, match="changed its delta"):
        play(data, ledger, store, other, make_policy())


def test_wrong_weight_shape_is_an_error(
    data: RegistryData, ledger: Ledger, store: NodeStore
) -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match="weights"):
        run_round(
            data=data,
            policy=make_policy(),
            ledger=ledger,
            store=store,
            spec=spec,
            job_id="j",
            researcher="alice",
            weights=np.zeros(3),
        )
    assert ledger.charges() == []


def test_cox_round_is_charged_before_training_and_totals_telescope(
    data: RegistryData, ledger: Ledger, store: NodeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, policy = make_spec(model="cox"), make_policy()
    seen: list[float] = []
    real = rounds.noisy_cox_descent

    def spy(*args: object, **kwargs: object):
        seen.append(ledger.spent("p"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds, "noisy_cox_descent", spy)
    results = [play(data, ledger, store, spec, policy) for _ in range(spec.rounds)]
    assert seen == pytest.approx([c.spent_after for c in ledger.charges("p")])
    assert results[-1].weights.shape == (spec.n_coefficients(),)
    assert np.isfinite(results[-1].weights).all()
    assert results[0].num_examples == pytest.approx((~holdout_mask(data, 0.2)).sum(), rel=0.2)
    assert ledger.spent("p") == pytest.approx(2.7, rel=1e-6)


def test_training_pays_from_the_current_budget_period_like_queries(
    data: RegistryData, ledger: Ledger, store: NodeStore
) -> None:
    """A quarterly budget is one account for queries and training: no second, lifetime purse."""
    policy = make_policy(budget=3.5, cap=3.0)
    quarterly = policy.projects["p"].model_copy(update={"budget_period": "quarter"})
    policy = policy.model_copy(update={"projects": {"p": quarterly}})
    period = period_key("quarter", utcnow())
    # a query already spent 1.0 of this quarter's 3.5
    ledger.charge(project="p", cost=PureDP(1.0), total=PureDP(3.5), query_id="q1", period=period)
    spec = make_spec(rounds=1, privacy=TrainingPrivacy(epsilon=2.0, evaluation_epsilon=0.0))
    done = play(data, ledger, store, spec.model_copy(update={"holdout": 0.0}), policy)
    assert {c.period for c in ledger.charges("p")} == {period}
    paid = done.charged.amount
    assert done.remaining.amount == pytest.approx(3.5 - 1.0 - paid, abs=1e-8)
    assert ledger.spent("p", "epsilon", period=period) == pytest.approx(1.0 + paid, abs=1e-8)
    # the quarter cannot pay for another such job, whatever the lifetime account says
    with pytest.raises(BudgetExhausted):
        play(data, ledger, store, spec.model_copy(update={"holdout": 0.0}), policy, job="j2")
