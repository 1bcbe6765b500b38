"""Readiness: 200 when the database answers, the schema is at head and the key is loaded; else 503
naming each failing check (a load balancer takes the replica out instead of failing queries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.app import create_app
from gateway.core.config import Settings
from gateway.state import GatewayState
from tests.unit.gateway.test_training_gateway import Client


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    return GatewayState.open(Settings(state_dir=tmp_path))


def test_ready(state: GatewayState) -> None:
    resp = Client(create_app(state.settings, state)).get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "signing_key"}
    assert all(c["ok"] for c in body["checks"].values())


def test_not_ready_when_the_schema_is_behind(state: GatewayState) -> None:
    with state.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    resp = Client(create_app(state.settings, state)).get("/readyz")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["database"]["ok"] and not checks["migrations"]["ok"]
    assert "varde gateway migrate" in checks["migrations"]["detail"]


def test_not_ready_when_the_database_is_gone(state: GatewayState, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    state.engine = create_engine(f"sqlite:///{tmp_path}/missing-dir/none.sqlite")
    resp = Client(create_app(state.settings, state)).get("/readyz")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["database"] == {"ok": False, "detail": "unreachable (OperationalError)"}
    assert not checks["migrations"]["ok"]
    assert checks["signing_key"]["ok"]


def test_not_ready_without_a_usable_key(state: GatewayState) -> None:
    state.key = None  # type: ignore[assignment]
    resp = Client(create_app(state.settings, state)).get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["signing_key"]["ok"] is False


def test_probes_need_no_token(state: GatewayState) -> None:
    client = Client(create_app(state.settings, state))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_a_lost_database_is_a_503_with_retry_after_not_a_500(
    state: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's own outage (PostgreSQL restarting, a cut) is answered 503 and retried."""
    import sqlalchemy.exc

    def unreachable() -> None:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    client = Client(create_app(state.settings, state))
    monkeypatch.setattr(state, "sessions", unreachable)
    resp = client.get("/v1/budgets", headers={"Authorization": "Bearer vr-anything"})
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json()["error"] == "database_unavailable"
