"""API documentation served by the gateway itself: Swagger UI and ReDoc with no CDN.

Why: FastAPI's default ``/docs`` page loads its JavaScript and CSS from a public
CDN, so on a hospital or research network without that access (or behind a
strict proxy) the docs page is blank, and every visit tells a third party who
reads our docs. The assets come from ``fastapi-offline`` (a maintained package
that ships Swagger UI and ReDoc with their licences); the gateway serves them
under :data:`STATIC_URL`.

Two documents, one app:

- ``/openapi.json`` (``/docs``, ``/redoc``) is the researcher's: queries,
  previews, schema, sites, budgets, training jobs. The routes nodes call
  (enrolment, long-poll, releases) are left out: a researcher never calls
  them, and listing them beside ``POST /v1/queries`` only confuses.
- ``/operators/openapi.json`` (``/operators/docs``) documents every route,
  node routes included, for whoever runs a gateway or writes a node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static-docs"
ASSETS = Path(fastapi_offline.__file__).parent / "static"
OPERATOR_TAGS = frozenset({"nodes"})
"""Route tags only nodes and operators use; not in the researcher's document."""


def _refs(node: Any) -> set[str]:
    """Names of the component schemas ``node`` refers to (directly)."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def researchers_only(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the operations tagged :data:`OPERATOR_TAGS` and the schemas only they use.

    >>> doc = {"paths": {"/q": {"post": {"tags": ["queries"], "x": {"$ref": "#/c/A"}}},
    ...                  "/n": {"post": {"tags": ["nodes"], "x": {"$ref": "#/c/B"}}}},
    ...        "components": {"schemas": {"A": {"y": {"$ref": "#/c/C"}}, "B": {}, "C": {}}}}
    >>> out = researchers_only(doc)
    >>> sorted(out["paths"]), sorted(out["components"]["schemas"])
    (['/q'], ['A', 'C'])
    """
    paths: dict[str, Any] = {}
    for path, ops in doc.get("paths", {}).items():
        kept = {m: op for m, op in ops.items() if not OPERATOR_TAGS & set(op.get("tags", []))}
        if kept:
            paths[path] = kept
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    wanted, todo = set(), _refs(paths)
    while todo:
        name = todo.pop()
        if name not in wanted and name in schemas:
            wanted.add(name)
            todo |= _refs(schemas[name])
    components = {**doc.get("components", {}), "schemas": {k: schemas[k] for k in sorted(wanted)}}
    return {**doc, "paths": paths, "components": components}


def _document(app: FastAPI, *, operators: bool) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title + (" (operators)" if operators else ""),
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    return doc if operators else researchers_only(doc)


def _swagger(request: Request, title: str, openapi_url: str) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{openapi_url}",
        title=title,
        swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
    )


def serve_docs(app: FastAPI) -> None:
    """Add the documents, the offline docs pages and ``/`` (which leads to the docs).

    The app must be built with ``docs_url=None, redoc_url=None, openapi_url=None``
    so FastAPI's own CDN pages and unfiltered document do not exist beside these.
    """
    cache: dict[bool, dict[str, Any]] = {}

    def document(operators: bool) -> dict[str, Any]:
        if operators not in cache:
            cache[operators] = _document(app, operators=operators)
        return cache[operators]

    app.openapi = lambda: document(False)  # type: ignore[method-assign]
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="static-docs")

    @app.get("/openapi.json", include_in_schema=False)
    def researcher_openapi() -> JSONResponse:
        return JSONResponse(document(False))

    @app.get("/operators/openapi.json", include_in_schema=False)
    def operator_openapi() -> JSONResponse:
        return JSONResponse(document(True))

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        return _swagger(request, f"{app.title} - API for researchers", "/openapi.json")

    @app.get("/operators/docs", include_in_schema=False)
    def operator_swagger(request: Request) -> HTMLResponse:
        return _swagger(request, f"{app.title} - every route", "/operators/openapi.json")

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/docs")
