"""Administration of the gateway's own records: projects, researchers, enrollment tokens, nodes.

Used by ``varde admin`` (and tests). Secrets are returned once and stored hashed.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.core.db import EnrollmentToken, GatewayAudit, Membership, Node, Project, Researcher
from gateway.core.security import new_token, token_hash
from varde.crypto import key_fingerprint
from varde.envelope import utcnow
from varde.errors import Conflict, InvalidQuery, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
SITE_PATTERN = r"^[a-z][a-z0-9_-]{1,40}$"
"""A site name the gateway enrolls (lower case, 2..41 characters)."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


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
    if not re.match(SITE_PATTERN, site):
        raise InvalidQuery(f"site name {site!r} must match {SITE_PATTERN}")
    token = new_token("ve")
    with sessions() as s:
        s.add(
            EnrollmentToken(
                token_hash=token_hash(token), site=site, expires_at=utcnow() + valid_for
            )
        )
        s.commit()
    return token


def parse_duration(text: str) -> dt.timedelta:
    """``48h``, ``2d``, ``90m``, ``1h30m`` or ``1w`` as a duration; a clear error otherwise."""
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise InvalidQuery(
            f"duration {text!r} is not like 48h, 2d, 90m or 1h30m (units w, d, h, m, s)"
        )
    total = dt.timedelta()
    for number, unit in parts:
        try:
            total += dt.timedelta(**{_UNITS[unit]: float(number)})
        except OverflowError as err:
            raise InvalidQuery(f"duration {text!r} is too long") from err
    if total < dt.timedelta(minutes=1):
        raise InvalidQuery(f"duration {text!r} is shorter than a minute")
    if total > dt.timedelta(days=366):
        raise InvalidQuery(f"duration {text!r} is longer than a year")
    return total


class NodeInfo(BaseModel):
    """An enrolled node as the operator sees it (``varde admin nodes``, ``GET /v1/sites``).

    ``state``: ``revoked``, ``never seen``, or what the node last reported
    (``serving``, ``deny-all``: its policy serves no project yet).
    """

    site: str
    enrolled_at: dt.datetime
    last_seen: dt.datetime | None
    version: str | None
    key_fingerprint: str
    state: str


def _aware(when: dt.datetime | None) -> dt.datetime | None:
    return when if when is None or when.tzinfo else when.replace(tzinfo=dt.UTC)


def node_info(node: Node) -> NodeInfo:
    """What the operator sees of one node row."""
    if node.revoked_at is not None:
        state = "revoked"
    elif node.last_seen is None:
        state = "never seen"
    else:
        state = node.state or "unknown"
    enrolled = _aware(node.enrolled_at)
    assert enrolled is not None
    return NodeInfo(
        site=node.site,
        enrolled_at=enrolled,
        last_seen=_aware(node.last_seen),
        version=node.version,
        key_fingerprint=key_fingerprint(node.public_key),
        state=state,
    )


def list_nodes(sessions: sessionmaker[Any]) -> list[NodeInfo]:
    """Every enrolled node, by site name."""
    with sessions() as s:
        return [node_info(n) for n in s.scalars(select(Node).order_by(Node.site))]


def revoke_node(sessions: sessionmaker[Any], site: str, reason: str = "") -> None:
    """Refuse this node from now on (its polls get 403); a new enrollment token re-admits it.

    Unused enrollment tokens of the site are spent too, so a leaked one cannot
    bring the revoked key (or another) straight back.
    """
    with sessions() as s:
        node = s.get(Node, site)
        if node is None:
            raise NotFound(f"no enrolled site {site!r} (see varde admin nodes)")
        if node.revoked_at is not None:
            raise Conflict(f"site {site!r} is already revoked")
        now = utcnow()
        node.revoked_at = now
        for tok in s.scalars(
            select(EnrollmentToken).where(
                EnrollmentToken.site == site, EnrollmentToken.used_at.is_(None)
            )
        ):
            tok.used_at = now
        detail = f"revoked by the operator (key {key_fingerprint(node.public_key)})"
        s.add(GatewayAudit(kind="revoked", site=site, detail=f"{detail}; {reason}".rstrip("; ")))
        s.commit()


def projects_of(session: Session, researcher: str) -> list[str]:
    """Projects a researcher belongs to."""
    rows = session.scalars(select(Membership.project).where(Membership.researcher == researcher))
    return sorted(rows)


def enrolled_sites(session: Session) -> list[str]:
    """Every enrolled site."""
    return sorted(session.scalars(select(Node.site)))
