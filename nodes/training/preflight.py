"""The site's pre-flight check of a training job: would it run here, all of it? Charges nothing.

Why a pre-flight at all: rounds are paid for *before* they are trained
(:mod:`nodes.training.rounds`), and a lost round is never refunded. A job that
one required site would refuse (a hidden feature, a researcher not on the
project, too little budget for the whole job, no staff approval) must stop
before round 1, or every other site pays for rounds of a job that cannot
finish. So before round 1 the ServerApp sends each site a Flower ``QUERY``
message carrying the job; the ClientApp calls :func:`preflight`, which only
*reads* the site's policy and ledger, and answers ok or a refusal with the
reason.

The pre-flight is advice to the server, not the site's protection: every
round is still authorised and charged again by
:func:`nodes.training.rounds.run_round` (the budget may be spent by queries
between the pre-flight and a round, and a dishonest server may skip the
pre-flight altogether).

Extending it: add checks to :func:`preflight` that raise a
:class:`~varde.errors.VardeError` subclass (``PolicyViolation``,
``BudgetExhausted``, ...); its code and message reach the researcher as the
site's reason. ``state_dir`` is the node's state directory (ledger, approvals).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nodes.accounts import Account
from nodes.approvals import ApprovalBook, AwaitingApproval, describe_training, training_request_key
from nodes.ledger import Ledger
from nodes.policy import Policy, StudyColumns
from nodes.store import NodeStore
from nodes.training.evaluation import evaluation_cost
from nodes.training.rounds import (
    authorize_training,
    check_same_measure,
    job_history,
    job_total,
    plan_round,
    round_cost,
)
from varde.errors import BudgetExhausted, PolicyViolation
from varde.training import TrainingSpec


def preflight(
    *,
    policy: Policy,
    ledger: Ledger,
    spec: TrainingSpec,
    job_id: str,
    researcher: str,
    state_dir: Path,
    provided: StudyColumns | None = None,
) -> None:
    """Check that this site would run every remaining round of ``spec``; charge nothing.

    ``provided``: the kind of each study column the site's data hold (what its mapping
    provides; None: every declared study field is taken as there, and each round
    checks again on the data themselves).

    Mirrors the checks :func:`nodes.training.rounds.run_round` makes for each
    round, for the whole job at once, in the measure the site's project
    accounts in (its :class:`~nodes.accounts.Account`): the policy
    (project, researcher, model kind, fields), the job's delta, the per-query
    cap of the dearest remaining round and of the evaluation, and the site's
    remaining budget against what the remaining rounds will cost plus the final
    evaluation. In epsilon the rounds' increments telescope, so that is
    ``eps(rho_job) - eps(rho_paid)``; in rho it is ``rho_job - rho_paid``.
    Refusals name the site and the measure.

    Raises:
        PolicyViolation: The policy refuses the job, a round or the evaluation
            would exceed the project's per-query cap, the job already ran all
            its rounds here, or paid them in another measure.
        BudgetExhausted: What is left of the project's budget at this site
            cannot pay for the rest of the job.
    """
    project = authorize_training(
        policy,
        spec,
        researcher=researcher,
        approved=approval_gate(
            policy=policy, spec=spec, job_id=job_id, researcher=researcher, state_dir=state_dir
        ),
        provided=provided,
    )
    k = policy.privacy_unit.max_tumours_per_patient
    plan = plan_round(spec, max_rows_per_patient=k)
    done, rho_paid, delta_paid = job_history(ledger, spec.project, job_id)
    delta = spec.privacy.delta
    if delta_paid is not None and delta_paid != delta:
        raise PolicyViolation(f"job {job_id!r} changed its delta from {delta_paid} to {delta}")
    if done >= spec.rounds:
        raise PolicyViolation(
            f"job {job_id!r} already ran its {spec.rounds} round(s) at {policy.site!r}"
        )
    account = Account.of(spec.project, project)
    check_same_measure(ledger, spec, job_id, account, policy.site)
    measure, cap = account.total.measure, account.cap.amount
    dearest = round_cost(account, rho_paid, plan.rho_per_round, delta).amount
    if dearest > cap:
        raise PolicyViolation(
            f"round costs {measure} {dearest:.4g}, above the per-query cap "
            f"{cap:g} of project {spec.project!r} at {policy.site!r}"
        )
    evaluation = 0.0
    if spec.privacy.evaluation_budget() > 0:
        evaluation = evaluation_cost(spec, account, max_rows_per_patient=k)[1].amount
    if evaluation > cap:
        raise PolicyViolation(
            f"the final evaluation costs {measure} {evaluation:.4g}, above the per-query cap "
            f"{cap:g} of project {spec.project!r} at {policy.site!r}"
        )
    rho_job = rho_paid + plan.rho_per_round * (spec.rounds - done)
    # The rounds' costs telescope; the final evaluation pays after the last round.
    rounds_cost = (
        job_total(account, rho_job, delta).amount - job_total(account, rho_paid, delta).amount
    )
    needed = rounds_cost + evaluation
    left = account.left(ledger).amount
    # The ledger keeps nano-units and rounds each charge up to 1e-9: allow for that.
    if needed > left - 1e-9 * (spec.rounds - done):
        raise BudgetExhausted(
            f"privacy budget for project {spec.project!r} at {policy.site!r} cannot pay for "
            f"the job: its {spec.rounds - done} remaining round(s) and evaluation cost {measure} "
            f"{needed:.6g}, "
            f"{left:.6g} is left"
        )


# --- staff approval of training jobs (``approvals.training_jobs``) --------------------------------


def check_training_approval(
    *, policy: Policy, book: ApprovalBook, spec: TrainingSpec, job_id: str, researcher: str
) -> None:
    """Let the job through if this site's staff approved it; otherwise say why not.

    Does nothing unless the policy sets ``approvals.training_jobs``. The job is
    recognised by :func:`nodes.approvals.training_request_key` (project,
    researcher, the job without its id or the server's choice of sites), so the
    researcher re-submits the same job once it is approved. Reads and writes
    only the approval book (and its audit entry): nothing is computed or charged.

    Raises:
        AwaitingApproval: No decision yet; a pending request is recorded (once)
            and its id named: "awaiting approval at <site> (request ap-...)".
        PolicyViolation: Staff denied the job; the message carries their reason.
    """
    if not policy.approvals.training_jobs:
        return
    key = training_request_key(spec, researcher)
    found = book.get_by_key(key)
    if found is not None and found.status == "approved":
        return
    if found is not None and found.status == "denied":
        raise PolicyViolation(
            f"staff at {policy.site!r} denied training request {found.id}"
            + (f": {found.reason}" if found.reason else "")
        )
    what = describe_training(spec)
    request = found or book.request_training(
        key,
        spec=spec,
        job_id=job_id,
        researcher=researcher,
        why=f"training job: {what}; this site reviews every training job",
    )
    note = policy.approvals.message
    raise AwaitingApproval(
        f"awaiting approval at {policy.site} (request {request.id}) for the training job "
        f"{what}; nothing was computed or charged: submit the same job again once it is "
        "approved" + (f". {note}" if note else "")
    )


def approval_gate(
    *, policy: Policy, spec: TrainingSpec, job_id: str, researcher: str, state_dir: Path
) -> Callable[[], bool]:
    """The ``approved`` callback of :func:`nodes.training.rounds.authorize_training`.

    Opens the node's approval book (``state_dir/node.sqlite``) only when asked,
    i.e. only when the policy requires approval and every other check passed.
    It returns True for an approved job and raises the refusal of
    :func:`check_training_approval` otherwise, so the researcher sees
    "awaiting approval" or the staff's reason rather than a bare "no".
    The ClientApp passes the same gate for every round (``run_round``), so a
    server that skips the pre-flight still meets the site's staff.
    """

    def approved() -> bool:
        store = NodeStore.in_directory(state_dir)
        try:
            check_training_approval(
                policy=policy,
                book=store.approvals,
                spec=spec,
                job_id=job_id,
                researcher=researcher,
            )
        finally:
            store.close()
        return True

    return approved
