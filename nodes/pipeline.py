"""The privacy pipeline a node runs on every work item, as small steps tested one by one.

::

    verify -> parse -> authorise -> resolve -> cache -> preview -> approval
           -> repeat -> price -> expiry -> charge -> release -> audit

Each step is a function ``step(ctx, item) -> SiteRelease | None`` (Flower's
mods are the model): it reads and fills in the :class:`WorkState` it is
handed, and either returns ``None`` (go on) or the release that ends the item
early (a preview, an "awaiting approval", a repeat from the cache). A step
that refuses raises a :class:`~varde.errors.VardeError`; :func:`handle` turns it
into a reasoned refusal (``SiteRelease`` with the error's code) and audits it.

Everything the node holds (data, ledger, store, keys, the policy in force) is
its :class:`~nodes.context.NodeContext`. The state carries **one policy
snapshot** from the first step to the last: a policy hot-reloaded while an
item is in flight applies to the next item, never to half of this one.
Nothing random happens and nothing is released before the ledger has committed
the charge (:meth:`nodes.accounts.Account.pay`, which
also audits it), and a lost response never refunds it. The expiry is checked
again just before charging, so an item that waited too long (the researcher has
already been told "unavailable") is never charged. Training rounds and the DP
evaluation pay through the same :class:`~nodes.accounts.Account` and are
authorised by the same policy methods (:mod:`nodes.training.rounds`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nodes.aggregate import aggregate_cells, aggregate_mechanism
from nodes.approvals import approval_step
from nodes.cohort import evaluate
from nodes.context import NodeContext
from nodes.ledger import Charge
from nodes.policy import Policy, ProjectPolicy
from nodes.question import claimed_question, question_record
from nodes.release_cache import CachedRelease, cache_key
from nodes.statistics import Plan, exact, plan, price
from nodes.statistics.accuracy_first import site_budget
from varde.envelope import Payload, SignedEnvelope, open_envelope, peek, utcnow
from varde.errors import EnvelopeRejected, InvalidQuery, VardeError
from varde.logs import bound_request_id, carried_request_id
from varde.query import Query
from varde.release import Cell, SiteRelease, WorkItem

log = logging.getLogger("varde.node")


@dataclass
class WorkState:
    """One work item on its way through the pipeline: what the steps found out so far.

    ``policy`` is the snapshot every step uses; later fields are filled in by
    the step named in their comment.
    """

    envelope: SignedEnvelope
    policy: Policy
    started: float = field(default_factory=time.perf_counter)
    now: dt.datetime | None = None
    """Time of the expiry check before charging (None: the current UTC time)."""
    payload: Payload | None = None  # verify
    work: WorkItem | None = None  # parse
    query: Query | None = None  # parse
    project: ProjectPolicy | None = None  # authorise
    cache_key: str = ""  # cache
    cached: CachedRelease | None = None  # cache
    note: str = ""  # resolve: what an accuracy target cost here, said with the release
    plan: Plan | None = None  # price
    charge: Charge | None = None  # charge
    cells: list[Cell] = field(default_factory=list)  # release

    # --- what later steps may rely on (a step run out of order fails loudly) -----------------

    @property
    def item(self) -> WorkItem:
        """The parsed work item."""
        assert self.work is not None, "parse runs first"
        return self.work

    @property
    def question(self) -> Query:
        """The parsed query."""
        assert self.query is not None, "parse runs first"
        return self.query

    @property
    def terms(self) -> ProjectPolicy:
        """The project's policy at this site."""
        assert self.project is not None, "authorise runs first"
        return self.project

    @property
    def priced(self) -> Plan:
        """The costed release plan."""
        assert self.plan is not None, "price runs first"
        return self.plan

    def about(self) -> dict[str, Any]:
        """What every audit entry about the parsed item carries: who asked what, under which policy.

        The canonical question (JSON and its one-line summary, :mod:`nodes.question`),
        the researcher and the policy version, so the trail answers "who asked what"
        without joining entries.
        """
        return {
            "researcher": self.item.researcher,
            **question_record(self.question),
            "policy_version": self.policy.version,
        }

    def elapsed_ms(self) -> float:
        """Milliseconds since the item arrived."""
        return (time.perf_counter() - self.started) * 1000

    def release(self, ctx: NodeContext, **fields: Any) -> SiteRelease:
        """A release of this item, with what every answer about it carries."""
        query = self.question
        account = ctx.account(query.project, self.terms)
        common: dict[str, Any] = {
            "query_id": self.item.query_id,
            "site": ctx.site,
            "project": query.project,
            "statistic": query.statistic.kind,
            "axes": query.axes(),
            "budget_total": account.total,
            "elapsed_ms": self.elapsed_ms(),
        }
        if "budget_remaining" not in fields:
            common["budget_remaining"] = account.left(ctx.ledger)
        return SiteRelease(**common, **fields)


