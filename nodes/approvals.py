"""Manual approvals: work the site's policy says must wait for a decision of its staff.

Why here and why this shape: a site may want a human to look at a project's
first request, or at any query asking for a lot of epsilon, before anything
is computed or charged. The gateway's query call has a timeout (seconds), and
staff decide in hours, so work cannot be *held* open. The honest design:

1. The node answers at once with status ``awaiting_approval`` and the site's
   message, records a pending request (with a short id staff can act on), and
   audits it. Nothing is computed, nothing charged.
2. Staff decide with ``varde node approve/deny --state-dir DIR ID [--reason]``
   or in the site console (a decision is audited in the same transaction that
   records it). Approving a *project* is a change of what may leave the site,
   so it is written into the policy file as a new version
   (``approvals.approved_projects``, :mod:`nodes.policy_edits`): the policy,
   not this table, is what lets the project through, and staff who take the
   project out of that list revoke the approval (the request waits again).
3. The researcher re-submits the same query. The node recognises the request
   by its canonical key and answers it (approved), or refuses it with the
   staff's reason (denied), which reaches the researcher as the refusal
   message.

Keys: a project approval is keyed by the project (it lets every later query of
that project through); a query approval by a hash of project, researcher and
the validated query (so a re-submission written differently but parsed to the
same query matches). An approval stays valid: a repeat of a released question
is answered from the release cache for free, so re-use releases nothing new.

Training jobs (``approvals.training_jobs``) follow the same path, checked by
the ClientApp (:func:`nodes.training.preflight.check_training_approval`): a
job is keyed by project, researcher and the canonical job spec *without* the
job id and without the server's choice of sites (``sites``, ``min_sites``: who
else takes part changes nothing this site releases), so the researcher's
re-submission of the same job, which gets a new job id, matches. Unlike a
repeated query, a re-run *does* spend budget again: staff approve the job as
described (model, features, rounds, epsilon), and each run of it pays its own
rounds from the project's budget, which staff also control.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Column, Engine, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.exc import IntegrityError

from nodes.audit import AuditLog, canonical_json
from nodes.question import describe_query, describe_training, question_record, training_record
from nodes.sqlite import create_tables
from nodes.statistics import price
from varde.envelope import utcnow
from varde.errors import NotFound, PolicyViolation, VardeError
from varde.query import DPPrivacy, Query
from varde.release import SiteRelease, WorkItem
from varde.training import TrainingSpec

if TYPE_CHECKING:
    from nodes.policy import Policy

__all__ = [
    "ApprovalBook",
    "ApprovalRequest",
    "AwaitingApproval",
    "approval_step",
    "describe_training",
    "planned_cost",
    "request_summary",
    "request_key",
    "training_request_key",
]

RequestKind = Literal["project", "query", "training"]
Status = Literal["pending", "approved", "denied"]

_meta = MetaData()
approval_requests = Table(
    "approval_requests",
    _meta,
    Column("id", String(16), primary_key=True),
    Column("key", String(80), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),
    Column("status", String(10), nullable=False, index=True),
    Column("project", String(100), nullable=False),
    Column("researcher", String(100), nullable=False),
    Column("query_id", String(64), nullable=False),
    Column("epsilon", String(40), nullable=False, default=""),
    Column("query", Text, nullable=False, default="{}"),
    Column("why", Text, nullable=False, default=""),
    Column("created_at", String(40), nullable=False),
    Column("decided_at", String(40), nullable=False, default=""),
    Column("decided_by", String(100), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class ApprovalRequest:
    """One request waiting for (or having had) a staff decision."""

    id: str
    key: str
    kind: RequestKind
    status: Status
    project: str
    researcher: str
    query_id: str
    epsilon: float | None
    query: str
    why: str
    created_at: str
    decided_at: str
    decided_by: str
    reason: str


def _row(row: object) -> ApprovalRequest:
    r = row._mapping  # type: ignore[attr-defined]
    return ApprovalRequest(
        id=r["id"],
        key=r["key"],
        kind=r["kind"],
        status=r["status"],
        project=r["project"],
        researcher=r["researcher"],
        query_id=r["query_id"],
        epsilon=float(r["epsilon"]) if r["epsilon"] else None,
        query=r["query"],
        why=r["why"],
        created_at=r["created_at"],
        decided_at=r["decided_at"],
        decided_by=r["decided_by"],
        reason=r["reason"],
    )


def request_key(kind: RequestKind, query: Query, researcher: str) -> str:
    """The canonical key a re-submission is recognised by."""
    if kind == "project":
        return f"project:{query.project}"
    spec = query.model_dump(mode="json", exclude_none=True)
    spec.pop("timeout_s", None)  # how long to wait is not part of the question
    body = canonical_json({"project": query.project, "researcher": researcher, "query": spec})
    return "query:" + hashlib.sha256(body.encode()).hexdigest()


class AwaitingApproval(VardeError):
    """The work waits for a decision of the site's staff; nothing was computed or charged."""

    status = 409
    code = "awaiting_approval"


