"""Who is using the page: the session cookie resolved to a researcher, and the CSRF check.

Why a dependency of its own instead of teaching :func:`gateway.api.deps.current_researcher`
about cookies: the JSON API stays bearer-only, so no API route can be driven by a
cookie a browser attaches on its own (the root of CSRF). Only the page's few routes
under ``/feasibility`` accept the session, and each state-changing one also needs
the session's CSRF token in a header, which another site's page cannot read or set.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import select

from gateway.admin import projects_of
from gateway.api.deps import ResearcherInfo, State
from gateway.core.db import Researcher
from gateway.web.sessions import SESSION_COOKIE, SessionSealer, WebSession
from varde.errors import AuthenticationFailed

CSRF_HEADER = "X-CSRF-Token"
SESSION_ENDED = "your session has expired or is not valid: log in again"


def get_sealer(request: Request, state: State) -> SessionSealer:
    """The page's session sealer (from the gateway's signing key), made once per app.

    A test may put its own on ``app.state.feasibility_sealer`` (a fake clock).
    """
    sealer: SessionSealer | None = getattr(request.app.state, "feasibility_sealer", None)
    if sealer is None:
        sealer = request.app.state.feasibility_sealer = SessionSealer.for_gateway(state.key)
    return sealer


Sealer = Annotated[SessionSealer, Depends(get_sealer)]


def researcher_by_hash(state: State, token_hash: str) -> ResearcherInfo | None:
    """The active researcher whose token hashes to ``token_hash``, or None (revoked, unknown)."""
    with state.sessions() as s:
        row = s.scalars(select(Researcher).where(Researcher.token_hash == token_hash)).first()
        if row is None or not row.active:
            return None
        return ResearcherInfo(name=row.name, projects=projects_of(s, row.name))


def live_session(request: Request, sealer: Sealer) -> WebSession:
    """The request's session, or 401 (no cookie, expired, logged out, forged)."""
    found = sealer.read(request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise AuthenticationFailed(SESSION_ENDED)
    return found


LiveSession = Annotated[WebSession, Depends(live_session)]


def page_researcher(state: State, session: LiveSession) -> ResearcherInfo:
    """The researcher behind a live session (for reads), or 401 once their token is revoked."""
    found = researcher_by_hash(state, session.token_hash)
    if found is None:
        raise AuthenticationFailed("your token was revoked: ask the gateway's administrator")
    return found


def checked_csrf(
    session: LiveSession,
    csrf: Annotated[str | None, Header(alias=CSRF_HEADER)] = None,
) -> WebSession:
    """The session, once the request carries its CSRF token (every state-changing route)."""
    if not csrf or not hmac.compare_digest(csrf, session.csrf):
        raise AuthenticationFailed(
            "the page's security token is missing or stale: reload the page and try again"
        )
    return session


def acting_researcher(
    state: State, session: Annotated[WebSession, Depends(checked_csrf)]
) -> ResearcherInfo:
    """The researcher of a state-changing request: live session and matching CSRF token."""
    return page_researcher(state, session)


PageResearcher = Annotated[ResearcherInfo, Depends(page_researcher)]
ActingResearcher = Annotated[ResearcherInfo, Depends(acting_researcher)]
