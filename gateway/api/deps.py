"""FastAPI dependencies: the gateway state and the authenticated researcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from gateway.admin import projects_of
from gateway.core.db import Researcher
from gateway.core.security import token_hash
from gateway.state import GatewayState
from gateway.study_fields import manifests_of, published
from varde.errors import AuthenticationFailed
from varde.study_fields import resolve_with

_bearer = HTTPBearer(
    auto_error=False, description="Researcher token from `varde admin researcher add`"
)


def get_state(request: Request) -> GatewayState:
    """The gateway state built at startup."""
    state: GatewayState = request.app.state.varde
    return state


State = Annotated[GatewayState, Depends(get_state)]


async def study_fields_from_sites(state: State) -> None:
    """Let a query or training job body be completed with the study fields the sites declare.

    Async on purpose: FastAPI awaits it in the request's own task before it validates the
    body, so the resolver it sets (:func:`gateway.study_fields.published`) is the one that
    validation sees (:func:`varde.study_fields.complete`).
    """
    resolve_with(lambda project, names: published(manifests_of(state), project, names))


@dataclass(frozen=True)
class ResearcherInfo:
    """Who is asking, and on which projects they may ask."""

    name: str
    projects: list[str]


def current_researcher(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ResearcherInfo:
    """Resolve the bearer token to an active researcher, or 401."""
    if credentials is None:
        raise AuthenticationFailed("missing bearer token (Authorization: Bearer <token>)")
    with state.sessions() as s:
        row = s.scalars(
            select(Researcher).where(Researcher.token_hash == token_hash(credentials.credentials))
        ).first()
        if row is None or not row.active:
            raise AuthenticationFailed("unknown or revoked token")
        return ResearcherInfo(name=row.name, projects=projects_of(s, row.name))


CurrentResearcher = Annotated[ResearcherInfo, Depends(current_researcher)]
