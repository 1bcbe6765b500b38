"""The node's small local database (SQLite via SQLAlchemy): seen nonces and the audit trail.

Why persistent nonces: a replayed work item must be refused even after the
node restarts, and nonces only need keeping until their envelope expires (an
expired envelope is refused anyway), so the table stays small.

The audit trail (what the node received, refused, charged, released, and every
policy change and approval) is the hash-chained, checkpoint-signed log of
:mod:`nodes.audit`, kept in the same file so that accepting a work item (its
nonce plus its ``work_received`` entry) costs one commit.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Column, DateTime, MetaData, String, Table, create_engine, delete, insert
from sqlalchemy.exc import IntegrityError

from nodes.approvals import ApprovalBook
from nodes.audit import CHECKPOINT_EVERY, AuditEntry, AuditLog, AuditReport, configure_sqlite
from nodes.overlap import OverlapBook
from nodes.sqlite import create_tables
from varde.crypto import public_key_b64
from varde.envelope import utcnow

_meta = MetaData()
seen_nonces = Table(
    "seen_nonces",
    _meta,
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), index=True),
)


class NodeStore:
    """Nonces and the audit trail in ``state_dir/node.sqlite``.

    Args:
        url: SQLAlchemy URL of the database.
        key: The node key, used to sign audit checkpoints. Processes without it
            (staff CLI commands) append entries that the node signs later.
        checkpoint_every: Entries between signed checkpoints.
    """

    def __init__(
        self,
        url: str,
        *,
        key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
        self._write = configure_sqlite(self.engine) if sqlite else self.engine
        self.write_engine = self._write
        """Where this database's writes go (``BEGIN IMMEDIATE`` on SQLite)."""
        create_tables(_meta, self._write)
        self.log = AuditLog(
            self.engine, write_engine=self._write, key=key, checkpoint_every=checkpoint_every
        )
        # Built here, not on first use: the node answers items in several threads at once.
        self.approvals = ApprovalBook(self.engine, self._write, self.log)
        """Requests waiting for (or decided by) staff, in this database."""
        self.released_sets = OverlapBook(self.engine, self._write)
        """Patient sets of the cells released in aggregate mode (overlap control)."""

    @classmethod
    def in_directory(
        cls, state_dir: Path, *, key: Ed25519PrivateKey | None = None, **kwargs: Any
    ) -> NodeStore:
        """The store of the node whose state lives in ``state_dir``."""
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{state_dir / 'node.sqlite'}", key=key, **kwargs)

    def set_key(self, key: Ed25519PrivateKey) -> None:
        """Sign future checkpoints with ``key`` (the node's own)."""
        self.log.key = key

    def seen_nonce(
        self, nonce: str, expires_at: dt.datetime, *, received: dict[str, Any] | None = None
    ) -> bool:
        """Record ``nonce``; True if it was already there (a replay).

        ``received`` (query_id, project, ...) is audited as ``work_received`` in the
        same transaction, so accepting an item costs one commit, not two; a replay
        rolls both back (the caller audits the refusal).
        """
        try:
            with self._write.begin() as conn:
                conn.execute(delete(seen_nonces).where(seen_nonces.c.expires_at < utcnow()))
                conn.execute(insert(seen_nonces).values(nonce=nonce, expires_at=expires_at))
                if received is not None:
                    detail = dict(received)
                    self.log.append(
                        conn,
                        "work_received",
                        query_id=str(detail.pop("query_id", "")),
                        project=str(detail.pop("project", "")),
                        detail=detail,
                    )
        except IntegrityError as err:
            if "seen_nonces" not in str(err.orig):  # anything else is a bug, not a replay
                raise
            return True
        return False

    def audit(
        self, kind: str, *, query_id: str = "", project: str = "", **detail: Any
    ) -> AuditEntry:
        """Append one entry to the chain (never updated, never deleted)."""
        return self.log.record(kind, query_id=query_id, project=project, **detail)

    def events(self, kind: str | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (optionally of one kind)."""
        return self.log.entries(kind=kind)

    def verify(self) -> AuditReport:
        """Verify the chain (checkpoints against this store's key, if it has one)."""
        key = self.log.key
        return self.log.verify(public_key_b64(key) if key is not None else None)

    def close(self) -> None:
        """Sign a final checkpoint (if this process holds the node key), release the pool."""
        try:
            self.log.checkpoint()
        finally:
            self.engine.dispose()
