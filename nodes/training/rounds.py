"""One training round at a site, as a pipeline: authorise, price, charge, then train.

The order is the node's contract (same as for queries): the round is checked
against the site's *own* policy, priced from the site's *own* ledger, and the
ledger is charged (committed, never refunded) **before** any noise is drawn or
any update leaves. A round the budget cannot pay for is refused with the
ledger's reason and nothing is computed.

Pricing (see :mod:`nodes.training.dp` for why): the job's cumulative rho so far
is read from this site's ledger, from the notes of the charges whose
``query_id`` starts with ``training:<job id>:``. What the round charges depends
on how the site's *project* accounts (its :class:`~nodes.accounts.Account`),
not on how the researcher stated the job's budget (epsilon or rho):

* ``accounting: epsilon``: ``eps(rho_before + rho_round) - eps(rho_before)`` at
  the job's delta, to the ``epsilon`` measure, capped by
  ``max_epsilon_per_query`` (the same account queries pay from);
* ``accounting: zcdp``: ``rho_round`` itself, to the ``rho`` measure against
  ``rho_budget``, capped by ``max_rho_per_query``. This needs no conversion
  even for an epsilon job: its rounds are Gaussian noise calibrated to a rho
  (:func:`varde.training.training_rho`), so rho is their exact cost.

A job pays all its rounds in one measure: if the project's accounting changed
since the job's first paid round here, the round is refused (mixing ledgers
would let the increments telescope against charges made in another measure).
The round number is the site's own count of rounds it has paid for, so a server
that resends a round pays again, and one that sends more rounds than the job
declared is refused.

The model is dispatched on ``spec.model``: logistic regression
(:mod:`nodes.training.dp`) or the site-stratified Cox model
(:mod:`nodes.training.cox`); both pay the same way. Both train only on the
site's training patients; the held-out ones are read once, by the final DP
evaluation (:mod:`nodes.training.evaluation`), which pays from the same
ledger under ``evaluation:<job id>`` and is not counted as a round.
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
from nodes.policy import Policy, ProjectPolicy, StudyColumns
from nodes.question import training_record
from nodes.store import NodeStore
from nodes.training.cox import CoxNoisePlan, noisy_cox_descent, plan_cox_noise
from nodes.training.dp import NoisePlan, noisy_gradient_descent, plan_noise
from nodes.training.features import design, survival_design
from varde.budget import ZCDP, Budget, PureDP, epsilon_for_rho
from varde.errors import PolicyViolation
from varde.training import TrainingSpec

Floats = NDArray[np.float64]


def round_cost(account: Account, rho_before: float, rho_round: float, delta: float) -> Budget:
    """What a round adding ``rho_round`` to a job at ``rho_before`` charges ``account``.

    Its rho where the project accounts in zCDP; where it accounts in epsilon, the
    increase of the job's OpenDP epsilon at ``delta`` (the rounds telescope to
    the epsilon of the job's composed rho).
    """
    if isinstance(account.total, ZCDP):
        return ZCDP(rho_round)
    return PureDP(
        epsilon_for_rho(rho_before + rho_round, delta) - epsilon_for_rho(rho_before, delta)
    )


def job_total(account: Account, rho_job: float, delta: float) -> Budget:
    """What the rounds of a job at cumulative ``rho_job`` have cost ``account`` in all."""
    if isinstance(account.total, ZCDP):
        return ZCDP(rho_job)
    return PureDP(epsilon_for_rho(rho_job, delta))


@dataclass(frozen=True)
class RoundResult:
    """What leaves the site after one round, and what it cost (in the project's measure)."""

    weights: Floats
    num_examples: float
    round: int
    charged: Budget
    job_total: Budget
    """What all the job's rounds here have cost so far."""
    remaining: Budget
    noise_scale: float


def authorize_training(
    policy: Policy,
    spec: TrainingSpec,
    *,
    researcher: str,
    approved: Callable[[], bool] | None = None,
    provided: StudyColumns | None = None,
) -> ProjectPolicy:
    """Check the job against this site's policy; raise :class:`PolicyViolation` saying why not.

    ``provided`` is the kind of each study column this site's data hold
    (:meth:`nodes.data.RegistryData.study_kinds`): a study field the job reads is
    exposed only where one of its kind is there (refused by name otherwise).

    The public terms and the researcher are :meth:`nodes.policy.Policy.authorize_training`
    (the check the gateway runs on the manifest too); budget left is the ledger's job.

    ``approved`` answers whether this site's staff approved the job (see
    :func:`nodes.training.preflight.approval_gate`; it may itself raise the
    refusal saying "awaiting approval" or the staff's reason). It is asked only
    when the policy sets ``approvals.training_jobs``, and a caller that passes
    none is refused then: the site fails closed rather than trusting that a
    pre-flight ran somewhere.
    """
    project = policy.authorize_training(spec, researcher=researcher, provided=provided)
    if policy.approvals.training_jobs and (approved is None or not approved()):
        raise PolicyViolation(
            f"training jobs at {policy.site!r} need the approval of its staff, and this job "
            "has none"
        )
    return project


def plan_round(spec: TrainingSpec, *, max_rows_per_patient: int) -> NoisePlan | CoxNoisePlan:
    """The round's OpenDP noise plan for ``spec.model`` (its ``rho_per_round`` is what is paid)."""
    if spec.model == "cox":
        return plan_cox_noise(spec, max_rows_per_patient=max_rows_per_patient)
    return plan_noise(spec, max_rows_per_patient=max_rows_per_patient)


def train_round(
    data: RegistryData, spec: TrainingSpec, weights: Floats, plan: NoisePlan | CoxNoisePlan
) -> tuple[Floats, float]:
    """Train one paid round on the site's training patients: new weights, noisy row count."""
    if isinstance(plan, CoxNoisePlan):
        rows = survival_design(data, spec)
        return noisy_cox_descent(rows, weights, plan, spec.learning_rate)
    x, y = design(data, spec)
    return noisy_gradient_descent(x, y, weights, plan, spec.learning_rate)


def job_history(ledger: Ledger, project: str, job_id: str) -> tuple[int, float, float | None]:
    """Rounds this site has paid for in ``job_id``, their cumulative rho, and the job's delta.

    Counts the rounds whichever measure paid them (``epsilon`` or ``rho``): every
    round's note records the job's cumulative rho (:func:`job_measure` says which).
    """
    prefix = f"training:{job_id}:"
    rounds, rho, delta = 0, 0.0, None
    for charge in ledger.charges(project):
        if not charge.query_id.startswith(prefix):
            continue
        note = json.loads(charge.note)
        if note.get("kind") != "training":  # the final evaluation is not a round
            continue
        rounds += 1
        rho = max(rho, float(note["rho_cumulative"]))
        delta = float(note["delta"])
    return rounds, rho, delta


def job_measure(ledger: Ledger, project: str, job_id: str) -> str | None:
    """The measure this site charged ``job_id``'s rounds in (``None``: no round paid yet)."""
    prefix = f"training:{job_id}:"
    for charge in ledger.charges(project):
        if charge.query_id.startswith(prefix):
            return charge.measure
    return None


def check_same_measure(
    ledger: Ledger, spec: TrainingSpec, job_id: str, account: Account, site: str
) -> None:
    """Refuse a job whose earlier rounds here were paid in another measure."""
    paid_in = job_measure(ledger, spec.project, job_id)
    measure = account.total.measure
    if paid_in is not None and paid_in != measure:
        raise PolicyViolation(
            f"job {job_id!r} paid its earlier rounds at {site!r} in {paid_in}, but project "
            f"{spec.project!r} now accounts in {measure} there: start a new job"
        )


def run_round(
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
) -> RoundResult:
    """Authorise, price and charge one round (audited), then train it; refuse with a reason.

    ``approved`` is the site's staff-approval check of the job (see
    :func:`authorize_training`): every round checks it, not only the pre-flight,
    so a site never relies on the server having asked first. The charge goes
    through :meth:`nodes.accounts.Account.pay`, so it has its ``charged`` entry in
    the site's audit trail (job id, round, amount).

    Raises:
        PolicyViolation: The policy refuses the job, the round would exceed the
            project's per-query cap (epsilon or rho, per the project's accounting),
            the job already ran all its rounds here, or paid them in another measure.
        BudgetExhausted: The site's remaining budget cannot pay for the round.
        Conflict: Another process paid for this very round concurrently.
    """
    project = authorize_training(
        policy, spec, researcher=researcher, approved=approved, provided=data.study_kinds()
    )
    if weights.shape != (spec.n_coefficients(),):
        raise ValueError(f"expected {spec.n_coefficients()} weights, got shape {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("the model sent for this round has non-finite coefficients")
    plan = plan_round(spec, max_rows_per_patient=data.max_rows_per_patient)
    done, rho_before, delta_before = job_history(ledger, spec.project, job_id)
    delta = spec.privacy.delta
    if delta_before is not None and delta_before != delta:
        raise PolicyViolation(f"job {job_id!r} changed its delta from {delta_before} to {delta}")
    if done >= spec.rounds:
        raise PolicyViolation(
            f"job {job_id!r} already ran its {spec.rounds} round(s) at {policy.site!r}"
        )
    account = Account.of(spec.project, project)
    check_same_measure(ledger, spec, job_id, account, policy.site)
    rho_after = rho_before + plan.rho_per_round
    cost = round_cost(account, rho_before, plan.rho_per_round, delta)
    if cost > account.cap:  # type: ignore[operator]
        raise PolicyViolation(
            f"round costs {cost}, above the per-query cap "
            f"{account.cap.amount:g} of project {spec.project!r} at {policy.site!r}"
        )
    number = done + 1
    note = json.dumps(
        {
            "kind": "training",
            "job": job_id,
            "round": number,
            "measure": cost.measure,
            "rho_round": plan.rho_per_round,
            "rho_cumulative": rho_after,
            "delta": delta,
            "noise_scale": plan.scale,
            "features": spec.features,
        }
    )
    charge = account.pay(
        ledger,
        store,
        cost=cost,
        query_id=f"training:{job_id}:round:{number}",
        what="training round",
        note=note,
        job=job_id,
        round=number,
        model=spec.model,
        researcher=researcher,
        policy_version=policy.version,
        n_cells=spec.n_coefficients(),  # the noisy coefficients this round releases
        **training_record(spec),
    )
    # Paid and committed: only now touch the rows and draw noise.
    new_weights, count = train_round(data, spec, weights, plan)
    return RoundResult(
        weights=new_weights,
        num_examples=count,
        round=number,
        charged=charge.cost,
        job_total=job_total(account, rho_after, delta),
        remaining=account.left(ledger),
        noise_scale=plan.scale,
    )