Step = Callable[[NodeContext, WorkState], SiteRelease | None]


def verify(ctx: NodeContext, item: WorkState) -> None:
    """Signature under the pinned gateway key, addressed to us, fresh, not replayed.

    The nonce is recorded together with the ``work_received`` audit entry.
    """
    claimed = peek(item.envelope).body
    received = {
        "query_id": claimed.get("query_id", ""),
        "project": claimed.get("project", ""),
        "researcher": claimed.get("researcher", ""),
        **claimed_question(claimed.get("query")),
        "policy_version": item.policy.version,
    }
    item.payload = open_envelope(
        item.envelope,
        sender_key=ctx.gateway_key,
        recipient=ctx.site,
        kinds=("work",),
        seen_nonce=lambda nonce, exp: ctx.store.seen_nonce(nonce, exp, received=received),
    )


def parse(_ctx: NodeContext, item: WorkState) -> None:
    """The work item and its query, validated again here: the gateway is not trusted."""
    assert item.payload is not None, "verify runs first"
    try:
        work = WorkItem.model_validate(item.payload.body)
        query = Query.model_validate(work.query)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidQuery(f"{where}: {first['msg']}") from err
    if query.project != work.project:
        raise InvalidQuery("work item project and query project differ")
    item.work, item.query = work, query


def authorise(ctx: NodeContext, item: WorkState) -> None:
    """The site's public terms (:func:`varde.terms.check_query`) and its private checks."""
    item.project = item.policy.authorize(
        item.question, researcher=item.item.researcher, provided=ctx.data.study_kinds()
    )


def resolve(ctx: NodeContext, item: WorkState) -> None:
    """An accuracy target becomes this site's least budget for it; above the cap, a refusal.

    From here on the item asks the same question with that budget (the steps after see
    an epsilon or rho, as if the researcher had named it), so the cache, approvals,
    pricing and the charge need nothing new. The budget depends on the policy's ``k``
    and the statistic, never on a row (:mod:`nodes.statistics.accuracy_first`).
    """
    query = item.question
    if query.accuracy is None:
        return
    k = item.policy.privacy_unit.max_tumours_per_patient
    budget, item.note = site_budget(query, item.terms.cap, max_rows=k, site=ctx.site)
    item.query = query.resolved(budget)


def cache(ctx: NodeContext, item: WorkState) -> None:
    """Look the question up in the release cache (DP releases only; aggregates are exact)."""
    if item.question.budget is not None:
        item.cache_key = cache_key(item.question, ctx.data_version)
        item.cached = ctx.release_cache.get(item.cache_key)


def preview(ctx: NodeContext, item: WorkState) -> SiteRelease | None:
    """A dry run: what the query would cost here and how accurate it would be.

    Runs after the policy check, so a preview refuses exactly what the real
    query would; no row is read and nothing is charged. A repeat that the
    cache would answer costs nothing.
    """
    if not item.item.preview:
        return None
    query = item.question
    asked = query.budget
    if asked is None:
        ctx.store.audit(
            "previewed", query_id=item.item.query_id, project=query.project, **item.about()
        )
        return item.release(
            ctx,
            status="ok",
            mode="aggregate",
            mechanism=aggregate_mechanism(item.policy, query),
            preview=True,
        )
    costed = price(query, asked, max_rows=item.policy.privacy_unit.max_tumours_per_patient)
    planned = costed.cost.like(0.0) if item.cached is not None else costed.cost
    ctx.store.audit(
        "previewed",
        query_id=item.item.query_id,
        project=query.project,
        **item.about(),
        measure=planned.measure,
        amount=planned.amount,
        error_95=costed.accuracy,
    )
    left = ctx.account(query.project, item.terms).left(ctx.ledger)
    short = planned > left  # type: ignore[operator]
    message = ""
    if short:
        message = (
            f"project {query.project!r} has {left.amount:.6g} {left.measure} left at "
            f"{ctx.site!r}; the query needs {planned.amount:.6g}"
        )
    elif item.cached is not None:
        message = "a repeat: the cached release would be returned"
    else:
        message = item.note
    return item.release(
        ctx,
        status="budget_exhausted" if short else "ok",
        message=message,
        mode=query.privacy.mode,
        planned=planned,
        mechanism=costed.mechanism,
        noise_scales=costed.noise_scales,
        noise_std=costed.noise_std,
        accuracy=costed.accuracy,
        budget_remaining=left,
        cached=item.cached is not None,
        preview=True,
    )


