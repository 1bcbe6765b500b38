"""One training round at a site, as a pipeline: authorise, price, charge, then train.

The order is the node's contract (same as for queries): the round is checked
against the site's *own* policy, priced from the site's *own* ledger, and the
ledger is charged (committed, never refunded) **before** any noise is drawn or
any update leaves. A round the budget cannot pay for is refused with the
ledger's reason and nothing is computed.

Pricing (see :mod:`nodes.training.dp` for why): the job's cumulative rho so far
is read from this site's ledger, from the notes of the charges whose
``query_id`` starts with ``training:<job id>:``. What the round charges depends
on how the site's *project* accounts (:func:`site_account`), not on how the
researcher stated the job's budget (epsilon or rho):

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

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from nodes.data import RegistryData
from nodes.ledger import Charge, Ledger
from nodes.periods import period_key
from nodes.policy import Policy, ProjectPolicy
from nodes.training.cox import CoxNoisePlan, noisy_cox_descent, plan_cox_noise
from nodes.training.dp import NoisePlan, epsilon_for_rho, noisy_gradient_descent, plan_noise
from nodes.training.features import design, survival_design
from varde.envelope import utcnow
from varde.errors import PolicyViolation
from varde.training import TrainingSpec

Floats = NDArray[np.float64]

LEDGER_MEASURE: Literal["epsilon"] = "epsilon"
"""Training pays from the same account as queries (see :mod:`nodes.training.dp`):
this measure where the project accounts in epsilon, ``"rho"`` where it accounts in zCDP."""

Measure = Literal["epsilon", "rho"]


@dataclass(frozen=True)
class SiteAccount:
    """Where a project's training charges go at this site: measure, budget, per-query cap."""

    measure: Measure
    budget: float
    cap: float
    period: str = "lifetime"
    """The ledger account (budget period) charged now: the same one the project's
    queries pay from, so a quarterly budget is shared by queries and training."""

    def round_cost(self, rho_before: float, rho_round: float, delta: float) -> float:
        """What a round adding ``rho_round`` to a job at ``rho_before`` charges here."""
        if self.measure == "rho":
            return rho_round
        return epsilon_for_rho(rho_before + rho_round, delta) - epsilon_for_rho(rho_before, delta)

    def pay(
        self, ledger: Ledger, *, project: str, amount: float, query_id: str, note: str
    ) -> Charge:
        """Charge ``amount`` to this account (committed before anything is computed)."""
        return ledger.charge(
            project=project,
            amount=amount,
            budget=self.budget,
            query_id=query_id,
            measure=self.measure,
            period=self.period,
            note=note,
        )

    def left(self, ledger: Ledger, name: str, project: ProjectPolicy) -> tuple[float, float]:
        """``(epsilon, rho)`` the project has left in this period (rho 0 unless it is charged)."""
        epsilon = ledger.remaining(name, project.epsilon_budget, LEDGER_MEASURE, self.period)
        if self.measure != "rho":
            return epsilon, 0.0
        return epsilon, ledger.remaining(name, project.rho_budget, "rho", self.period)


def site_account(project: ProjectPolicy, now: dt.datetime | None = None) -> SiteAccount:
    """The account training pays from: the project's own measure and budget period.

    The same account its queries pay from now (:meth:`nodes.pipeline.NodeContext.period`).
    """
    period = period_key(project.budget_period, now or utcnow())
    if project.accounting == "zcdp":
        return SiteAccount("rho", project.rho_budget, project.max_rho_per_query or 0.0, period)
    return SiteAccount(
        LEDGER_MEASURE, project.epsilon_budget, project.max_epsilon_per_query, period
    )


@dataclass(frozen=True)
class RoundResult:
    """What leaves the site after one round, and what it cost.

    ``epsilon_*`` are in epsilon and ``rho_*`` in rho; only the fields of
    ``measure`` (the project's accounting) were charged: the others are 0
    (``epsilon_remaining`` is then the untouched epsilon account).
    """

    weights: Floats
    num_examples: float
    round: int
    epsilon_charged: float
    epsilon_job: float
    epsilon_remaining: float
    noise_scale: float
    measure: Measure = "epsilon"
    rho_charged: float = 0.0
    rho_job: float = 0.0
    rho_remaining: float = 0.0


