"""The node's small local database (SQLite via SQLAlchemy): seen nonces and the audit trail.

Why persistent nonces: a replayed work item must be refused even after the
node restarts, and nonces only need keeping until their envelope expires (an
expired envelope is refused anyway), so the table stays small.

The audit trail here is append-only rows of what the node received, refused,
charged and released. (Hash-chaining and signing it is the staff-tools issue.)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, create_engine, delete, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from varde.envelope import utcnow


class _Base(DeclarativeBase):
    pass


class SeenNonce(_Base):
    """A nonce of an accepted envelope, kept until the envelope expires."""

    __tablename__ = "seen_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEvent(_Base):
    """One thing that happened at this node."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    query_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    project: Mapped[str] = mapped_column(String(100), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL: a committed entry survives a process crash; only a power cut can lose
        # the last few. The privacy-critical state (the ledger) keeps synchronous=FULL.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


class NodeStore:
    """Nonces and audit events in ``state_dir/node.sqlite``."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(
            url, connect_args={"timeout": 30} if url.startswith("sqlite") else {}
        )
        if url.startswith("sqlite"):
            _sqlite_pragmas(self.engine)
        _Base.metadata.create_all(self.engine)

    @classmethod
    def in_directory(cls, state_dir: Path) -> NodeStore:
        """The store of the node whose state lives in ``state_dir``."""
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{state_dir / 'node.sqlite'}")

    def seen_nonce(
        self, nonce: str, expires_at: dt.datetime, *, received: dict[str, Any] | None = None
    ) -> bool:
        """Record ``nonce``; True if it was already there (a replay).

        ``received`` (query_id, project, ...) is audited as ``work_received`` in the
        same transaction, so accepting an item costs one commit, not two.
        """
        with Session(self.engine) as session:
            session.execute(delete(SeenNonce).where(SeenNonce.expires_at < utcnow()))
            session.add(SeenNonce(nonce=nonce, expires_at=expires_at))
            if received is not None:
                detail = dict(received)
                session.add(
                    AuditEvent(
                        at=utcnow(),
                        kind="work_received",
                        query_id=str(detail.pop("query_id", "")),
                        project=str(detail.pop("project", "")),
                        detail=json.dumps(detail, default=str, sort_keys=True),
                    )
                )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return True
        return False

    def audit(self, kind: str, *, query_id: str = "", project: str = "", **detail: Any) -> None:
        """Append one event (never updated, never deleted)."""
        with Session(self.engine) as session:
            session.add(
                AuditEvent(
                    at=utcnow(),
                    kind=kind,
                    query_id=query_id,
                    project=project,
                    detail=json.dumps(detail, default=str, sort_keys=True),
                )
            )
            session.commit()

    def events(self, kind: str | None = None) -> list[AuditEvent]:
        """Audit events, oldest first (optionally of one kind)."""
        with Session(self.engine) as session:
            stmt = select(AuditEvent).order_by(AuditEvent.id)
            if kind is not None:
                stmt = stmt.where(AuditEvent.kind == kind)
            return list(session.scalars(stmt))

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
