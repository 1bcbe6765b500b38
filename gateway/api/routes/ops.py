"""Operations endpoints: readiness (``/readyz``) and Prometheus metrics (``/metrics``).

``/healthz`` (in :mod:`gateway.app`) says the process is alive; ``/readyz`` says
whether a load balancer should send it traffic: its database answers, the
schema is the one this code needs (:mod:`gateway.migrations`), and its signing
key is loaded (it signs every work item). A replica that fails any check
answers 503 with the failing checks named, so it is taken out of rotation
instead of failing researchers' queries. Neither endpoint needs a token (a
probe has none) and neither says anything about accounts, queries or sites.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from gateway import migrations
from gateway.api.deps import State
from gateway.metrics import METRICS
from gateway.state import GatewayState
from varde.crypto import public_key_b64

router = APIRouter(tags=["meta"])
log = logging.getLogger("varde.gateway.ops")


class Check(BaseModel):
    """One readiness check: passed or not, and why not."""

    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    """Whether this replica can serve, check by check."""

    status: str
    checks: dict[str, Check]


def _database(state: GatewayState) -> dict[str, Check]:
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # any failure: not ready, whatever the driver raised
        log.warning("readiness: database unreachable: %s", err)
        return {
            "database": Check(ok=False, detail=f"unreachable ({type(err).__name__})"),
            "migrations": Check(ok=False, detail="database unreachable"),
        }
    try:
        at_head = migrations.at_head(state.engine)
    except Exception as err:  # same: a broken schema table is not ready
        return {"database": Check(ok=True), "migrations": Check(ok=False, detail=str(err))}
    detail = "" if at_head else f"not at head {migrations.head()}: run varde gateway migrate"
    return {"database": Check(ok=True), "migrations": Check(ok=at_head, detail=detail)}


def _key(state: GatewayState) -> Check:
    try:
        public_key_b64(state.key)
    except Exception as err:  # a key that cannot give its public half cannot sign either
        return Check(ok=False, detail=f"signing key unusable ({type(err).__name__})")
    return Check(ok=True)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: the failing checks."}},
)
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: database reachable, schema at head, signing key loaded (else 503)."""
    checks = {**(await run_in_threadpool(_database, state)), "signing_key": _key(state)}
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
)
async def metrics(state: State) -> Response:
    """Prometheus metrics: queries by status, latencies, per-site answer time, nodes, queue."""
    return Response(await METRICS.render(state.dispatcher), media_type=CONTENT_TYPE_LATEST)