def authorize_training(
    policy: Policy,
    spec: TrainingSpec,
    *,
    researcher: str,
    approved: Callable[[], bool] | None = None,
) -> ProjectPolicy:
    """Check the job against this site's policy; raise :class:`PolicyViolation` saying why not.

    Budget is the ledger's job, except for a project with no budget at all.

    ``approved`` answers whether this site's staff approved the job (see
    :func:`nodes.training.preflight.approval_gate`; it may itself raise the
    refusal saying "awaiting approval" or the staff's reason). It is asked only
    when the policy sets ``approvals.training_jobs``, and a caller that passes
    none is refused then: the site fails closed rather than trusting that a
    pre-flight ran somewhere.
    """
    project = policy.projects.get(spec.project)
    if project is None:
        raise PolicyViolation(f"site {policy.site!r} does not serve project {spec.project!r}")
    if project.researchers is not None and researcher not in project.researchers:
        raise PolicyViolation(
            f"researcher {researcher!r} is not allowed on project {spec.project!r} "
            f"at {policy.site!r}"
        )
    if spec.model not in project.training:
        allowed = ", ".join(project.training) or "none"
        raise PolicyViolation(
            f"site {policy.site!r} does not allow training {spec.model!r} models for project "
            f"{spec.project!r} (allowed there: {allowed})"
        )
    hidden = sorted(spec.fields_read() - set(policy.fields))
    if hidden:
        raise PolicyViolation(f"site {policy.site!r} does not expose field(s) {', '.join(hidden)}")
    if project.accounting == "zcdp" and project.rho_budget == 0:
        raise PolicyViolation(f"project {spec.project!r} has no rho budget at {policy.site!r}")
    if project.accounting == "epsilon" and project.epsilon_budget == 0:
        raise PolicyViolation(f"project {spec.project!r} has no epsilon budget at {policy.site!r}")
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
    ledger: Ledger, spec: TrainingSpec, job_id: str, account: SiteAccount, site: str
) -> None:
    """Refuse a job whose earlier rounds here were paid in another measure."""
    paid_in = job_measure(ledger, spec.project, job_id)
    if paid_in is not None and paid_in != account.measure:
        raise PolicyViolation(
            f"job {job_id!r} paid its earlier rounds at {site!r} in {paid_in}, but project "
            f"{spec.project!r} now accounts in {account.measure} there: start a new job"
        )


def run_round(
    *,
    data: RegistryData,
    policy: Policy,
    ledger: Ledger,
    spec: TrainingSpec,
    job_id: str,
    researcher: str,
    weights: Floats,
    approved: Callable[[], bool] | None = None,
) -> RoundResult:
    """Authorise, price and charge one round, then train it; refuse with a reason instead.

    ``approved`` is the site's staff-approval check of the job (see
    :func:`authorize_training`): every round checks it, not only the pre-flight,
    so a site never relies on the server having asked first.

    Raises:
        PolicyViolation: The policy refuses the job, the round would exceed the
            project's per-query cap (epsilon or rho, per the project's accounting),
            the job already ran all its rounds here, or paid them in another measure.
        BudgetExhausted: The site's remaining budget cannot pay for the round.
        Conflict: Another process paid for this very round concurrently.
    """
    project = authorize_training(policy, spec, researcher=researcher, approved=approved)
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
    account = site_account(project)
    check_same_measure(ledger, spec, job_id, account, policy.site)
    rho_after = rho_before + plan.rho_per_round
    amount = account.round_cost(rho_before, plan.rho_per_round, delta)
    if amount > account.cap:
        raise PolicyViolation(
            f"round costs {account.measure} {amount:.4g}, above the per-query cap "
            f"{account.cap} of project {spec.project!r} at {policy.site!r}"
        )
    number = done + 1
    note = json.dumps(
        {
            "kind": "training",
            "job": job_id,
            "round": number,
            "measure": account.measure,
            "rho_round": plan.rho_per_round,
            "rho_cumulative": rho_after,
            "delta": delta,
            "noise_scale": plan.scale,
            "features": spec.features,
        }
    )
    charge = account.pay(
        ledger,
        project=spec.project,
        amount=amount,
        query_id=f"training:{job_id}:round:{number}",
        note=note,
    )
    # Paid and committed: only now touch the rows and draw noise.
    new_weights, count = train_round(data, spec, weights, plan)
    zcdp = account.measure == "rho"
    epsilon_left, rho_left = account.left(ledger, spec.project, project)
    return RoundResult(
        weights=new_weights,
        num_examples=count,
        round=number,
        epsilon_charged=0.0 if zcdp else charge.amount,
        epsilon_job=0.0 if zcdp else epsilon_for_rho(rho_after, delta),
        epsilon_remaining=epsilon_left,
        noise_scale=plan.scale,
        measure=account.measure,
        rho_charged=charge.amount if zcdp else 0.0,
        rho_job=rho_after if zcdp else 0.0,
        rho_remaining=rho_left,
    )
