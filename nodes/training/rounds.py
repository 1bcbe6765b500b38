"""One training round at a site, as a pipeline: authorise, price, charge, then train.

The order is the node's contract (same as for queries): the round is checked
against the site's *own* policy, priced from the site's *own* ledger, and the
ledger is charged (committed, never refunded) **before** any noise is drawn or
any update leaves. A round the budget cannot pay for is refused with the
ledger's reason and nothing is computed.

Pricing (see :mod:`nodes.training.dp` for why): the job's cumulative rho so far
is read from this site's ledger, from the notes of the charges whose
``query_id`` starts with ``training:<job id>:``. The round's charge is
``eps(rho_before + rho_round) - eps(rho_before)`` at the job's delta. The
round number is the site's own count of rounds it has paid for, so a server
that resends a round pays again, and one that sends more rounds than the job
declared is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.policy import Policy, ProjectPolicy
from nodes.training.dp import epsilon_for_rho, noisy_gradient_descent, plan_noise
from nodes.training.features import design
from varde.errors import PolicyViolation
from varde.training import TrainingSpec

Floats = NDArray[np.float64]

LEDGER_MEASURE = "epsilon"
"""Training pays from the same account as queries (see :mod:`nodes.training.dp`)."""


@dataclass(frozen=True)
class RoundResult:
    """What leaves the site after one round, and what it cost."""

    weights: Floats
    num_examples: float
    round: int
    epsilon_charged: float
    epsilon_job: float
    epsilon_remaining: float
    noise_scale: float


def authorize_training(policy: Policy, spec: TrainingSpec, *, researcher: str) -> ProjectPolicy:
    """Check the job against this site's policy; raise :class:`PolicyViolation` saying why not.

    Budget is the ledger's job, except for a project with no budget at all.
    """
    project = policy.projects.get(spec.project)
    if project is None:
        raise PolicyViolation(f"site {policy.site!r} does not serve project {spec.project!r}")
    if project.researchers is not None and researcher not in project.researchers:
        raise PolicyViolation(
            f"researcher {researcher!r} is not allowed on project {spec.project!r} "
            f"at {policy.site!r}"
        )
    hidden = sorted(spec.fields_read() - set(policy.fields))
    if hidden:
        raise PolicyViolation(f"site {policy.site!r} does not expose field(s) {', '.join(hidden)}")
    if project.epsilon_budget == 0:
        raise PolicyViolation(f"project {spec.project!r} has no epsilon budget at {policy.site!r}")
    return project


def job_history(ledger: Ledger, project: str, job_id: str) -> tuple[int, float, float | None]:
    """Rounds this site has paid for in ``job_id``, their cumulative rho, and the job's delta."""
    prefix = f"training:{job_id}:"
    rounds, rho, delta = 0, 0.0, None
    for charge in ledger.charges(project):
        if not charge.query_id.startswith(prefix):
            continue
        note = json.loads(charge.note)
        rounds += 1
        rho = max(rho, float(note["rho_cumulative"]))
        delta = float(note["delta"])
    return rounds, rho, delta


def run_round(
    *,
    data: RegistryData,
    policy: Policy,
    ledger: Ledger,
    spec: TrainingSpec,
    job_id: str,
    researcher: str,
    weights: Floats,
) -> RoundResult:
    """Authorise, price and charge one round, then train it; refuse with a reason instead.

    Raises:
        PolicyViolation: The policy refuses the job, the round would exceed the
            project's per-query epsilon cap, or the job already ran all its rounds here.
        BudgetExhausted: The site's remaining budget cannot pay for the round.
        Conflict: Another process paid for this very round concurrently.
    """
    project = authorize_training(policy, spec, researcher=researcher)
    if weights.shape != (spec.n_coefficients(),):
        raise ValueError(f"expected {spec.n_coefficients()} weights, got shape {weights.shape}")
    plan = plan_noise(spec, max_rows_per_patient=data.max_rows_per_patient)
    done, rho_before, delta_before = job_history(ledger, spec.project, job_id)
    delta = spec.privacy.delta
    if delta_before is not None and delta_before != delta:
        raise PolicyViolation(f"job {job_id!r} changed its delta from {delta_before} to {delta}")
    if done >= spec.rounds:
        raise PolicyViolation(
            f"job {job_id!r} already ran its {spec.rounds} round(s) at {policy.site!r}"
        )
    rho_after = rho_before + plan.rho_per_round
    eps_before = epsilon_for_rho(rho_before, delta)
    eps_after = epsilon_for_rho(rho_after, delta)
    increment = eps_after - eps_before
    if increment > project.max_epsilon_per_query:
        raise PolicyViolation(
            f"round costs epsilon {increment:.4g}, above the per-query cap "
            f"{project.max_epsilon_per_query} of project {spec.project!r} at {policy.site!r}"
        )
    number = done + 1
    note = json.dumps(
        {
            "kind": "training",
            "job": job_id,
            "round": number,
            "rho_round": plan.rho_per_round,
            "rho_cumulative": rho_after,
            "delta": delta,
            "noise_scale": plan.scale,
            "features": spec.features,
        }
    )
    charge = ledger.charge(
        project=spec.project,
        amount=increment,
        budget=project.epsilon_budget,
        query_id=f"training:{job_id}:round:{number}",
        measure=LEDGER_MEASURE,
        note=note,
    )
    # Paid and committed: only now touch the rows and draw noise.
    x, y = design(data, spec)
    new_weights, count = noisy_gradient_descent(x, y, weights, plan, spec.learning_rate)
    return RoundResult(
        weights=new_weights,
        num_examples=count,
        round=number,
        epsilon_charged=charge.amount,
        epsilon_job=eps_after,
        epsilon_remaining=ledger.remaining(spec.project, project.epsilon_budget, LEDGER_MEASURE),
        noise_scale=plan.scale,
    )
