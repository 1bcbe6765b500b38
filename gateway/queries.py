"""Run one researcher query across the network: check, sign, fan out, wait, combine.

The gateway refuses early what it can already see is hopeless, with the very
check each node runs on its own policy (:func:`varde.terms.check_query`) applied
to the site's published manifest: project not served, field not exposed,
epsilon or rho above the site's cap, a mode the project does not account in,
budget the site reported as gone. A researcher gets a precise 4xx and no site
is bothered. Everything else is the site's decision: each node re-checks and
charges its own ledger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from gateway.admin import enrolled_sites
from gateway.combine import combine
from gateway.core.db import Project, QueryRecord, ReleaseRecord, release_record
from gateway.dispatch import Answer
from gateway.metrics import METRICS
from gateway.state import GATEWAY_ID, GatewayState
from varde.envelope import SignedEnvelope, peek, seal
from varde.errors import (
    BudgetExhausted,
    Conflict,
    FieldNotAvailable,
    Forbidden,
    InvalidQuery,
    NodeUnavailable,
    NotFound,
    PolicyViolation,
    VardeError,
)
from varde.estimates import Z95
from varde.logs import request_id
from varde.query import Query
from varde.release import Manifest, SiteRelease, WorkItem
from varde.results import PreviewResult, QueryResult, StoredQuery
from varde.suggest import unknown as unknown_name
from varde.terms import check_query


def precheck(manifest: Manifest | None, query: Query) -> tuple[str, str] | None:
    """A refusal ``(status, message)`` the site's published manifest already implies.

    The same check the node makes of its own policy (:func:`varde.terms.check_query`),
    on the terms the site published, with the budget it last reported left.
    """
    if manifest is None:
        return None
    try:
        check_query(manifest, query)
    except (PolicyViolation, BudgetExhausted) as err:
        return err.code, err.message
    return None


_ERRORS: dict[str, type[VardeError]] = {
    "policy_violation": PolicyViolation,
    "field_not_available": FieldNotAvailable,
    "budget_exhausted": BudgetExhausted,
    "invalid_query": InvalidQuery,
    "unavailable": NodeUnavailable,
}


class NoSiteAnswered(VardeError):
    """Raised when every site refused or was unavailable; carries the per-site rows."""

    def __init__(self, base: type[VardeError], message: str, rows: list[SiteRelease]) -> None:
        super().__init__(message)
        self.status = base.status  # type: ignore[misc]
        self.code = base.code  # type: ignore[misc]
        self.rows = rows

    def as_dict(self) -> dict[str, Any]:
        """Error body plus each site's reason."""
        return {**super().as_dict(), "sites": [r.model_dump(mode="json") for r in self.rows]}


def _targets(state: GatewayState, query: Query, researcher: str, projects: list[str]) -> list[str]:
    with state.sessions() as s:
        yours = f"; your projects: {', '.join(sorted(projects))}" if projects else ""
        if s.get(Project, query.project) is None:
            # the close matches and the list are the researcher's own projects, never others'
            raise NotFound(unknown_name("project", query.project, sorted(projects)))
        if query.project not in projects:
            raise Forbidden(
                f"researcher {researcher!r} is not a member of project {query.project!r}{yours}"
                " (a gateway admin adds members: varde admin researcher add)"
            )
        sites = enrolled_sites(s)
    if query.sites is None:
        if not sites:
            raise NodeUnavailable("no site has enrolled with this gateway yet")
        return sites
    unknown = sorted(set(query.sites) - set(sites))
    if unknown:
        raise NotFound(
            f"unknown site(s) {', '.join(unknown)}; enrolled: {', '.join(sites) or 'none'}"
        )
    return list(dict.fromkeys(query.sites))


