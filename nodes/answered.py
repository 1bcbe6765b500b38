"""Releases this node has answered, by query id: a work item that comes again is not run again.

Why: a connection can break after the node charged its ledger and before the
gateway received the release (a gateway restart, a network cut, a proxy that
drops an idle request). A gateway that hands the same work item out again
(the PostgreSQL work queue does after a lease expires) must get the *same*
release back: running it again would either be refused by the ledger (the
query id has paid) or, worse, draw fresh noise. The node keeps each release it
made here, in its own ``node.sqlite``, and the agent answers a repeat of a
query id from it: nothing computed, nothing charged (audited as
``work_redelivered``).

Only releases are kept (what the gateway already may see), never rows.
Entries older than :data:`KEEP` are dropped: a work item is only handed out
again while its query waits (minutes).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nodes.sqlite import create_tables
from varde.envelope import utcnow
from varde.release import SiteRelease

KEEP = dt.timedelta(days=2)
"""How long a release is kept for a repeat of its work item."""

_meta = MetaData()
answered_items = Table(
    "answered_items",
    _meta,
    Column("query_id", String(64), primary_key=True),
    Column("answered_at", DateTime(timezone=True), nullable=False, index=True),
    Column("release", Text, nullable=False),
)


class AnsweredBook:
    """The releases of recent work items, in the node's store database."""

    def __init__(self, engine: Engine, write_engine: Engine) -> None:
        self.engine = engine
        self.write_engine = write_engine
        create_tables(_meta, write_engine)

    def get(self, query_id: str) -> SiteRelease | None:
        """The release already made for ``query_id``, if any."""
        with self.engine.connect() as conn:
            text = conn.execute(
                select(answered_items.c.release).where(answered_items.c.query_id == query_id)
            ).scalar()
        return None if text is None else SiteRelease.model_validate_json(text)

    def put(self, release: SiteRelease) -> None:
        """Keep ``release`` (the first one of a query id wins); drop entries past :data:`KEEP`."""
        if not release.query_id:
            return
        now = utcnow()
        with self.write_engine.begin() as conn:
            conn.execute(delete(answered_items).where(answered_items.c.answered_at < now - KEEP))
        try:
            with self.write_engine.begin() as conn:
                conn.execute(
                    insert(answered_items).values(
                        query_id=release.query_id,
                        answered_at=now,
                        release=release.model_dump_json(),
                    )
                )
        except IntegrityError as err:
            if "answered_items" not in str(err.orig):  # anything else is a bug
                raise
