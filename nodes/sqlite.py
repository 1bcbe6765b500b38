"""How a node opens its SQLite databases (ledger, audit trail, approvals, release cache).

Why one helper: the node's files are written by several threads and several
processes at once (the node, its SuperNode's ClientApps, the staff's CLI), so
every engine needs the same three settings, and they used to be written out
twice:

* the ``sqlite3`` module's own (deferred) ``BEGIN`` is switched off: a deferred
  transaction that reads and then writes must upgrade its lock, and in WAL mode
  that upgrade fails at once ("database is locked") if another writer committed
  in between; the busy timeout does not help. Transactions of the engine this
  returns start with ``BEGIN IMMEDIATE`` instead, which takes the write lock up
  front and waits for it on the busy timeout; reads keep a plain ``BEGIN``;
* WAL, so readers proceed while a writer commits;
* ``synchronous``: ``FULL`` where a committed row must survive a power cut (the
  ledger: the point of charging before release), ``NORMAL`` elsewhere (a
  committed row survives a process crash).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Engine, MetaData, event
from sqlalchemy.engine import Connection

BUSY_TIMEOUT_S = 30.0
"""Seconds a connection waits for another writer before failing: waiting beats refusing."""

_WRITE = "varde_sqlite_write"


def serialised_writes(engine: Engine, *, synchronous: Literal["FULL", "NORMAL"]) -> Engine:
    """Configure the SQLite ``engine`` as above; returns the engine to write with.

    >>> from sqlalchemy import create_engine, text
    >>> writes = serialised_writes(create_engine("sqlite://"), synchronous="NORMAL")
    >>> with writes.begin() as conn:
    ...     conn.execute(text("select 1")).scalar()
    1
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.fetchall()
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine.execution_options(**{_WRITE: True})


def create_tables(metadata: MetaData, write_engine: Engine) -> None:
    """Create ``metadata``'s missing tables in one write transaction.

    Why through the write engine: ``create_all`` reads the schema and then
    writes, so on a plain engine it is exactly the deferred read-then-write
    transaction that fails at once when another thread or process of the node
    is writing (seen: the first concurrent queries of a fresh node answered
    "internal error" while two threads created the approvals table).
    """
    with write_engine.begin() as conn:
        metadata.create_all(conn)
