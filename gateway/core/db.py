"""The gateway's own records (SQLAlchemy): accounts, projects, nodes, queries, trainings, audit.

SQLite is the embedded default; PostgreSQL (``VARDE_DATABASE_URL``) for
replicas. Nothing here is a patient row: only tokens' hashes, public keys,
query specs and the numbers sites released.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from varde.envelope import SignedEnvelope, utcnow
from varde.release import SiteRelease


class Base(DeclarativeBase):
    """Declarative base of the gateway schema."""


class Project(Base):
    """A research project; sites decide in their own policy whether they serve it."""

    __tablename__ = "projects"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Researcher(Base):
    """A person with a bearer token (stored as its SHA-256; the token has 256 random bits)."""

    __tablename__ = "researchers"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    """Researcher x project."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("researcher", "project"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    researcher: Mapped[str] = mapped_column(ForeignKey("researchers.name"))
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"))


class EnrollmentToken(Base):
    """A one-time token a new site uses to register its key."""

    __tablename__ = "enrollment_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Node(Base):
    """An enrolled site and its pinned public key."""

    __tablename__ = "nodes"
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # What the node said when it last polled (written at most every few seconds), and whether
    # the operator revoked it (its polls are then refused with 403 and audited; a new
    # enrollment re-admits it). Nullable: rows of nodes enrolled before these columns.
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    state: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueryRecord(Base):
    """A query as asked, and the combined result returned."""

    __tablename__ = "queries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    researcher: Mapped[str] = mapped_column(String(100), index=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ReleaseRecord(Base):
    """A signed release as received from a site (kept with its signature, as evidence)."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(String(64), index=True)
    site: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkItemRecord(Base):
    """One site's signed work item of a running query: the queue replicas share on PostgreSQL.

    Why a table: a node's long-poll may land on any replica and the query may
    wait on another, so the item, its lease and the release that answers it
    must outlive any one process. ``state`` runs queued -> leased (handed to
    the site until ``lease_until``; handed again only after that) -> done (the
    release is in, ``release``/``evidence``) -> answered (the waiting query took
    it), or timed_out / adopting -> adopted (its replica died; another one
    recorded it). Only :mod:`gateway.dispatch_pg` uses it; SQLite deployments
    keep the queue in memory (:mod:`gateway.dispatch`).
    """

    __tablename__ = "work_items"
    query_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deadline: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    handed_out: Mapped[int] = mapped_column(Integer, default=0)
    release: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)


class SitePresence(Base):
    """When a site last polled any replica, and the manifest it sent (PostgreSQL replicas only)."""

    __tablename__ = "site_presence"
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest: Mapped[str] = mapped_column(Text)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SeenNonce(Base):
    """Nonces of verified node envelopes, until they expire: replays refused by every replica.

    Only :mod:`gateway.dispatch_pg` uses it (a poll replayed to another replica
    would otherwise hand the site's work to whoever captured it); one SQLite
    process keeps its nonces in memory.
    """

    __tablename__ = "seen_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class TrainingJob(Base):
    """A federated training job as submitted, and what was last known of its progress.

    Why stored: the job outlives the gateway process (its ServerApp runs under
    the SuperLink), so a restart must still know who asked for what, where it
    ran and how it ended. ``status`` is the last :class:`varde.training.TrainingStatus`
    (JSON) the gateway saw; ``run_id`` is Flower's (an unsigned 64-bit integer,
    kept as text because SQL integers are signed).
    """

    __tablename__ = "training_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    researcher: Mapped[str] = mapped_column(String(100), index=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    sites: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20), index=True)
    run_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class GatewayAudit(Base):
    """Security-relevant events at the gateway (bad signatures, enrollments, ...)."""

    __tablename__ = "gateway_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    site: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


def make_engine(url: str) -> Engine:
    """Engine with SQLite tuned for many threads (WAL, busy timeout), its schema at head."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            # The gateway holds no privacy-critical state (each node's ledger is the authority),
            # so WAL with NORMAL sync: durable across process crashes, one fsync per checkpoint.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    # The schema comes from the Alembic revisions, never create_all: SQLite is upgraded to head,
    # an empty PostgreSQL created at head, an older PostgreSQL refused (gateway.migrations says
    # why). A table or column added here needs a revision in gateway/migrations/versions/.
    from gateway.migrations import prepare

    try:
        prepare(engine)
    except BaseException:
        engine.dispose()  # a refused schema leaves no connection behind
        raise
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    """Session factory bound to ``engine``."""
    return sessionmaker(engine, expire_on_commit=False)


def release_record(release: SiteRelease, envelope: SignedEnvelope) -> ReleaseRecord:
    """The evidence row for a signed release."""
    return ReleaseRecord(
        query_id=release.query_id,
        site=release.site,
        status=release.status,
        payload=envelope.payload,
        signature=envelope.signature,
    )
