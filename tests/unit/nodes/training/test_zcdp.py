"""Training jobs stated in rho (zCDP), and sites whose project accounts in rho.

What a site charges follows *its project's* accounting, whatever measure the
researcher stated the job in: rho to the ``rho`` account where the project is
``zcdp``, epsilon increments at the job's delta where it is ``epsilon``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from gateway.training.validation import check_job
from nodes.data import RegistryData, prepare
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore
from nodes.synth import generate_registry
from nodes.training import rounds
from nodes.training.dp import plan_noise
from nodes.training.evaluation import evaluate_model
from nodes.training.preflight import preflight
from nodes.training.rounds import job_history
from tests.unit.nodes.training.test_apps import (  # noqa: F401 (task_identity: an autouse fixture)
    make_grid,
    make_site,
    run,
    task_identity,
)
from tests.unit.nodes.training.test_rounds import play
from varde.budget import ZCDP, PureDP, epsilon_for_rho
from varde.errors import BudgetExhausted, PolicyViolation
from varde.release import Manifest, ProjectTerms
from varde.training import (
    MAX_RHO,
    TrainingPrivacy,
    TrainingSpec,
    rho_for_pure_epsilon,
    round_costs,
    training_rho,
)
from varde_client import TrainingResult, training_spec

FIELDS = ["sex", "age_at_diagnosis", "stage", "first_treatment", "vital_status", "survival_days"]
RHO = 0.3


def make_policy(
    *,
    accounting: str = "zcdp",
    rho_budget: float = 2.0,
    rho_cap: float = 1.0,
    eps_budget: float = 20.0,
    eps_cap: float = 10.0,
) -> Policy:
    project: dict[str, Any] = {
        "epsilon_budget": eps_budget,
        "max_epsilon_per_query": eps_cap,
        "training": ["logistic", "cox"],
        "accounting": accounting,
    }
    if accounting == "zcdp":
        project.update(rho_budget=rho_budget, max_rho_per_query=rho_cap)
    return Policy.model_validate(
        {
            "site": "oslo",
            "profile": "development",
            "privacy_unit": {"max_tumours_per_patient": 2},
            "fields": FIELDS,
            "statistics": ["count"],
            "projects": {"p": project},
        }
    )


def make_spec(**privacy: float) -> TrainingSpec:
    return TrainingSpec(
        project="p",
        features=["sex", "age_at_diagnosis", "stage"],
        rounds=3,
        local_steps=5,
        privacy=TrainingPrivacy.model_validate(privacy or {"rho": RHO}),
    )


@pytest.fixture(scope="module")
def data() -> RegistryData:
    return prepare(generate_registry("oslo", 4_000, seed=11), site="oslo", max_rows_per_patient=2)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger.in_directory(tmp_path) as led:
        yield led


def check(policy: Policy, ledger: Ledger, spec: TrainingSpec, tmp_path: Path, job: str = "j1"):
    preflight(
        policy=policy,
        ledger=ledger,
        spec=spec,
        job_id=job,
        researcher="alice",
        state_dir=tmp_path,
    )


def evaluate(
    data: RegistryData, ledger: Ledger, store: NodeStore, spec: TrainingSpec, policy: Policy
):
    return evaluate_model(
        data=data,
        policy=policy,
        ledger=ledger,
        store=store,
        spec=spec,
        job_id="j1",
        researcher="alice",
        weights=np.zeros(spec.n_coefficients()),
    )


# --- the spec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"epsilon": 1.0, "rho": 0.1}, "exactly one of privacy.epsilon or privacy.rho"),
        ({"delta": 1e-6}, "exactly one of privacy.epsilon or privacy.rho"),
        ({"epsilon": 1.0, "evaluation_rho": 0.01}, "evaluation_rho goes with rho"),
        ({"rho": 0.1, "evaluation_epsilon": 0.1}, "evaluation_epsilon goes with epsilon"),
        ({"rho": 0.1, "evaluation_rho": 0.1}, "evaluation_rho must be smaller than rho"),
        ({"rho": MAX_RHO * 2}, "less than or equal to"),
        ({"rho": 0.0}, "greater than 0"),
    ],
)
def test_privacy_takes_exactly_one_of_epsilon_or_rho(
    privacy: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingPrivacy.model_validate(privacy)


def test_rho_privacy_defaults_and_flat_sdk_keys() -> None:
    p = TrainingPrivacy(rho=0.5)
    assert p.measure == "rho" and p.epsilon is None
    assert p.evaluation_rho_budget() == pytest.approx(0.05)
    assert p.evaluation_budget() == pytest.approx(math.sqrt(0.1))
    with pytest.raises(ValueError, match="training_rho"):
        p.training_epsilon()
    assert TrainingPrivacy(rho=0.5, evaluation_rho=0).evaluation_budget() == 0
    assert TrainingPrivacy(epsilon=2.0).measure == "epsilon"
    base = {"project": "p", "features": ["sex"], "rounds": 2}
    job = training_spec(None, {**base, "rho": 0.4, "evaluation_rho": 0.04})
    assert (job.privacy.rho, job.privacy.evaluation_rho) == (0.4, 0.04)
    # A flat rho replaces the epsilon a spec carried (and its evaluation share).
    eps_job = training_spec(None, {**base, "epsilon": 1.0, "evaluation_epsilon": 0.2})
    assert training_spec(eps_job, {"rho": 0.4}).privacy.rho == 0.4
    with pytest.raises(ValidationError, match="exactly one"):
        training_spec(None, {**base, "rho": 0.4, "epsilon": 1.0})


# --- pricing --------------------------------------------------------------------------------------


def test_rounds_and_evaluation_sum_to_the_job_rho_at_a_zcdp_site() -> None:
    spec = make_spec(rho=RHO)
    costs = round_costs(spec, "rho")
    assert len(costs) == spec.rounds + 1
    assert costs[:-1] == pytest.approx([0.9 * RHO / 3] * 3)
    assert costs[-1] == pytest.approx(0.1 * RHO, rel=1e-12)  # OpenDP's pure -> zCDP
    assert sum(costs) == pytest.approx(RHO, rel=1e-12)
    # The sites' own noise plan pays the same rho per round.
    plan = plan_noise(spec, max_rows_per_patient=2)
    assert plan.rho_per_round == pytest.approx(costs[0], rel=1e-9)


def test_a_rho_job_at_an_epsilon_site_charges_its_rho_converted_at_its_delta() -> None:
    spec = make_spec(rho=RHO, delta=1e-7)
    costs = round_costs(spec, "epsilon")
    assert costs[0] > costs[1] > costs[2]  # increments of eps(rho) at delta
    assert sum(costs[:-1]) == pytest.approx(epsilon_for_rho(0.9 * RHO, 1e-7), rel=1e-12)
    assert costs[-1] == pytest.approx(math.sqrt(2 * 0.1 * RHO))  # the counts' pure epsilon


def test_an_epsilon_job_costs_its_calibrated_rho_at_a_zcdp_site() -> None:
    spec = make_spec(epsilon=3.0)
    costs = round_costs(spec, "rho")
    assert sum(costs[:-1]) == pytest.approx(training_rho(spec))
    assert costs[-1] == pytest.approx(0.3**2 / 2) == rho_for_pure_epsilon(0.3)
    # ... and the epsilon pricing of the same job is unchanged: it sums to its epsilon.
    assert sum(round_costs(spec)) == pytest.approx(3.0, rel=1e-6)


# --- a zcdp site ----------------------------------------------------------------------------------


def test_zcdp_site_pays_rounds_from_its_rho_ledger_before_training(
    data: RegistryData,
    ledger: Ledger,
    store: NodeStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spec, policy = make_spec(rho=RHO), make_policy()
    seen: list[float] = []
    real = rounds.noisy_gradient_descent

    def spy(*args: object, **kwargs: object):
        seen.append(ledger.spent("p", "rho"))  # committed before any noise is drawn
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds, "noisy_gradient_descent", spy)
    check(policy, ledger, spec, tmp_path)
    results = [play(data, ledger, store, spec, policy) for _ in range(spec.rounds)]
    charges = ledger.charges("p")
    assert [c.measure for c in charges] == ["rho"] * 3
    assert seen == pytest.approx([c.spent_after for c in charges])
    assert ledger.spent("p", "epsilon") == 0
    assert ledger.spent("p", "rho") == pytest.approx(0.9 * RHO, abs=1e-8)
    assert json.loads(charges[-1].note)["measure"] == "rho"
    assert job_history(ledger, "p", "j1")[:2] == (3, pytest.approx(0.9 * RHO))
    last = results[-1]
    assert isinstance(last.charged, ZCDP) and isinstance(last.job_total, ZCDP)
    assert isinstance(last.remaining, ZCDP)
    assert last.charged.rho == pytest.approx(0.3 * RHO, abs=1e-8)
    assert last.job_total.rho == pytest.approx(0.9 * RHO)
    assert last.remaining.rho == pytest.approx(2.0 - 0.9 * RHO, abs=1e-8)
    # The evaluation pays OpenDP's rho of its counts: the job costs exactly its rho.
    result = evaluate(data, ledger, store, spec, policy)
    assert isinstance(result.charged, ZCDP)
    assert result.charged.rho == pytest.approx(0.1 * RHO, abs=1e-8)
    assert ledger.spent("p", "rho") == pytest.approx(RHO, abs=1e-8)
    assert job_history(ledger, "p", "j1")[0] == 3  # the evaluation is no round


def test_an_epsilon_job_at_a_zcdp_site_pays_its_rounds_rho(
    data: RegistryData, ledger: Ledger, store: NodeStore, tmp_path: Path
) -> None:
    spec, policy = make_spec(epsilon=3.0), make_policy()
    check(policy, ledger, spec, tmp_path)
    play(data, ledger, store, spec, policy)
    assert ledger.spent("p", "rho") == pytest.approx(training_rho(spec) / 3, abs=1e-8)
    assert ledger.spent("p", "epsilon") == 0


def test_a_rho_job_at_an_epsilon_site_pays_epsilon_increments(
    data: RegistryData, ledger: Ledger, store: NodeStore, tmp_path: Path
) -> None:
    spec, policy = make_spec(rho=RHO), make_policy(accounting="epsilon")
    check(policy, ledger, spec, tmp_path)
    for _ in range(spec.rounds):
        play(data, ledger, store, spec, policy)
    evaluate(data, ledger, store, spec, policy)
    assert {c.measure for c in ledger.charges("p")} == {"epsilon"}
    assert ledger.spent("p", "rho") == 0
    assert ledger.spent("p") == pytest.approx(sum(round_costs(spec)), abs=1e-8)


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        (make_policy(rho_cap=0.05), PolicyViolation, "'oslo': round 1 costs rho 0.09.*cap 0.05"),
        (make_policy(rho_budget=0.2, rho_cap=0.2), BudgetExhausted, "'oslo'.*cost rho 0.3"),
    ],
)
def test_zcdp_refusals_name_site_and_measure_and_charge_nothing(
    data: RegistryData,
    ledger: Ledger,
    store: NodeStore,
    tmp_path: Path,
    policy: Policy,
    error: type[Exception],
    message: str,
) -> None:
    spec = make_spec(rho=RHO)
    with pytest.raises(error, match=message):
        check(policy, ledger, spec, tmp_path)
    assert ledger.charges() == []
    if error is PolicyViolation:
        with pytest.raises(PolicyViolation, match="rho .*above the per-query cap"):
            play(data, ledger, store, spec, policy)
        assert ledger.charges() == []


def test_evaluation_above_the_rho_cap_is_refused_first(
    ledger: Ledger, store: NodeStore, tmp_path: Path
) -> None:
    spec = make_spec(rho=RHO, evaluation_rho=0.2)  # rounds 0.1/3 each, evaluation 0.2
    with pytest.raises(PolicyViolation, match="final evaluation costs rho 0.2.*cap 0.1"):
        check(make_policy(rho_cap=0.1), ledger, spec, tmp_path)
    assert ledger.charges() == []


def test_a_project_without_rho_budget_and_a_changed_accounting_are_refused(
    data: RegistryData, ledger: Ledger, store: NodeStore, tmp_path: Path
) -> None:
    spec = make_spec(rho=RHO)
    with pytest.raises(BudgetExhausted, match="project 'p' has no rho budget at 'oslo'"):
        play(data, ledger, store, spec, make_policy(rho_budget=0.0, rho_cap=0.1))
    play(data, ledger, store, spec, make_policy())
    epsilon_now = make_policy(accounting="epsilon")
    with pytest.raises(PolicyViolation, match="paid its earlier rounds at 'oslo' in rho"):
        check(epsilon_now, ledger, spec, tmp_path)
    with pytest.raises(PolicyViolation, match="now accounts in epsilon"):
        play(data, ledger, store, spec, epsilon_now)
    assert len(ledger.charges()) == 1


# --- the gateway ----------------------------------------------------------------------------------


def terms(zcdp: bool, *, left: float = 10.0, cap: float = 2.0) -> ProjectTerms:
    if zcdp:
        return ProjectTerms(
            accounting="zcdp",
            budget=ZCDP(10.0),
            max_per_query=ZCDP(cap),
            remaining=ZCDP(left),
            training=["logistic"],
        )
    return ProjectTerms(
        accounting="epsilon",
        budget=PureDP(10.0),
        max_per_query=PureDP(cap),
        remaining=PureDP(left),
        training=["logistic"],
    )


def manifest(site: str, project: ProjectTerms) -> Manifest:
    return Manifest(site=site, fields=FIELDS, statistics=["count"], projects={"p": project})


@pytest.mark.parametrize(
    ("privacy", "zcdp", "left", "cap", "refusal"),
    [
        ({"rho": RHO}, True, 10.0, 2.0, None),
        ({"rho": RHO}, True, RHO, 2.0, None),  # exactly enough
        ({"rho": RHO}, True, 0.29, 2.0, "project 'p' has 0.29 rho left at 'a'; the job needs 0.3"),
        ({"rho": RHO}, True, 10.0, 0.05, "site 'a': round 1 costs rho 0.09.*smaller rho"),
        ({"rho": RHO, "evaluation_rho": 0.2}, True, 10, 0.1, "evaluation costs rho 0.2"),
        ({"epsilon": 3.0}, True, 10.0, 2.0, None),
        ({"epsilon": 3.0}, True, 0.01, 2.0, "project 'p' has 0.01 rho left at 'a'"),
        ({"rho": RHO}, False, 10.0, 5.0, None),
        ({"rho": RHO}, False, 1.0, 5.0, "project 'p' has 1 epsilon left at 'a'"),
        ({"rho": RHO}, False, 10.0, 0.5, "round 1 costs epsilon .*cap 0.5"),
        ({"epsilon": 3.0}, False, 10.0, 3.0, None),
    ],
)
def test_gateway_checks_caps_and_budget_in_the_site_measure(
    privacy: dict[str, float], zcdp: bool, left: float, cap: float, refusal: str | None
) -> None:
    spec = make_spec(**privacy)
    manifests = {
        "a": manifest("a", terms(zcdp, left=left, cap=cap)),
        "b": manifest("b", terms(not zcdp, cap=10.0)),
    }
    if refusal is None:
        assert check_job(spec, manifests) == ["a", "b"]
    else:
        with pytest.raises((PolicyViolation, BudgetExhausted), match=refusal) as err:
            check_job(spec, manifests)
        assert "'b'" not in str(err.value)


# --- a whole job: one zcdp site and one epsilon site ----------------------------------------------


def test_one_job_at_a_zcdp_site_and_an_epsilon_site(tmp_path: Path) -> None:
    sites = {
        "oslo": make_site(tmp_path, "oslo", fields=FIELDS, budget=10.0),
        "bergen": make_site(tmp_path, "bergen", fields=FIELDS, budget=10.0),
    }
    policy_file = Path(sites["oslo"]["policy"])
    doc = yaml.safe_load(policy_file.read_text())
    doc["projects"]["p"].update(accounting="zcdp", rho_budget=1.0, max_rho_per_query=1.0)
    policy_file.write_text(yaml.safe_dump(doc))
    spec = make_spec(rho=RHO)
    status = run(tmp_path, sites, spec, min_sites=2, grid=make_grid(sites))
    assert status.state == "finished", status.detail
    oslo, bergen = status.sites["oslo"], status.sites["bergen"]
    assert isinstance(oslo.spent, ZCDP) and oslo.measure == "rho"
    assert oslo.spent.rho == pytest.approx(0.9 * RHO)
    assert isinstance(bergen.spent, PureDP) and bergen.measure == "epsilon"
    assert bergen.spent.epsilon == pytest.approx(epsilon_for_rho(0.9 * RHO, 1e-6))
    with Ledger.in_directory(Path(sites["oslo"]["state-dir"])) as ledger:
        assert {c.measure for c in ledger.charges("p")} == {"rho"}
        assert ledger.spent("p", "rho") == pytest.approx(RHO, abs=1e-8)
    with Ledger.in_directory(Path(sites["bergen"]["state-dir"])) as ledger:
        assert {c.measure for c in ledger.charges("p")} == {"epsilon"}
        assert ledger.spent("p") == pytest.approx(sum(round_costs(spec)), abs=1e-8)
    assert status.metrics is not None
    oslo_paid = status.metrics.sites["oslo"].charged["oslo"]
    assert isinstance(oslo_paid, ZCDP) and oslo_paid.rho == pytest.approx(0.1 * RHO, abs=1e-8)
    assert isinstance(status.metrics.sites["bergen"].charged["bergen"], PureDP)
    frame = TrainingResult(status).sites
    assert frame.loc["oslo", "measure"] == "rho"
    assert frame.loc["oslo", "spent"] == pytest.approx(0.9 * RHO)
