"""The gateway on PostgreSQL (its mode for replicas), with a real node, end to end."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from launcher.network import LocalNetwork
from tests.conftest import scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("postgres")]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh, empty database for this module, dropped afterwards."""
    with scratch_postgres("varde") as url:
        yield url


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
