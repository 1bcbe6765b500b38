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

Every table also carries a schema version (:func:`ensure_schema`), so a node
started on files a newer Varde wrote refuses them instead of misreading them.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, event, select
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
    """Create ``metadata``'s missing tables in one write transaction, checking their versions.

    Why through the write engine: ``create_all`` reads the schema and then
    writes, so on a plain engine it is exactly the deferred read-then-write
    transaction that fails at once when another thread or process of the node
    is writing (seen: the first concurrent queries of a fresh node answered
    "internal error" while two threads created the approvals table).
    """
    with write_engine.begin() as conn:
        ensure_schema(conn, metadata)


SCHEMA_VERSION = 1
"""The version of a node table unless its ``Table.info["schema_version"]`` says otherwise."""

_versions = MetaData()
schema_versions = Table(
    "varde_schema",
    _versions,
    Column("table_name", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
)
"""The schema version of each node table, in the database that holds it.

Why per table and not ``PRAGMA user_version``: one file (``node.sqlite``) holds
the tables of several modules (nonces, audit, approvals, overlap sets, release
cache), each of which may change on its own, and the ledger may live on
PostgreSQL, which has no ``user_version``.
"""


class SchemaTooNew(ValueError):
    """A node database was written by a version of Varde this code does not know.

    A ``ValueError`` so every ``varde`` command shows its message as the one error line.
    """


def table_version(table: Table) -> int:
    """The schema version this code writes and reads for ``table``."""
    return int(table.info.get("schema_version", SCHEMA_VERSION))


def ensure_schema(conn: Connection, metadata: MetaData) -> None:
    """Refuse tables of an unknown version, create missing ones, record each table's version.

    Runs inside the caller's write transaction (serialised with any other
    writer). A table from before versions were recorded is version 1, what it
    was then. A version this code does not know is refused before anything is
    read or written: a newer Varde may have changed what a row means (a ledger
    charge, an audit entry's hash), and guessing would corrupt it.
    """
    _versions.create_all(conn)
    rows = conn.execute(select(schema_versions.c.table_name, schema_versions.c.version))
    found = {name: int(version) for name, version in rows}
    where = conn.engine.url.database or str(conn.engine.url)
    for table in metadata.sorted_tables:
        have, known = found.get(table.name), table_version(table)
        if have is not None and have != known:
            newer = have > known
            raise SchemaTooNew(
                f"{where}: table {table.name!r} is at schema version {have}, but this version "
                f"of Varde reads version {known}"
                + (
                    ": it was written by a newer Varde. Run that version again, or restore "
                    "the state directory from a backup taken before the upgrade"
                    if newer
                    else " and has no upgrade from it: upgrade Varde step by step"
                )
            )
    metadata.create_all(conn)
    missing = [t for t in metadata.sorted_tables if t.name not in found]
    if missing:
        conn.execute(
            schema_versions.insert(),
            [{"table_name": t.name, "version": table_version(t)} for t in missing],
        )
