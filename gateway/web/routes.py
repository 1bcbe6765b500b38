"""The page's routes under ``/feasibility``: login, the page, its static files, its API.

The API part is a thin same-origin layer over the JSON API's own route functions
(:mod:`gateway.api.routes.catalog`, :mod:`gateway.api.routes.queries`): the same
validation, per-site checks, charges and records, only authenticated by the
session cookie (reads) plus the CSRF header (preview, run, logout) instead of a
bearer token. The token itself is typed once into the login form, posted, hashed
and never stored, echoed or put in a URL.
"""

from __future__ import annotations

import hmac
import secrets
import typing
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Body, Depends, Request, params
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import State
from gateway.api.errors import responses
from gateway.api.routes import catalog, queries
from gateway.core.security import token_hash
from gateway.web.codes import morphology_terms, topography_groups
from gateway.web.deps import (
    ActingResearcher,
    LiveSession,
    PageResearcher,
    Sealer,
    checked_csrf,
    researcher_by_hash,
)
from gateway.web.pages import HEADERS, app_page, login_page, static_file
from gateway.web.sessions import SESSION_COOKIE, SessionSealer, WebSession
from varde.errors import NotFound
from varde.query import Query

router = APIRouter(prefix="/feasibility", include_in_schema=False)

LOGIN_CSRF_COOKIE = "varde_login_csrf"
_MAX_FORM = 4096


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, only for the page's paths; Secure when served over https."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/feasibility",
    )


def _keep_alive(
    response: Response, request: Request, sealer: SessionSealer, session: WebSession
) -> Response:
    """``response`` with the session sealed again: its idle time starts over."""
    _cookie(response, request, SESSION_COOKIE, sealer.refresh(session))
    return response


def _fresh_login(request: Request, error: str = "", status: int = 200) -> Response:
    """The login form with a new double-submit CSRF value (cookie and hidden field)."""
    csrf = secrets.token_urlsafe(32)
    response = login_page(csrf, error, status)
    _cookie(response, request, LOGIN_CSRF_COOKIE, csrf)
    return response


@router.get("")
def feasibility_page(request: Request, state: State, sealer: Sealer) -> Response:
    """The page for a logged-in researcher; anyone else is sent to the login form."""
    session = sealer.read(request.cookies.get(SESSION_COOKIE))
    who = researcher_by_hash(state, session.token_hash) if session else None
    if session is None or who is None:
        return RedirectResponse("/feasibility/login", status_code=303, headers=HEADERS)
    return _keep_alive(app_page(who.name, session.csrf), request, sealer, session)


@router.get("/login")
def get_login(request: Request) -> Response:
    """The login form."""
    return _fresh_login(request)


async def _login_form(request: Request) -> dict[str, list[str]] | None:
    """The posted login form, or None when it is too large or not a form (read capped)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM:
            return None
    try:
        return parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:
        return None


@router.post("/login")
async def post_login(request: Request, state: State, sealer: Sealer) -> Response:
    """Check the posted token; on success open a session and go to the page."""
    form = await _login_form(request)
    if form is None:
        return _fresh_login(request, "The login form was not understood; please try again.", 400)
    sent = (form.get("csrf") or [""])[0]
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        return _fresh_login(request, "The login form was stale; please log in again.", 400)
    token = (form.get("token") or [""])[0].strip()
    if not token:
        return _fresh_login(request, "Paste your researcher token.", 401)
    hashed = token_hash(token)
    if await run_in_threadpool(researcher_by_hash, state, hashed) is None:
        return _fresh_login(request, "Unknown or revoked token.", 401)
    response = RedirectResponse("/feasibility", status_code=303, headers=HEADERS)
    _cookie(response, request, SESSION_COOKIE, sealer.open(hashed)[0])
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/feasibility")
    return response


@router.post("/logout", dependencies=[Depends(checked_csrf)])
def post_logout() -> Response:
    """End the session in this browser (needs its CSRF header: no other site can log you out)."""
    response = Response(status_code=204, headers=HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/feasibility")
    return response


@router.get("/static/{name}")
def get_static(name: str) -> Response:
    """One of the page's own scripts or styles (a fixed list; nothing else is served)."""
    found = static_file(name)
    if found is None:
        raise NotFound(f"no static file {name!r}")
    return found


def count_units() -> list[str]:
    """What a query may count (``Query.unit``); empty where the language counts tumours only."""
    info = Query.model_fields.get("unit")
    if info is None:
        return []
    return [str(a) for a in typing.get_args(info.annotation) if isinstance(a, str)]


@router.get("/api/catalog", responses=responses(401))
def get_catalog(
    request: Request,
    state: State,
    researcher: PageResearcher,
    session: LiveSession,
    sealer: Sealer,
    response: Response,
) -> dict[str, Any]:
    """Everything the criteria builder needs, in one call: who, schema, sites, codes, units."""
    response.headers["Cache-Control"] = "no-store"
    _keep_alive(response, request, sealer, session)
    return {
        "researcher": researcher.name,
        "projects": researcher.projects,
        "fields": [f.model_dump() for f in catalog.get_schema(state, researcher)],
        "sites": [s.model_dump() for s in catalog.get_sites(state, researcher)],
        "topography": [{"code": c, "name": n} for c, n in topography_groups()],
        "morphology": [{"code": c, "name": n} for c, n in morphology_terms()],
        "units": count_units(),
    }


@router.get("/api/budgets", responses=responses(401))
def get_budgets(
    request: Request,
    state: State,
    researcher: PageResearcher,
    session: LiveSession,
    sealer: Sealer,
    response: Response,
) -> dict[str, Any]:
    """Budget, cap and what is left per project and site (as ``GET /v1/budgets``)."""
    response.headers["Cache-Control"] = "no-store"
    _keep_alive(response, request, sealer, session)
    return catalog.get_budgets(researcher, state)


QueryBody = Annotated[Query, Body()]


def same_dependencies(endpoint: Callable[..., Any]) -> list[params.Depends]:
    """The route-level dependencies of the JSON API's route for ``endpoint``.

    Whatever that route runs before validating a body (e.g. completing study fields from
    the sites' declarations), the page's route runs too, so both read a body alike.
    """
    for route in queries.router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return list(route.dependencies)
    raise LookupError(f"no API route for {endpoint.__name__}")  # pragma: no cover


@router.post(
    "/api/preview",
    dependencies=same_dependencies(queries.post_preview),
    responses=responses(401, 403, 404, 422, 503),
)
async def post_preview(
    request: Request,
    query: QueryBody,
    state: State,
    researcher: ActingResearcher,
    session: LiveSession,
    sealer: Sealer,
) -> Response:
    """What the question would charge at each site and its ±95% error (``/v1/queries/preview``)."""
    response = await queries.post_preview(query, state, researcher)
    return _keep_alive(response, request, sealer, session)


@router.post(
    "/api/queries",
    dependencies=same_dependencies(queries.post_query),
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def post_query(
    request: Request,
    query: QueryBody,
    state: State,
    researcher: ActingResearcher,
    session: LiveSession,
    sealer: Sealer,
) -> Response:
    """Run the question (``POST /v1/queries``): per-site rows, network row, budgets left."""
    response = await queries.post_query(query, state, researcher)
    return _keep_alive(response, request, sealer, session)
