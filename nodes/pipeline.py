"""The privacy pipeline a node runs on every work item, as small testable steps.

verify envelope -> parse query -> check policy -> compute exact aggregate ->
cost the OpenDP measurement -> **charge the ledger** -> draw noise -> release.

Each step either passes its result on or raises a :class:`VardeError`; the
node turns that error into a reasoned refusal (``SiteRelease`` with the error's
code) and audits it. Nothing random happens and nothing is released before the
ledger has committed the charge, and a lost response never refunds it. The
expiry is checked again just before charging, so an item that waited too long
(the researcher has already been told "unavailable") is never charged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from nodes.cohort import evaluate
from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.statistics import exact, plan_dp, release_aggregate
from nodes.store import NodeStore
from varde.envelope import Payload, SignedEnvelope, open_envelope, peek, utcnow
from varde.errors import EnvelopeRejected, InvalidQuery, VardeError
from varde.query import DPPrivacy, Query
from varde.release import SiteRelease, WorkItem

log = logging.getLogger("varde.node")


@dataclass
class NodeContext:
    """Everything a node needs to answer: its data, policy, ledger, keys and store."""

    site: str
    data: RegistryData
    ledger: Ledger
    store: NodeStore
    node_key: Ed25519PrivateKey
    gateway_key: str
    _policy: Policy
    _lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    """Bumped on every charge and policy change, so the manifest is rebuilt only then."""

    @property
    def policy(self) -> Policy:
        """The policy in force (swapped atomically on reload)."""
        with self._lock:
            return self._policy

    def set_policy(self, policy: Policy) -> None:
        """Put a validated policy in force; the ledger is untouched."""
        with self._lock:
            self._policy = policy
            self.generation += 1

    def charged(self) -> None:
        """Note that the ledger changed (the published budgets are stale)."""
        with self._lock:
            self.generation += 1

    def remaining(self) -> dict[str, float]:
        """Epsilon left per project under the policy in force (read from the ledger)."""
        pol = self.policy
        return {
            name: self.ledger.remaining(name, p.epsilon_budget) for name, p in pol.projects.items()
        }


def verify_step(ctx: NodeContext, envelope: SignedEnvelope) -> Payload:
    """Signature under the pinned gateway key, addressed to us, fresh, not replayed.

    The nonce is recorded together with the ``work_received`` audit entry.
    """
    claimed = peek(envelope).body
    received = {
        "query_id": claimed.get("query_id", ""),
        "project": claimed.get("project", ""),
        "researcher": claimed.get("researcher", ""),
    }
    return open_envelope(
        envelope,
        sender_key=ctx.gateway_key,
        recipient=ctx.site,
        kinds=("work",),
        seen_nonce=lambda nonce, exp: ctx.store.seen_nonce(nonce, exp, received=received),
    )


def parse_step(payload: Payload) -> tuple[WorkItem, Query]:
    """The work item and its query, validated again here: the gateway is not trusted."""
    try:
        work = WorkItem.model_validate(payload.body)
        query = Query.model_validate(work.query)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidQuery(f"{where}: {first['msg']}") from err
    if query.project != work.project:
        raise InvalidQuery("work item project and query project differ")
    return work, query


def _refusal(query_id: str, site: str, err: VardeError, started: float) -> SiteRelease:
    status = (
        err.code
        if err.code
        in {
            "policy_violation",
            "budget_exhausted",
            "invalid_query",
            "envelope_rejected",
        }
        else "error"
    )
    return SiteRelease(
        query_id=query_id,
        site=site,
        status=status,
        message=err.message,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def handle(
    ctx: NodeContext, envelope: SignedEnvelope, *, now: dt.datetime | None = None
) -> SiteRelease:
    """Run the whole pipeline on one envelope and return what may leave the node."""
    started = time.perf_counter()
    try:
        claimed_id = str(peek(envelope).body.get("query_id", ""))
    except EnvelopeRejected:
        claimed_id = ""
    try:
        payload = verify_step(ctx, envelope)
    except EnvelopeRejected as err:
        ctx.store.audit(
            "envelope_rejected", query_id=claimed_id, reason=err.reason, message=err.message
        )
        log.warning("rejected work item %s: %s", claimed_id, err.message)
        return _refusal(claimed_id, ctx.site, err, started)
    try:
        work, query = parse_step(payload)
        return _answer(ctx, payload, work, query, started, now)
    except VardeError as err:
        ctx.store.audit(err.code, query_id=claimed_id, message=err.message)
        return _refusal(claimed_id, ctx.site, err, started)
    except Exception:  # a bug must not leak details (or rows) to the gateway
        log.exception("internal error answering %s", claimed_id)
        ctx.store.audit("error", query_id=claimed_id)
        return SiteRelease(
            query_id=claimed_id, site=ctx.site, status="error", message="internal error at the site"
        )


def _answer(
    ctx: NodeContext,
    payload: Payload,
    work: WorkItem,
    query: Query,
    started: float,
    now: dt.datetime | None,
) -> SiteRelease:
    policy = ctx.policy
    proj = policy.authorize(query, researcher=work.researcher)
    k = policy.privacy_unit.max_tumours_per_patient
    mask = evaluate(ctx.data, query.cohort)
    ex = exact(ctx.data, mask, query)
    common = {
        "query_id": work.query_id,
        "site": ctx.site,
        "project": query.project,
        "statistic": query.statistic.kind,
        "axes": query.axes(),
        "budget_total": proj.epsilon_budget,
    }
    if isinstance(query.privacy, DPPrivacy):
        plan = plan_dp(ex, query, epsilon=query.privacy.epsilon, max_rows=k)
        if (now or utcnow()) >= payload.header.expires_at:
            raise EnvelopeRejected("expired", "work item expired before it could be charged")
        charge = ctx.ledger.charge(
            project=query.project,
            amount=plan.epsilon,
            budget=proj.epsilon_budget,
            query_id=work.query_id,
            note=query.statistic.kind,
        )
        ctx.charged()
        cells = plan.release()
        remaining = max(0.0, proj.epsilon_budget - charge.spent_after)
        ctx.store.audit(
            "released",
            query_id=work.query_id,
            project=query.project,
            epsilon=plan.epsilon,
            mechanism=plan.mechanism,
            cells=[c.model_dump(mode="json") for c in cells[:50]],
        )
        return SiteRelease(
            **common,
            status="ok",
            mode="dp",
            epsilon_charged=plan.epsilon,
            mechanism=plan.mechanism,
            noise_scales=plan.noise_scales,
            cells=cells,
            budget_remaining=remaining,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )
    cells = release_aggregate(ex, query, min_cell=policy.aggregate.min_cell)
    ctx.store.audit(
        "released",
        query_id=work.query_id,
        project=query.project,
        epsilon=0.0,
        mechanism="aggregate",
    )
    return SiteRelease(
        **common,
        status="ok",
        mode="aggregate",
        mechanism=f"exact, cells < {policy.aggregate.min_cell} suppressed",
        cells=cells,
        budget_remaining=ctx.ledger.remaining(query.project, proj.epsilon_budget),
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
