"""The final DP evaluation of a trained model on a site's held-out patients.

What is released: one table of counts over public bins
(:mod:`varde.training_metrics`): for a logistic model the held-out rows by
outcome class and predicted-probability bin; for a Cox model by
(censored/event, public time bin, risk bin of the linear predictor). Every
metric (AUC, accuracy, sensitivity and specificity at 0.5, concordance) is
computed by the server from these noisy tables, so the site releases nothing
else about its held-out rows.

Privacy: the held-out patients are a public hash split
(:func:`nodes.training.features.holdout_mask`), never used by any training
round. Each held-out row falls in exactly one cell and a patient has at most
``k`` rows, so adding or removing a patient moves the table by at most ``k``
in L1: the table goes through OpenDP's discrete Laplace with that
sensitivity, calibrated to the job's ``privacy.evaluation_epsilon``
(:meth:`varde.training.TrainingPrivacy.evaluation_budget`; for a rho job
``sqrt(2 evaluation_rho)``). That part of the job's budget is carved out
first (the rounds are calibrated to the rest), so the job's total charge is
still at most its epsilon (or rho); the ledger adds the two by basic
composition. (Training and held-out patients are disjoint by a
data-independent rule, so parallel composition would allow charging only the
larger of the two; we charge the sum, which is never less.)

What is charged follows the site's project accounting
(its :class:`~nodes.accounts.Account`): the counts' epsilon where it is
``epsilon``; where it is ``zcdp``, the rho that OpenDP's
``make_pureDP_to_zCDP`` gives the very measurement built here (an epsilon-DP
release is ``epsilon**2 / 2``-zCDP), so for a rho job it is at most
``evaluation_rho``. Pure epsilon at an epsilon site rather than the zCDP
increment ``eps(rho_rounds + rho_eval) - eps(rho_rounds)``: both are valid,
and for jobs of useful size the pure charge is the smaller.

Order, as for a round (:mod:`nodes.training.rounds`): the site's policy is
checked, the ledger is charged under ``evaluation:<job id>`` (once per job: a
second evaluation is refused by the ledger; not a round, so
:func:`nodes.training.rounds.job_history` does not count it), and only then are the
held-out rows read and the noise drawn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nodes.accounts import Account
from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.mechanisms import Mechanism, plan_laplace
from nodes.policy import Policy
from nodes.question import training_record
from nodes.store import NodeStore
from nodes.training.cox import linear_predictor
from nodes.training.dp import sigmoid
from nodes.training.features import design, survival_design
from nodes.training.rounds import authorize_training
from varde.budget import ZCDP, Budget, pure_release_rho
from varde.errors import PolicyViolation
from varde.training import TrainingSpec
from varde.training_metrics import (
    risk_bins,
    risk_bounds,
    score_bins,
    table_shape,
    time_bins,
)

Floats = NDArray[np.float64]
Counts = NDArray[np.int64]


@dataclass(frozen=True)
class EvaluationResult:
    """What leaves the site: the noisy count table, and what it cost (project's measure)."""

    table: Counts
    charged: Budget
    remaining: Budget
    noise_scale: float
    mechanism: str


def evaluation_cost(
    spec: TrainingSpec, account: Account, *, max_rows_per_patient: int
) -> tuple[Mechanism, Budget]:
    """The evaluation's OpenDP plan and what it charges ``account`` (its measure).

    The counts are pure epsilon-DP; a project accounting in zCDP pays the rho
    OpenDP's ``make_pureDP_to_zCDP`` gives this very measurement.

    Raises:
        ValueError: The job has no evaluation.
    """
    plan = plan_laplace(
        sensitivity=max_rows_per_patient, epsilon=spec.privacy.evaluation_budget(), integer=True
    )
    if isinstance(account.total, ZCDP):
        return plan, ZCDP(pure_release_rho(plan.measurement, max_rows_per_patient))
    return plan, plan.cost


def evaluation_table(data: RegistryData, spec: TrainingSpec, weights: Floats) -> Counts:
    """Exact counts of the held-out rows over the model's public bins (never released as is)."""
    shape = table_shape(spec.model)
    table = np.zeros(shape, dtype=np.int64)
    if spec.model == "cox":
        rows = survival_design(data, spec, "holdout")
        bounds = risk_bounds(weights.tolist(), spec.features, spec.study_fields)
        risk = risk_bins(linear_predictor(rows.x, weights), bounds)
        np.add.at(table, (rows.event.astype(np.int64), time_bins(rows.time), risk), 1)
    else:
        x, y = design(data, spec, "holdout")
        bins = score_bins(sigmoid(x @ weights))
        np.add.at(table, (y.astype(np.int64), bins), 1)
    return table


def evaluate_model(
    *,
    data: RegistryData,
    policy: Policy,
    ledger: Ledger,
    store: NodeStore,
    spec: TrainingSpec,
    job_id: str,
    researcher: str,
    weights: Floats,
    approved: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """Authorise and charge the evaluation (audited), then release the noisy count table.

    Raises:
        PolicyViolation: The policy refuses the job, the job has no evaluation,
            or its epsilon is above the project's per-query cap.
        BudgetExhausted: The site's remaining budget cannot pay for it.
        Conflict: This job was already evaluated here.
    """
    project = authorize_training(
        policy, spec, researcher=researcher, approved=approved, provided=data.study_kinds()
    )
    if weights.shape != (spec.n_coefficients(),):
        raise ValueError(f"expected {spec.n_coefficients()} weights, got shape {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("the model to evaluate has non-finite coefficients")
    if spec.privacy.evaluation_budget() <= 0:
        raise PolicyViolation(f"job {job_id!r} declared no evaluation (evaluation budget 0)")
    account = Account.of(spec.project, project)
    plan, cost = evaluation_cost(spec, account, max_rows_per_patient=data.max_rows_per_patient)
    if cost > account.cap:  # type: ignore[operator]
        raise PolicyViolation(
            f"evaluation costs {cost}, above the per-query cap "
            f"{account.cap.amount:g} of project {spec.project!r} at {policy.site!r}"
        )
    note = json.dumps(
        {
            "kind": "evaluation",
            "job": job_id,
            "model": spec.model,
            "measure": cost.measure,
            "epsilon": plan.cost.amount,
            "rho": cost.amount if isinstance(cost, ZCDP) else None,
            "mechanism": plan.mechanism,
            "noise_scale": plan.scale,
            "holdout": spec.holdout,
        }
    )
    charge = account.pay(
        ledger,
        store,
        cost=cost,
        query_id=f"evaluation:{job_id}",
        what="evaluation",
        note=note,
        job=job_id,
        model=spec.model,
        researcher=researcher,
        policy_version=policy.version,
        **training_record(spec),
    )
    # Paid and committed: only now read the held-out rows and draw the noise.
    exact = evaluation_table(data, spec, np.asarray(weights, dtype=np.float64))
    noisy = plan.release(exact.ravel()).reshape(exact.shape)
    return EvaluationResult(
        table=np.asarray(noisy, dtype=np.int64),
        charged=charge.cost,
        remaining=account.left(ledger),
        noise_scale=plan.scale,
        mechanism=plan.mechanism,
    )
