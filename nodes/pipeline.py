"""The privacy pipeline a node runs on every work item, as small testable steps.

verify envelope -> parse query -> check policy -> answer a repeat from the
release cache (:mod:`nodes.release_cache`, nothing charged) -> compute exact
aggregate -> cost the OpenDP measurement -> **charge the ledger** -> draw noise
-> store in the cache -> release.

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
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from nodes.approvals import approval_step
from nodes.cohort import evaluate
from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.periods import period_key
from nodes.policy import Policy, ProjectPolicy
from nodes.release_cache import CachedRelease, ReleaseCache, cache_key, data_digest
from nodes.statistics import cost_dp, cost_zcdp, exact, plan_dp, plan_zcdp, release_aggregate
from nodes.store import NodeStore
from varde.envelope import Payload, SignedEnvelope, open_envelope, peek, utcnow
from varde.errors import EnvelopeRejected, InvalidQuery, VardeError
from varde.query import AggregatePrivacy, DPPrivacy, Query, ZCDPPrivacy
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
    _cache: ReleaseCache | None = None
    _data_version: str = ""
    clock: Callable[[], dt.datetime] = utcnow
    """Time for budget periods (a test can move it; envelope expiry has its own ``now``)."""

    def __post_init__(self) -> None:
        # Create the cache's table now, before worker threads race to (SQLite refuses a
        # lock upgrade inside a read transaction, so concurrent first-use DDL fails).
        self._cache = ReleaseCache(self.store.engine)

    @property
    def release_cache(self) -> ReleaseCache:
        """The repeat-query cache, in the store's database."""
        assert self._cache is not None
        return self._cache

    @property
    def data_version(self) -> str:
        """A digest of the loaded data: new data means a repeat is a new question."""
        with self._lock:
            if not self._data_version:
                self._data_version = data_digest(self.data)
            return self._data_version

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

    def period(self, project: ProjectPolicy) -> str:
        """The ledger account (budget period) a charge for ``project`` goes to now."""
        return period_key(project.budget_period, self.clock())

    @staticmethod
    def measure(project: ProjectPolicy) -> str:
        """The ledger measure of ``project``: ``epsilon``, or ``rho`` under zCDP accounting."""
        return "rho" if project.accounting == "zcdp" else "epsilon"

    @staticmethod
    def budget_of(project: ProjectPolicy) -> float:
        """The project's budget per period, in its own measure."""
        return project.rho_budget if project.accounting == "zcdp" else project.epsilon_budget

    def left(self, name: str, project: ProjectPolicy) -> float:
        """What ``name`` has left in its current budget period, in its own measure."""
        return self.ledger.remaining(
            name,
            self.budget_of(project),
            measure=self.measure(project),
            period=self.period(project),
        )

    def remaining(self) -> dict[str, float]:
        """Budget left per project in its own measure (rho for zcdp projects; current period)."""
        pol = self.policy
        return {name: self.left(name, p) for name, p in pol.projects.items()}


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


def _preview(
    ctx: NodeContext,
    work: WorkItem,
    query: Query,
    budget: float,
    cached: bool,
    started: float,
) -> SiteRelease:
    """What ``query`` would cost here and how accurate it would be; no row read, no charge.

    Runs after the policy check, so a preview refuses exactly what the real
    query would. A repeat that the cache would answer costs nothing.
    """
    remaining = ctx.left(query.project, ctx.policy.projects[query.project])
    common = {
        "query_id": work.query_id,
        "site": ctx.site,
        "project": query.project,
        "statistic": query.statistic.kind,
        "axes": query.axes(),
        "budget_total": budget,
        "budget_remaining": remaining,
        "preview": True,
        "cached": cached,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    }
    ctx.store.audit("previewed", query_id=work.query_id, project=query.project)
    if isinstance(query.privacy, AggregatePrivacy):
        min_cell = ctx.policy.aggregate.min_cell
        return SiteRelease(
            **common,
            status="ok",
            mode="aggregate",
            mechanism=f"exact, cells < {min_cell} suppressed",
        )
    k = ctx.policy.privacy_unit.max_tumours_per_patient
    zcdp = isinstance(query.privacy, ZCDPPrivacy)
    plan = (
        cost_zcdp(query, rho=query.privacy.rho, max_rows=k)
        if isinstance(query.privacy, ZCDPPrivacy)
        else cost_dp(query, epsilon=query.privacy.epsilon, max_rows=k)
    )
    planned = 0.0 if cached else plan.epsilon
    short = planned > remaining
    word = "rho" if zcdp else "epsilon"
    return SiteRelease(
        **common,
        status="budget_exhausted" if short else "ok",
        message=(
            f"project {query.project!r} has {remaining:.6g} {word} left at {ctx.site!r}; "
            f"the query needs {planned:.6g}"
            if short
            else ("a repeat: the cached release would be returned" if cached else "")
        ),
        mode=query.privacy.mode,
        epsilon_planned=0.0 if zcdp else planned,
        rho_planned=planned if zcdp else 0.0,
        mechanism=plan.mechanism,
        noise_scales=plan.noise_scales,
        noise_std=plan.noise_std,
        accuracy=plan.accuracy,
    )


