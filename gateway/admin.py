"""Administration of the gateway's own records: projects, researchers, enrollment tokens.

Used by ``varde admin`` (and tests). Secrets are returned once and stored hashed.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.core.db import EnrollmentToken, Membership, Node, Project, Researcher
from gateway.core.security import new_token, token_hash
from varde.envelope import utcnow
from varde.errors import Conflict, InvalidQuery, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


def _check_name(kind: str, name: str) -> None:
    if not NAME.match(name):
        raise InvalidQuery(f"{kind} name {name!r} must match {NAME.pattern}")


def add_project(sessions: sessionmaker[Any], name: str, description: str = "") -> None:
    """Create a project (sites still decide, in their policies, whether to serve it)."""
    _check_name("project", name)
    with sessions() as s:
        if s.get(Project, name) is not None:
            raise Conflict(f"project {name!r} exists")
        s.add(Project(name=name, description=description))
        s.commit()


def add_researcher(sessions: sessionmaker[Any], name: str, projects: list[str]) -> str:
    """Create a researcher on ``projects``; return the bearer token (shown once)."""
    _check_name("researcher", name)
    token = new_token("vr")
    with sessions() as s:
        if s.get(Researcher, name) is not None:
            raise Conflict(f"researcher {name!r} exists")
        for p in projects:
            if s.get(Project, p) is None:
                raise NotFound(f"project {p!r} does not exist")
        s.add(Researcher(name=name, token_hash=token_hash(token)))
        s.flush()
        for p in projects:
            s.add(Membership(researcher=name, project=p))
        s.commit()
    return token


def grant(sessions: sessionmaker[Any], researcher: str, project: str) -> None:
    """Add an existing researcher to a project."""
    with sessions() as s:
        if s.get(Researcher, researcher) is None:
            raise NotFound(f"researcher {researcher!r} does not exist")
        if s.get(Project, project) is None:
            raise NotFound(f"project {project!r} does not exist")
        s.add(Membership(researcher=researcher, project=project))
        s.commit()


def enrollment_token(sessions: sessionmaker[Any], site: str, valid_for: dt.timedelta) -> str:
    """A one-time token with which ``site`` registers its key; shown once."""
    _check_name("site", site)
    token = new_token("ve")
    with sessions() as s:
        s.add(
            EnrollmentToken(
                token_hash=token_hash(token), site=site, expires_at=utcnow() + valid_for
            )
        )
        s.commit()
    return token


def projects_of(session: Session, researcher: str) -> list[str]:
    """Projects a researcher belongs to."""
    rows = session.scalars(select(Membership.project).where(Membership.researcher == researcher))
    return sorted(rows)


def enrolled_sites(session: Session) -> list[str]:
    """Every enrolled site."""
    return sorted(session.scalars(select(Node.site)))
