"""The gateway schema's Alembic migrations on SQLite and on the PostgreSQL at 127.0.0.1:5432.

An empty database reaches head; a database at the first revision, holding rows, is
upgraded to head without losing them; the migrated head equals the models (so a
column added to ``gateway/core/db.py`` without a revision fails here); and the
start-up rule: SQLite upgrades itself, an older PostgreSQL is refused naming
``varde gateway migrate``, a database newer than the code is refused everywhere.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from gateway import migrations
from gateway.core.db import Base, make_engine
from launcher.cli import app
from tests.conftest import scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("postgres")]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite'}"
        return
    with scratch_postgres("varde_migrations") as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def drift(engine: Engine) -> list[object]:
    """What autogenerate would still have to write: the models minus the migrated schema."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.current(conn)


def test_empty_database_reaches_head_and_equals_the_models(engine: Engine) -> None:
    assert revision_of(engine) is None
    before, after = migrations.upgrade(engine)
    assert (before, after) == (None, migrations.head())
    assert migrations.at_head(engine)
    # A model change without a revision (a table, a column, a type, an index) shows up here.
    assert drift(engine) == []
    # Upgrading again is a no-op.
    assert migrations.upgrade(engine) == (migrations.head(), migrations.head())


def test_upgrade_from_the_first_revision_keeps_the_rows(engine: Engine) -> None:
    migrations.upgrade(engine, migrations.FIRST_REVISION)
    assert revision_of(engine) == migrations.FIRST_REVISION
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (name, description, created_at) "
                "VALUES ('p1', 'kept', '2026-01-01 00:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO nodes (site, public_key, enrolled_at) "
                "VALUES ('oslo', 'k', '2026-01-01 00:00:00+00:00')"
            )
        )
    before, after = migrations.upgrade(engine)
    assert (before, after) == (migrations.FIRST_REVISION, migrations.head())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT description FROM projects")).scalar_one() == "kept"
        assert conn.execute(text("SELECT site FROM nodes")).scalar_one() == "oslo"
    assert drift(engine) == []


def test_every_revision_downgrades_to_an_empty_database(engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.connect() as conn:
        from alembic import command

        command.downgrade(migrations.config(conn), "base")
        conn.commit()
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_a_database_from_before_migrations_is_taken_as_the_first_revision(
    db_url: str, engine: Engine
) -> None:
    # What create_all made before migrations: the first revision's tables, no alembic_version.
    migrations.upgrade(engine, migrations.FIRST_REVISION)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    if engine.dialect.name == "sqlite":
        make_engine(db_url).dispose()  # the embedded database upgrades itself at start-up
    else:
        with pytest.raises(migrations.SchemaNotAtHead, match="varde gateway migrate"):
            make_engine(db_url)
        result = CliRunner().invoke(app, ["gateway", "migrate", "--database-url", db_url])
        assert result.exit_code == 0, result.output
        assert f"from {migrations.FIRST_REVISION} to {migrations.head()}" in result.output
    assert migrations.at_head(engine)
    assert drift(engine) == []


def test_an_older_postgresql_is_refused_until_migrated(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite upgrades itself (previous test)")
    migrations.upgrade(engine, migrations.FIRST_REVISION)
    if migrations.head() == migrations.FIRST_REVISION:
        pytest.skip("only one revision: nothing is older than head")
    with pytest.raises(migrations.SchemaNotAtHead) as err:
        make_engine(db_url)
    message = str(err.value)
    assert f"schema revision {migrations.FIRST_REVISION!r}" in message
    assert "varde gateway migrate" in message
    # 'varde gateway serve' refuses in one line, before listening, naming the command
    serve = CliRunner().invoke(
        app, ["gateway", "serve", "--database-url", db_url, "--state-dir", str(tmp_path)]
    )
    assert serve.exit_code == 2, serve.output
    assert "error:" in serve.output and "varde gateway migrate" in serve.output
    # --check exits 1 and changes nothing; migrate upgrades; then the gateway starts.
    check = CliRunner().invoke(app, ["gateway", "migrate", "--check", "--database-url", db_url])
    assert check.exit_code == 1 and f"head {migrations.head()}" in check.output
    assert revision_of(engine) == migrations.FIRST_REVISION
    assert CliRunner().invoke(app, ["gateway", "migrate", "--database-url", db_url]).exit_code == 0
    make_engine(db_url).dispose()  # starts now
    check = CliRunner().invoke(app, ["gateway", "migrate", "--check", "--database-url", db_url])
    assert check.exit_code == 0, check.output


def test_a_database_newer_than_the_code_is_refused(db_url: str, engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(migrations.SchemaNotAtHead, match="'9999', which this version"):
        make_engine(db_url)
    result = CliRunner().invoke(app, ["gateway", "migrate", "--database-url", db_url])
    assert result.exit_code == 2
    assert "does not know" in result.output


def test_replicas_starting_together_on_an_empty_database_create_it_once(
    db_url: str, engine: Engine
) -> None:
    """Three gateway processes opening an empty database at once: one creates it, none fails.

    On PostgreSQL the advisory lock serialises them (without it, the second
    CREATE TABLE fails); on SQLite the file's write lock does.
    """
    code = "import sys; from gateway.core.db import make_engine; make_engine(sys.argv[1]).dispose()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert migrations.at_head(engine)
    assert drift(engine) == []


def test_the_cli_migrates_the_sqlite_of_a_state_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gateway", "migrate", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"from empty to {migrations.head()}" in result.output
    again = CliRunner().invoke(app, ["gateway", "migrate", "--state-dir", str(tmp_path)])
    assert "already at head" in again.output
    eng = create_engine(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    try:
        assert migrations.at_head(eng)
    finally:
        eng.dispose()
