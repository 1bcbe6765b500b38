"""The gateway on PostgreSQL (its mode for replicas), with a real node, end to end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from launcher.network import LocalNetwork

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("postgres")]

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh, empty database for this module, dropped afterwards."""
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any connection failure means PostgreSQL is not here
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {err}")
    name = f"varde_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_gateway_on_postgresql(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    net = LocalNetwork(
        workdir=tmp_path_factory.mktemp("pg"),
        sites=["oslo"],
        rows=5_000,
        seed=2,
        database_url=pg_database,
    )
    net.start()
    try:
        resp = httpx.post(
            f"{net.url}/v1/queries",
            json={
                "project": "nsclc-feasibility",
                "statistic": {"kind": "histogram", "field": "stage"},
                "privacy": {"mode": "dp", "epsilon": 0.2},
            },
            headers={"Authorization": f"Bearer {net.token}"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        query_id = resp.json()["query_id"]
    finally:
        net.stop()
    engine = create_engine(pg_database)
    with engine.connect() as conn:
        spec = conn.execute(
            text("SELECT spec FROM queries WHERE id = :i"), {"i": query_id}
        ).scalar()
        sites = conn.execute(
            text("SELECT site, status FROM releases WHERE query_id = :i"), {"i": query_id}
        ).all()
        nodes = conn.execute(text("SELECT site FROM nodes")).scalars().all()
    engine.dispose()
    assert spec["statistic"]["kind"] == "histogram"
    assert sites == [("oslo", "ok")]
    assert nodes == ["oslo"]