def _repeat(
    ctx: NodeContext,
    work: WorkItem,
    query: Query,
    budget: float,
    hit: CachedRelease,
    started: float,
) -> SiteRelease:
    """A repeat of a released question: the same cells again, nothing charged.

    Policy has been checked again before this (a revoked project gets no
    answer, cached or not); the budget has not, because nothing is spent.
    """
    ctx.store.audit(
        "released_from_cache",
        query_id=work.query_id,
        project=query.project,
        first_query_id=hit.query_id,
    )
    return SiteRelease(
        query_id=work.query_id,
        site=ctx.site,
        project=query.project,
        statistic=query.statistic.kind,
        axes=query.axes(),
        budget_total=budget,
        status="ok",
        mode="zcdp" if isinstance(query.privacy, ZCDPPrivacy) else "dp",
        message=f"repeat of query {hit.query_id}: the same release again, nothing charged",
        epsilon_charged=0.0,
        mechanism=hit.mechanism,
        noise_scales=hit.noise_scales,
        cells=hit.cells,
        budget_remaining=ctx.left(query.project, ctx.policy.projects[query.project]),
        cached=True,
        elapsed_ms=(time.perf_counter() - started) * 1000,
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
    noisy = not isinstance(query.privacy, AggregatePrivacy)
    key = cache_key(query, ctx.data_version) if noisy else ""
    hit = ctx.release_cache.get(key) if key else None
    budget = ctx.budget_of(proj)
    if work.preview:
        return _preview(ctx, work, query, budget, hit is not None, started)
    waiting = approval_step(ctx, work, query, policy, started)  # staff decide first
    if waiting is not None:
        return waiting
    if hit is not None:
        return _repeat(ctx, work, query, budget, hit, started)
    mask = evaluate(ctx.data, query.cohort)
    ex = exact(ctx.data, mask, query)
    common = {
        "query_id": work.query_id,
        "site": ctx.site,
        "project": query.project,
        "statistic": query.statistic.kind,
        "axes": query.axes(),
        "budget_total": budget,
    }
    if isinstance(query.privacy, DPPrivacy | ZCDPPrivacy):
        zcdp = isinstance(query.privacy, ZCDPPrivacy)
        plan = (
            plan_zcdp(ex, query, rho=query.privacy.rho, max_rows=k)
            if isinstance(query.privacy, ZCDPPrivacy)
            else plan_dp(ex, query, epsilon=query.privacy.epsilon, max_rows=k)
        )
        if (now or utcnow()) >= payload.header.expires_at:
            raise EnvelopeRejected("expired", "work item expired before it could be charged")
        charge = ctx.ledger.charge(
            project=query.project,
            amount=plan.epsilon,
            budget=budget,
            query_id=work.query_id,
            note=query.statistic.kind,
            measure=ctx.measure(proj),
            period=ctx.period(proj),
        )
        ctx.charged()
        cells = plan.release()
        ctx.release_cache.put(
            key,
            query.project,
            CachedRelease(
                query_id=work.query_id,
                epsilon=plan.epsilon,
                mechanism=plan.mechanism,
                noise_scales=plan.noise_scales,
                cells=cells,
            ),
        )
        remaining = max(0.0, budget - charge.spent_after)
        ctx.store.audit(
            "released",
            query_id=work.query_id,
            project=query.project,
            epsilon=0.0 if zcdp else plan.epsilon,
            rho=plan.epsilon if zcdp else 0.0,
            mechanism=plan.mechanism,
            cells=[c.model_dump(mode="json") for c in cells[:50]],
            spent_after=charge.spent_after,  # the charge, for the audit trail (issue 5)
            budget_total=budget,
            policy_version=policy.version,
        )
        return SiteRelease(
            **common,
            status="ok",
            mode=query.privacy.mode,
            epsilon_charged=0.0 if zcdp else plan.epsilon,
            rho_charged=plan.epsilon if zcdp else 0.0,
            mechanism=plan.mechanism,
            noise_scales=plan.noise_scales,
            noise_std=plan.noise_std,
            accuracy=plan.accuracy,
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
        cells=[c.model_dump(mode="json") for c in cells[:50]],  # released values (issue 5)
        policy_version=policy.version,
    )
    return SiteRelease(
        **common,
        status="ok",
        mode="aggregate",
        mechanism=f"exact, cells < {policy.aggregate.min_cell} suppressed",
        cells=cells,
        budget_remaining=ctx.left(query.project, proj),
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )
