"""Schema versions of the node's databases: recorded per table, and a version unknown to the code
(a newer Varde wrote the file) refused with a message that says what to do."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from nodes.ledger import Ledger
from nodes.release_cache import ReleaseCache
from nodes.sqlite import SchemaTooNew, create_tables, serialised_writes
from nodes.store import NodeStore

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def versions(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT table_name, version FROM varde_schema").fetchall())


def set_version(path: Path, table: str, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE varde_schema SET version = ? WHERE table_name = ?", (version, table))


def test_a_fresh_node_records_every_table_at_version_1(tmp_path: Path) -> None:
    store = NodeStore.in_directory(tmp_path)
    ReleaseCache(store.engine, store.write_engine)
    store.engine.dispose()
    ledger = Ledger.in_directory(tmp_path)
    ledger.close()
    node = versions(tmp_path / "node.sqlite")
    # nonces, audit chain, approvals, aggregate-mode sets, release cache
    assert {"seen_nonces", "audit_entries", "approval_requests", "release_cache"} <= set(node)
    assert set(node.values()) == {1}
    assert set(versions(tmp_path / "ledger.sqlite")) >= {"budget_accounts", "budget_charges"}


@pytest.mark.parametrize("table", ["audit_entries", "approval_requests", "seen_nonces"])
def test_the_node_store_refuses_a_newer_table(tmp_path: Path, table: str) -> None:
    NodeStore.in_directory(tmp_path).engine.dispose()
    set_version(tmp_path / "node.sqlite", table, 2)
    with pytest.raises(SchemaTooNew) as err:
        NodeStore.in_directory(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "node.sqlite") in message
    assert f"table {table!r} is at schema version 2" in message
    assert "reads version 1" in message and "newer Varde" in message
    assert "backup" in message


def test_the_ledger_refuses_a_newer_version_and_charges_nothing(tmp_path: Path) -> None:
    Ledger.in_directory(tmp_path).close()
    set_version(tmp_path / "ledger.sqlite", "budget_charges", 7)
    with pytest.raises(SchemaTooNew, match="'budget_charges' is at schema version 7"):
        Ledger.in_directory(tmp_path)


def test_an_older_unknown_version_is_refused_too(tmp_path: Path) -> None:
    Ledger.in_directory(tmp_path).close()
    set_version(tmp_path / "ledger.sqlite", "budget_accounts", 0)
    with pytest.raises(SchemaTooNew, match="no upgrade from it"):
        Ledger.in_directory(tmp_path)


def test_files_from_before_versions_are_version_1(tmp_path: Path) -> None:
    """A node's files from before this change have the tables but no varde_schema: kept, as 1."""
    Ledger.in_directory(tmp_path).close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("DROP TABLE varde_schema")
    Ledger.in_directory(tmp_path).close()
    assert set(versions(tmp_path / "ledger.sqlite").values()) == {1}


def test_a_table_declares_its_own_version(tmp_path: Path) -> None:
    """The version a module writes comes from its table's info (what a schema change bumps)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    writes = serialised_writes(engine, synchronous="NORMAL")
    meta = MetaData()
    Table("thing", meta, Column("id", Integer, primary_key=True), info={"schema_version": 3})
    create_tables(meta, writes)
    assert versions(tmp_path / "x.sqlite") == {"thing": 3}
    newer_code_meta = MetaData()
    Table("thing", newer_code_meta, Column("id", Integer, primary_key=True))  # reads version 1
    with pytest.raises(SchemaTooNew, match="'thing' is at schema version 3"):
        create_tables(newer_code_meta, writes)
    engine.dispose()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"ledger_{uuid.uuid4().hex}"
    engine = create_engine(PG_URL, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    except OperationalError as err:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {err}")
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()


def test_a_ledger_on_postgresql_carries_versions_in_its_own_schema(pg_schema: str) -> None:
    Ledger(PG_URL, schema=pg_schema).close()
    engine = create_engine(PG_URL, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            table = f'"{pg_schema}".varde_schema'
            rows = dict(conn.execute(text(f"SELECT table_name, version FROM {table}")).all())
            assert rows["budget_charges"] == 1
            conn.execute(text(f"UPDATE {table} SET version = 2"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaTooNew, match="newer Varde"):
        Ledger(PG_URL, schema=pg_schema)
