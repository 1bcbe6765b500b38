"""Throw-away PostgreSQL databases on this machine, for tests and benchmarks (never a deployment).

One place creates and drops them, so every test module and benchmark uses the same
administrator URL (``VARDE_SCRATCH_POSTGRES``; by default the local trust-auth server at
127.0.0.1:5432, database ``test``) and cleans up the same way: ``DROP ... WITH (FORCE)``, so
a replica or node still connected cannot leave a database behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text

__all__ = ["ADMIN_URL", "PostgresUnavailable", "scratch_database"]

ADMIN_URL = os.environ.get(
    "VARDE_SCRATCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL answers at :data:`ADMIN_URL` (tests skip, benchmarks say so)."""


@contextmanager
def scratch_database(prefix: str = "varde") -> Iterator[str]:
    """A fresh, empty database named ``<prefix>_<random>``: its URL; dropped on exit."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any connection failure means PostgreSQL is not here
        admin.dispose()
        where = make_url(ADMIN_URL).render_as_string(hide_password=True)
        raise PostgresUnavailable(f"PostgreSQL not reachable at {where}: {err}") from err
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
