"""Researcher queries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import CurrentResearcher, State, study_fields_from_sites
from gateway.api.errors import responses
from gateway.api.examples import QUERY_EXAMPLES
from gateway.queries import preview_query, run_query, stored_result
from varde.query import Query
from varde.results import PreviewResult, QueryResult, StoredQuery

router = APIRouter(prefix="/v1/queries", tags=["queries"])

QueryBody = Annotated[Query, Body(openapi_examples=QUERY_EXAMPLES)]


@router.post(
    "",
    dependencies=[Depends(study_fields_from_sites)],
    response_model=QueryResult,
    responses={
        202: {"model": QueryResult, "description": "Some sites await their staff's approval."},
        **responses(401, 403, 404, 409, 422, 503),
    },
)
async def post_query(query: QueryBody, state: State, researcher: CurrentResearcher) -> Response:
    """Ask every site (or ``sites``) one question; per-site rows, network row, budgets left.

    The result is serialised once by pydantic (it is already a validated
    ``QueryResult``) instead of FastAPI validating it again on the way out.
    """
    result = await run_query(state, query, researcher=researcher.name, projects=researcher.projects)
    # 202 when no site released yet but some wait for their staff's approval (re-submit later)
    pending = result.network is None and any(s.status == "awaiting_approval" for s in result.sites)
    return Response(
        result.model_dump_json(), status_code=202 if pending else 200, media_type="application/json"
    )


@router.post(
    "/preview",
    dependencies=[Depends(study_fields_from_sites)],
    response_model=PreviewResult,
    responses=responses(401, 403, 404, 422, 503),
)
async def post_preview(query: QueryBody, state: State, researcher: CurrentResearcher) -> Response:
    """What ``query`` would cost at each site (epsilon) and how accurate each number would be.

    Each site checks its own policy and budget and prices the query with the
    same OpenDP plan it would release through, but reads no row and charges
    nothing. Bad input is refused exactly as by ``POST /v1/queries``.
    """
    result = await preview_query(
        state, query, researcher=researcher.name, projects=researcher.projects
    )
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("/{query_id}", response_model=StoredQuery, responses=responses(401, 404))
async def get_query(researcher: CurrentResearcher, query_id: str, state: State) -> StoredQuery:
    """A past query of yours and its stored result."""
    return await run_in_threadpool(stored_result, state, query_id, researcher.name)
