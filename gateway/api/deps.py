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
from varde.errors import AuthenticationFailed

_bearer = HTTPBearer(
    auto_error=False, description="Researcher token from `varde admin researcher add`"
)


def get_state(request: Request) -> GatewayState:
    """The gateway state built at startup."""
    state: GatewayState = request.app.state.varde
    return state


State = Annotated[GatewayState, Depends(get_state)]


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
