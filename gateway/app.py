"""The gateway's FastAPI application: routes, one error handler, startup state."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.api.routes import catalog, nodes, queries
from gateway.core.config import Settings, get_settings
from gateway.state import GatewayState
from varde import __version__
from varde.errors import VardeError


def create_app(settings: Settings | None = None, state: GatewayState | None = None) -> FastAPI:
    """Build the app; ``state`` lets tests reach the dispatcher of an in-process gateway."""
    app = FastAPI(
        title="Varde gateway",
        version=__version__,
        description=(
            "Ask hospital cancer registries questions without any patient row leaving a hospital. "
            "Each site enforces its own policy and privacy budget; this gateway only combines "
            "what sites release."
        ),
    )
    app.state.varde = state or GatewayState.open(settings or get_settings())

    @app.exception_handler(VardeError)
    async def _varde_error(_request: Request, err: VardeError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content=err.as_dict())

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "version": __version__}

    app.include_router(queries.router)
    app.include_router(catalog.router)
    app.include_router(nodes.router)
    return app