def approval(ctx: NodeContext, item: WorkState) -> SiteRelease | None:
    """Staff decide first where the policy says so (:mod:`nodes.approvals`)."""
    return approval_step(
        ctx.store.approvals, ctx.site, item.item, item.question, item.policy, item.started
    )


def repeat(ctx: NodeContext, item: WorkState) -> SiteRelease | None:
    """A repeat of a released question: the same cells again, nothing charged.

    Policy and approvals have been checked again before this (a revoked project
    gets no answer, cached or not); the budget has not, because nothing is spent.
    """
    hit = item.cached
    if hit is None:
        return None
    ctx.store.audit(
        "released_from_cache",
        query_id=item.item.query_id,
        project=item.question.project,
        first_query_id=hit.query_id,
        **item.about(),
        measure=hit.cost.measure,
        amount=0.0,
        n_cells=len(hit.cells),
    )
    return item.release(
        ctx,
        status="ok",
        mode=item.question.privacy.mode,
        message=f"repeat of query {hit.query_id}: the same release again, nothing charged",
        charged=hit.cost.like(0.0),
        mechanism=hit.mechanism,
        noise_scales=hit.noise_scales,
        cells=hit.cells,
        cached=True,
    )


def price_step(ctx: NodeContext, item: WorkState) -> None:
    """Read the cohort's rows and build the costed OpenDP plan (nothing random yet).

    A budget the mechanism cannot represent is refused here by name, before
    anything is charged (:func:`nodes.statistics.plan`).
    """
    query = item.question
    asked = query.budget
    if asked is None:
        return
    ex = exact(ctx.data, evaluate(ctx.data, query.cohort), query)
    k = item.policy.privacy_unit.max_tumours_per_patient
    item.plan = plan(ex, query, asked, max_rows=k)


def expiry(_ctx: NodeContext, item: WorkState) -> None:
    """An item that waited past its expiry is refused uncharged (the gateway gave up on it)."""
    assert item.payload is not None, "verify runs first"
    if (
        item.question.budget is not None
        and (item.now or utcnow()) >= item.payload.header.expires_at
    ):
        raise EnvelopeRejected("expired", "work item expired before it could be charged")


def charge(ctx: NodeContext, item: WorkState) -> None:
    """Pay the plan's cost from the project's account: committed, audited, never refunded."""
    if item.plan is None:
        return
    query = item.question
    item.charge = ctx.account(query.project, item.terms).pay(
        ctx.ledger,
        ctx.store,
        cost=item.plan.cost,
        query_id=item.item.query_id,
        what="query",
        note=query.statistic.kind,
        statistic=query.statistic.kind,
        **item.about(),
    )
    ctx.charged()


def release(ctx: NodeContext, item: WorkState) -> None:
    """Draw the noise (paid for) and cache the release; or the exact, suppressed aggregate."""
    query = item.question
    if item.plan is None:
        item.cells = aggregate_cells(ctx, item.question, item.policy, item.item.query_id)
        return
    costed = item.priced
    item.cells = costed.release()
    ctx.release_cache.put(
        item.cache_key,
        query.project,
        CachedRelease(
            query_id=item.item.query_id,
            cost=costed.cost,
            mechanism=costed.mechanism,
            noise_scales=costed.noise_scales,
            cells=item.cells,
        ),
    )


