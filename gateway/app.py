"""The gateway's FastAPI application: routes, one error handler, startup state."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway.api.docs import serve_docs
from gateway.api.errors import Problem, invalid_body
from gateway.api.routes import catalog, nodes, ops, queries
from gateway.core.config import Settings, get_settings
from gateway.metrics import RequestContext
from gateway.queries import adopt_orphan
from gateway.state import GatewayState
from gateway.training import routes as trainings
from gateway.web import routes as feasibility
from varde import __version__
from varde.errors import VardeError

log = logging.getLogger("varde.gateway")


def create_app(settings: Settings | None = None, state: GatewayState | None = None) -> FastAPI:
    """Build the app; ``state`` lets tests reach the dispatcher of an in-process gateway."""
    varde_state = state or GatewayState.open(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        varde_state.loop = asyncio.get_running_loop()
        await varde_state.dispatcher.start(functools.partial(adopt_orphan, varde_state))
        yield
        await varde_state.dispatcher.close()
        varde_state.engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="Varde gateway",
        version=__version__,
        description=(
            "Ask hospital cancer registries questions without any patient row leaving a hospital. "
            "Each site enforces its own policy and privacy budget; this gateway only combines "
            "what sites release."
        ),
        docs_url=None,  # served offline by gateway.api.docs, with no CDN
        redoc_url=None,
        openapi_url=None,
    )
    app.state.varde = varde_state
    app.add_middleware(RequestContext)  # request ids (X-Request-ID) and query metrics

    @app.exception_handler(VardeError)
    async def _varde_error(_request: Request, err: VardeError) -> JSONResponse:
        if err.status == 422:  # a check's refusal gets the same body as pydantic's
            problem = Problem(loc=[], msg=err.message, type=err.code)
            return JSONResponse(status_code=422, content=invalid_body([problem], err.message))
        return JSONResponse(status_code=err.status, content=err.as_dict())

    async def _database_down(_request: Request, err: Exception) -> JSONResponse:
        # A lost database connection (PostgreSQL restarting, a network cut) is the gateway's
        # outage, not a bug: 503 with Retry-After, so clients and load balancers retry.
        log.warning("database unavailable: %s", type(err).__name__)
        return JSONResponse(
            status_code=503,
            content={
                "error": "database_unavailable",
                "detail": "the gateway's database cannot be reached; nothing was charged by "
                "this request's failure at the gateway: try again shortly",
            },
            headers={"Retry-After": "5"},
        )

    for database_error in database_errors():
        app.add_exception_handler(database_error, _database_down)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=validation_body(err))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, err: HTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8, not JSON) with a bare 400; it is
        # an invalid request like any other, so it gets the documented 422 body.
        if err.status_code == 400 and err.detail == "There was an error parsing the body":
            problem = Problem(loc=[], msg="not UTF-8 JSON", type="json_invalid")
            return JSONResponse(status_code=422, content=invalid_body([problem]))
        detail = err.detail if isinstance(err.detail, str) else str(err.detail)
        return JSONResponse(
            status_code=err.status_code,
            content={"error": f"http_{err.status_code}", "detail": detail},
            headers=getattr(err, "headers", None),
        )

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "version": __version__}

    app.include_router(ops.router)  # /readyz, /metrics
    app.include_router(queries.router)
    app.include_router(catalog.router)
    app.include_router(nodes.router)
    app.include_router(trainings.router)
    app.include_router(feasibility.router)  # the trial-feasibility page (gateway/web)
    serve_docs(app)
    settings_in_force = varde_state.settings
    if settings_in_force.flower_superlink:
        from gateway.training.deployment import FlwrSubmitter
        from gateway.training.service import TrainingService

        submitter = FlwrSubmitter(
            home=settings_in_force.state_dir / "flwr",
            superlink=settings_in_force.flower_superlink,
            insecure=settings_in_force.flower_insecure,
            root_certificates=settings_in_force.flower_root_certificates,
        )
        app.state.varde_training = TrainingService(
            submitter, settings_in_force.state_dir / "trainings", sessions=varde_state.sessions
        )
    return app


def database_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean the database is unreachable (not that a request is wrong).

    SQLAlchemy's connection errors for every engine, and psycopg's own for the
    PostgreSQL work queue's LISTEN connection and pool (an optional extra).
    """
    import sqlalchemy.exc

    found: list[type[Exception]] = [sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError]
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        return tuple(found)
    return (*found, psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)


def validation_body(err: RequestValidationError) -> dict[str, object]:
    """A 422 body that names each problem by its path, without echoing the input back.

    FastAPI's default echoes the offending input, which fails to serialise for
    NaN/Infinity (a 500 for a bad request) and could reflect large payloads.
    """
    return invalid_body(
        [
            Problem(
                loc=[str(p) for p in e.get("loc", ()) if p != "body"],
                msg=str(e.get("msg", "")),
                type=str(e.get("type", "")),
            )
            for e in err.errors()
        ]
    )