def training_request_key(spec: TrainingSpec, researcher: str) -> str:
    """The canonical key of a training job: the same job from the same researcher matches.

    >>> from varde.training import TrainingPrivacy
    >>> job = TrainingSpec(project="p", features=["sex"], rounds=2,
    ...                    privacy=TrainingPrivacy(epsilon=1.0))
    >>> elsewhere = job.model_copy(update={"sites": ["oslo", "bergen"], "min_sites": 2})
    >>> training_request_key(job, "alice") == training_request_key(elsewhere, "alice")
    True
    >>> training_request_key(job, "alice") == training_request_key(job, "bob")
    False
    """
    # exclude_none: a new optional field of the spec must not void earlier approvals
    body = spec.model_dump(mode="json", exclude={"sites", "min_sites"}, exclude_none=True)
    text = canonical_json({"project": spec.project, "researcher": researcher, "job": body})
    return "training:" + hashlib.sha256(text.encode()).hexdigest()


class ApprovalBook:
    """Approval requests in the node's database, each change audited in its transaction."""

    def __init__(self, engine: Engine, write_engine: Engine, log: AuditLog) -> None:
        self.engine = engine
        self.write_engine = write_engine
        self.log = log
        create_tables(_meta, write_engine)

    def get_by_key(self, key: str) -> ApprovalRequest | None:
        """The request with this canonical key, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(approval_requests).where(approval_requests.c.key == key)
            ).one_or_none()
        return None if row is None else _row(row)

    def get(self, request_id: str) -> ApprovalRequest:
        """The request with this id; :class:`NotFound` names it otherwise."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(approval_requests).where(approval_requests.c.id == request_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"no approval request {request_id!r} at this node")
        return _row(row)

    def requests(self, status: Status | None = None) -> list[ApprovalRequest]:
        """Requests, oldest first (optionally only those with ``status``)."""
        stmt = select(approval_requests).order_by(approval_requests.c.created_at)
        if status is not None:
            stmt = stmt.where(approval_requests.c.status == status)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]

    def request(
        self,
        kind: RequestKind,
        key: str,
        *,
        work: WorkItem,
        query: Query,
        why: str,
        cost: dict[str, Any] | None = None,
    ) -> ApprovalRequest:
        """Record a pending request (or return the one already recorded under ``key``).

        ``cost`` is what the query would spend here and its 95% error
        (:func:`planned_cost`), audited with the request so staff see the price
        of what they approve.
        """
        epsilon = query.privacy.epsilon if isinstance(query.privacy, DPPrivacy) else None
        return self._record(
            kind,
            key,
            project=query.project,
            researcher=work.researcher,
            query_id=work.query_id,
            epsilon=epsilon,
            body=query.model_dump(mode="json", exclude_none=True),
            why=why,
            audited={**question_record(query), "cost": cost},
        )

    def request_training(
        self, key: str, *, spec: TrainingSpec, job_id: str, researcher: str, why: str
    ) -> ApprovalRequest:
        """Record a pending training-job request (or return the one already under ``key``).

        ``query_id`` is ``training:<job id>`` of the run that asked first; the
        job's epsilon (for all rounds) fills the epsilon column staff see.
        """
        return self._record(
            "training",
            key,
            project=spec.project,
            researcher=researcher,
            query_id=f"training:{job_id}"[:64],
            epsilon=spec.privacy.epsilon,
            body=spec.model_dump(mode="json", exclude={"sites", "min_sites"}),
            why=why,
            audited=training_record(spec),
        )

    def _record(
        self,
        kind: RequestKind,
        key: str,
        *,
        project: str,
        researcher: str,
        query_id: str,
        epsilon: float | None,
        body: dict[str, object],
        why: str,
        audited: dict[str, Any],
    ) -> ApprovalRequest:
        request_id = "ap-" + secrets.token_hex(4)
        try:
            with self.write_engine.begin() as conn:
                conn.execute(
                    insert(approval_requests).values(
                        id=request_id,
                        key=key,
                        kind=kind,
                        status="pending",
                        project=project,
                        researcher=researcher,
                        query_id=query_id,
                        epsilon=repr(epsilon) if epsilon is not None else "",
                        query=canonical_json(body),
                        why=why,
                        created_at=utcnow().isoformat(timespec="microseconds"),
                    )
                )
                self.log.append(
                    conn,
                    "approval_requested",
                    query_id=query_id,
                    project=project,
                    detail={
                        "request": request_id,
                        "kind": kind,
                        "researcher": researcher,
                        "epsilon": epsilon,
                        "why": why,
                        **audited,
                    },
                )
        except IntegrityError:  # the same request arrived concurrently: one row wins
            pass
        found = self.get_by_key(key)
        assert found is not None
        return found

    def decide(
        self, request_id: str, *, approve: bool, by: str, reason: str = ""
    ) -> ApprovalRequest:
        """Approve or deny a request (a denied one may later be approved, and vice versa)."""
        status: Status = "approved" if approve else "denied"
        if not approve and not reason.strip():
            raise ValueError("a denial needs a reason: the researcher is told why")
        with self.write_engine.begin() as conn:
            row = conn.execute(
                select(approval_requests).where(approval_requests.c.id == request_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"no approval request {request_id!r} at this node")
            current = _row(row)
            if current.status == status:
                return current
            conn.execute(
                update(approval_requests)
                .where(approval_requests.c.id == request_id)
                .values(
                    status=status,
                    decided_at=utcnow().isoformat(timespec="microseconds"),
                    decided_by=by,
                    reason=reason,
                )
            )
            self.log.append(
                conn,
                "approval_granted" if approve else "approval_denied",
                query_id=current.query_id,
                project=current.project,
                detail={
                    "request": request_id,
                    "kind": current.kind,
                    "researcher": current.researcher,
                    "by": by,
                    "reason": reason,
                    "summary": request_summary(current),
                },
            )
        return self.get(request_id)

    def reopen(self, request_id: str, *, why: str) -> ApprovalRequest:
        """Put a decided request back to pending (audited), e.g. a project approval revoked."""
        with self.write_engine.begin() as conn:
            current = self.get(request_id)
            conn.execute(
                update(approval_requests)
                .where(approval_requests.c.id == request_id)
                .values(status="pending", why=why, decided_at="", decided_by="", reason="")
            )
            self.log.append(
                conn,
                "approval_reopened",
                query_id=current.query_id,
                project=current.project,
                detail={"request": request_id, "kind": current.kind, "why": why},
            )
        return self.get(request_id)


def request_summary(req: ApprovalRequest) -> str:
    """The one-line question of a stored request (never raises: staff must see something).

    A request stored under an older schema that no longer validates shows why.
    """
    try:
        body = json.loads(req.query)
        if req.kind == "training":
            return describe_training(TrainingSpec.model_validate(body))
        return describe_query(Query.model_validate(body))
    except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
        return f"(the stored question no longer reads as a {req.kind}: {str(err)[:200]})"


def planned_cost(query: Query, policy: Policy) -> dict[str, Any] | None:
    """What ``query`` would spend at this site and its 95% error, from the plan (no row read).

    None in aggregate mode (no DP budget); a budget the mechanism cannot price
    gives its reason instead of numbers.
    """
    asked = query.budget
    if asked is None:
        return None
    try:
        plan = price(query, asked, max_rows=policy.privacy_unit.max_tumours_per_patient)
    except VardeError as err:
        return {"measure": asked.measure, "amount": asked.amount, "problem": err.message}
    return {
        "measure": plan.cost.measure,
        "amount": plan.cost.amount,
        "mechanism": plan.mechanism,
        "error_95": dict(plan.accuracy),
    }


def _needed(policy: Policy, query: Query) -> list[tuple[RequestKind, str]]:
    rules = policy.approvals
    out: list[tuple[RequestKind, str]] = []
    if rules.new_projects and query.project not in rules.approved_projects:
        out.append(("project", f"project {query.project!r} is new at this site"))
    if (
        rules.epsilon_above is not None
        and isinstance(query.privacy, DPPrivacy)
        and query.privacy.epsilon > rules.epsilon_above
    ):
        out.append(
            (
                "query",
                f"epsilon {query.privacy.epsilon:g} is above {rules.epsilon_above:g}, "
                "which this site reviews by hand",
            )
        )
    return out


def approval_step(
    book: ApprovalBook, site: str, work: WorkItem, query: Query, policy: Policy, started: float
) -> SiteRelease | None:
    """Pass work the policy lets through; otherwise answer ``awaiting_approval`` or refuse.

    Runs after the policy check and before anything is computed or charged.
    Returns None when the work may proceed. Raises :class:`PolicyViolation`
    carrying the staff's reason when the request was denied.
    """
    needed = _needed(policy, query)
    if not needed:
        return None
    waiting: list[str] = []
    for kind, why in needed:  # every request at once: staff see all of them in one round
        key = request_key(kind, query, work.researcher)
        found = book.get_by_key(key)
        if found is not None and found.status == "approved" and kind == "project":
            # The policy is the source of truth: an approved project missing from
            # approvals.approved_projects was taken out by staff, so it waits again.
            found = book.reopen(found.id, why=f"{why} (not in approvals.approved_projects)")
        if found is not None and found.status == "approved":
            continue
        if found is not None and found.status == "denied":
            raise PolicyViolation(
                f"staff at {site!r} denied request {found.id}"
                + (f": {found.reason}" if found.reason else "")
            )
        req = found or book.request(
            kind, key, work=work, query=query, why=why, cost=planned_cost(query, policy)
        )
        waiting.append(f"request {req.id}: {why}")
    if not waiting:
        return None
    note = policy.approvals.message
    return SiteRelease(
        query_id=work.query_id,
        site=site,
        project=query.project,
        status="awaiting_approval",
        message=(
            f"awaiting approval at {site} ({'; '.join(waiting)}); nothing was computed or "
            "charged: submit the same query again once it is approved"
            + (f". {note}" if note else "")
        ),
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