async def _fan_out(
    state: GatewayState,
    query: Query,
    query_id: str,
    researcher: str,
    targets: list[str],
    *,
    preview: bool,
) -> tuple[dict[str, SiteRelease], list[Answer]]:
    """Sign one work item per site, wait for the releases; a row per target site."""
    disp = state.dispatcher
    rows: dict[str, SiteRelease] = {}
    asked: list[str] = []
    for site in targets:
        refusal = precheck(disp.manifest(site), query)
        if refusal is not None:
            rows[site] = SiteRelease(
                query_id=query_id,
                site=site,
                status=refusal[0],
                message=refusal[1],
                preview=preview,
            )
        elif not disp.connected(site):
            rows[site] = SiteRelease(
                query_id=query_id,
                site=site,
                status="unavailable",
                message=f"site {site!r} is not connected",
                preview=preview,
            )
        else:
            asked.append(site)
    if not asked:
        if preview:
            return rows, []
        _raise_if_nobody(targets, rows)
    spec = query.model_dump(mode="json", exclude_none=True)
    work = WorkItem(
        query_id=query_id,
        project=query.project,
        researcher=researcher,
        query=spec,
        preview=preview,
        request_id=request_id.get(),  # the researcher's request: the nodes log it too
    )
    ttl = dt.timedelta(seconds=query.timeout_s)
    envelopes = {
        site: seal(
            state.key,
            kind="work",
            sender=GATEWAY_ID,
            recipient=site,
            body=work.model_dump(mode="json"),
            ttl=ttl,
        )
        for site in asked
    }
    answers = await asyncio.gather(
        *(
            METRICS.timed_answer(
                site, disp.submit(site, query_id, envelopes[site], query.timeout_s)
            )
            for site in asked
        )
    )
    evidence = [a for a in answers if a is not None]
    for site, answer in zip(asked, answers, strict=True):
        rows[site] = (
            answer[0]
            if answer
            else SiteRelease(
                query_id=query_id,
                site=site,
                status="unavailable",
                message=f"site {site!r} did not answer within {query.timeout_s} s",
                preview=preview,
            )
        )
    return rows, evidence


async def run_query(
    state: GatewayState, query: Query, *, researcher: str, projects: list[str]
) -> QueryResult:
    """Fan ``query`` out to its sites and combine what they release."""
    targets = await run_in_threadpool(_targets, state, query, researcher, projects)
    query_id = uuid.uuid4().hex
    rows, evidence = await _fan_out(state, query, query_id, researcher, targets, preview=False)
    spec = query.model_dump(mode="json", exclude_none=True)
    ordered = [rows[s] for s in targets]
    waiting = any(r.status == "awaiting_approval" for r in ordered)
    if all(r.status != "ok" for r in ordered) and not waiting:
        await run_in_threadpool(
            _record, state, query_id, researcher, query.project, spec, None, evidence
        )
        _raise_if_nobody(targets, rows)
    result = _result(query, query_id, ordered)
    await run_in_threadpool(
        _record,
        state,
        query_id,
        researcher,
        query.project,
        spec,
        result.model_dump(mode="json"),
        evidence,
    )
    return result


def _result(query: Query, query_id: str, ordered: list[SiteRelease]) -> QueryResult:
    return QueryResult(
        query_id=query_id,
        project=query.project,
        statistic=query.statistic.kind,
        mode=query.privacy.mode,
        requested=query.budget,
        axes=query.axes(),
        unit=query.unit,
        sites=ordered,
        network=combine(query, ordered),
        budget_remaining={r.site: r.budget_remaining for r in ordered},
    )


async def adopt_orphan(
    state: GatewayState, work: WorkItem, sites: list[str], answers: list[Answer]
) -> None:
    """Record a query whose gateway replica died before it could (PostgreSQL replicas).

    Its researcher got no answer (the connection broke with the replica), but the
    sites that charged for it released numbers: they are kept as evidence, the
    query with the result they combine to, as :func:`run_query` would have.
    """
    query = Query.model_validate(work.query)
    came = {rel.site: rel for rel, _ in answers}
    ordered = [
        came.get(site)
        or SiteRelease(
            query_id=work.query_id,
            site=site,
            status="unavailable",
            message="the gateway replica running this query stopped before the site answered",
        )
        for site in sites
    ]
    ok = any(r.status == "ok" for r in ordered)
    result = _result(query, work.query_id, ordered).model_dump(mode="json") if ok else None
    await run_in_threadpool(
        _record, state, work.query_id, work.researcher, work.project, work.query, result, answers
    )