def audit(ctx: NodeContext, item: WorkState) -> SiteRelease:
    """Audit what leaves (the first cells, mechanism, policy version) and answer with it."""
    query = item.question
    costed = item.plan
    mechanism = costed.mechanism if costed else aggregate_mechanism(item.policy, query)
    ctx.store.audit(
        "released",
        query_id=item.item.query_id,
        project=query.project,
        **item.about(),
        mode=query.privacy.mode,
        charged=dataclasses.asdict(costed.cost) if costed else None,
        measure=costed.cost.measure if costed else None,
        amount=costed.cost.amount if costed else 0.0,
        mechanism=mechanism if costed else "aggregate",
        n_cells=len(item.cells),
        cells=[c.model_dump(mode="json") for c in item.cells[:50]],
    )
    noise: dict[str, Any] = {}
    if costed is not None:
        noise = {
            "charged": costed.cost,
            "noise_scales": costed.noise_scales,
            "noise_std": costed.noise_std,
            "accuracy": costed.accuracy,
        }
    return item.release(
        ctx,
        status="ok",
        mode=query.privacy.mode,
        message=item.note,
        mechanism=mechanism,
        cells=item.cells,
        **noise,
    )


PIPELINE: Sequence[Step] = (
    verify,
    parse,
    authorise,
    resolve,
    cache,
    preview,
    approval,
    repeat,
    price_step,
    expiry,
    charge,
    release,
)
"""The steps in order; :func:`audit` ends every item that got through all of them."""


def _refusal(query_id: str, site: str, err: VardeError, started: float) -> SiteRelease:
    known = {
        "policy_violation",
        "field_not_available",
        "budget_exhausted",
        "invalid_query",
        "envelope_rejected",
    }
    return SiteRelease(
        query_id=query_id,
        site=site,
        status=err.code if err.code in known else "error",
        message=err.message,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def run(ctx: NodeContext, item: WorkState, steps: Sequence[Step] | None = None) -> SiteRelease:
    """Run ``steps`` (default :data:`PIPELINE`) on ``item``; a step's release ends it early."""
    for step in PIPELINE if steps is None else steps:
        early = step(ctx, item)
        if early is not None:
            return early
    return audit(ctx, item)


def handle(
    ctx: NodeContext, envelope: SignedEnvelope, *, now: dt.datetime | None = None
) -> SiteRelease:
    """:func:`answer`, logged under the item's request id, which the release carries back.

    The id is read before the signature is checked (a refusal is logged under it
    too); it is only a label (:func:`varde.logs.carried_request_id`), never trusted
    for anything else.
    """
    try:
        claimed = peek(envelope).body.get("request_id", "")
    except EnvelopeRejected:
        claimed = ""
    rid = carried_request_id(claimed)
    with bound_request_id(rid):
        release = answer(ctx, envelope, now=now)
        log.info(
            "work item %s answered %s in %.0f ms",
            release.query_id,
            release.status,
            release.elapsed_ms,
            extra={"site": ctx.site, "query_id": release.query_id, "status": release.status},
        )
    return release.model_copy(update={"request_id": rid})


def answer(
    ctx: NodeContext, envelope: SignedEnvelope, *, now: dt.datetime | None = None
) -> SiteRelease:
    """Run the whole pipeline on one envelope and return what may leave the node.

    Never raises: a refusal is a release with the error's code, and a bug in a
    step is audited and answered as ``error`` without its details (or rows).
    """
    item = WorkState(envelope=envelope, policy=ctx.policy, now=now)
    try:
        claimed_id = str(peek(envelope).body.get("query_id", ""))
    except EnvelopeRejected:
        claimed_id = ""
    try:
        return run(ctx, item)
    except EnvelopeRejected as err:
        kind, extra = "envelope_rejected", {"reason": err.reason}
        if item.payload is None:
            log.warning("rejected work item %s: %s", claimed_id, err.message)
        refusal: VardeError = err
    except VardeError as err:
        kind, extra, refusal = err.code, {}, err
    except Exception:  # a bug must not leak details (or rows) to the gateway
        log.exception("internal error answering %s", claimed_id)
        ctx.store.audit("error", query_id=claimed_id)
        return SiteRelease(
            query_id=claimed_id, site=ctx.site, status="error", message="internal error at the site"
        )
    if item.work is not None and item.query is not None:  # parsed: say who asked what
        extra = {**item.about(), **extra}
    project = item.query.project if item.query is not None else ""
    ctx.store.audit(kind, query_id=claimed_id, project=project, message=refusal.message, **extra)
    return _refusal(claimed_id, ctx.site, refusal, item.started)