async def preview_query(
    state: GatewayState, query: Query, *, researcher: str, projects: list[str]
) -> PreviewResult:
    """Ask each site what ``query`` would cost there; no site reads a row or charges."""
    targets = await run_in_threadpool(_targets, state, query, researcher, projects)
    query_id = uuid.uuid4().hex
    rows, _ = await _fan_out(state, query, query_id, researcher, targets, preview=True)
    ordered = [rows[s] for s in targets]
    ok = [r for r in ordered if r.status == "ok"]
    parts = sorted({p for r in ok for p in r.noise_std})
    std = {p: math.sqrt(sum(r.noise_std.get(p, 0.0) ** 2 for r in ok)) for p in parts}
    accuracy = dict(ok[0].accuracy) if len(ok) == 1 else {p: Z95 * v for p, v in std.items()}
    return PreviewResult(
        query_id=query_id,
        project=query.project,
        statistic=query.statistic.kind,
        mode=query.privacy.mode,
        requested=query.budget,
        axes=query.axes(),
        unit=query.unit,
        cells=query.cell_count(),
        sites=ordered,
        planned={r.site: r.planned for r in ok if r.planned is not None},
        network_accuracy=accuracy,
        network_noise_std=std,
    )


def _raise_if_nobody(targets: list[str], rows: dict[str, SiteRelease]) -> None:
    ordered = [rows[s] for s in targets]
    kinds = {_ERRORS.get(r.status, Conflict) for r in ordered}
    # the most specific class every site's reason is an instance of (policy_violation and
    # field_not_available: PolicyViolation); reasons with nothing in common: Conflict
    base: type[VardeError] = next(
        (
            c
            for c in next(iter(kinds)).__mro__
            if issubclass(c, VardeError)
            and c is not VardeError
            and all(issubclass(k, c) for k in kinds)
        ),
        Conflict,
    )
    reasons = "; ".join(f"{r.site}: {r.message or r.status}" for r in ordered)
    raise NoSiteAnswered(base, f"no site released an answer ({reasons})", ordered)


def _record(
    state: GatewayState,
    query_id: str,
    researcher: str,
    project: str,
    spec: dict[str, Any],
    result: dict[str, Any] | None,
    evidence: list[Answer],
) -> None:
    """The query, its result and every signed release it got, in one transaction."""
    with state.sessions() as s:
        if s.get(QueryRecord, query_id) is not None:  # adopted by another replica meanwhile
            return
        s.add(
            QueryRecord(
                id=query_id, researcher=researcher, project=project, spec=spec, result=result
            )
        )
        s.add_all(release_record(rel, env) for rel, env in evidence)
        s.commit()


def keep_evidence(state: GatewayState, release: SiteRelease, envelope: SignedEnvelope) -> None:
    """Keep a release no query took (late, unsolicited, re-sent) as evidence, once.

    A node re-sends a release whose delivery it could not confirm (its poll broke
    with a replica), signed afresh: the same release already kept, by this route
    or with its query, is not kept again, so the recorded releases stay one per charge.
    """
    with state.sessions() as s:
        kept = s.scalars(
            select(ReleaseRecord).where(
                ReleaseRecord.query_id == release.query_id, ReleaseRecord.site == release.site
            )
        ).all()
        for row in kept:
            body = peek(SignedEnvelope(payload=row.payload, signature=row.signature)).body
            if SiteRelease.model_validate(body) == release:
                return
        s.add(release_record(release, envelope))
        s.commit()


def stored_result(state: GatewayState, query_id: str, researcher: str) -> StoredQuery:
    """A past query's result, for the researcher who asked it."""
    with state.sessions() as s:
        rec = s.scalars(select(QueryRecord).where(QueryRecord.id == query_id)).first()
        if rec is None or rec.researcher != researcher:
            raise NotFound(f"no query {query_id!r} of yours")
        return StoredQuery(
            query_id=rec.id, spec=rec.spec, created_at=rec.created_at, result=rec.result
        )
