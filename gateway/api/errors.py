"""The error bodies the gateway returns, as documented models, and each route's statuses.

Why: a client (the SDK, a notebook, curl, a generated client) should find in
``/openapi.json`` every status a route can answer and the exact shape of its
body. Every :class:`~varde.errors.VardeError` becomes an :class:`ErrorBody`
(one handler in :mod:`gateway.app`); request validation becomes a
:class:`ValidationErrorBody` (``detail`` is a sentence, ``errors`` the list of
problems; FastAPI's default would echo the input back and document ``detail``
as an array). ``schemathesis`` checks the document against the running API
(``tests/integration/test_api_schema.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from varde.release import SiteRelease


class ErrorBody(BaseModel):
    """A refusal: a stable machine-readable ``error`` and a ``detail`` for humans."""

    error: str = Field(
        description="e.g. invalid_query, authentication_failed, policy_violation, "
        "field_not_available, budget_exhausted, node_unavailable"
    )
    detail: str
    sites: list[SiteRelease] | None = Field(
        default=None, description="When no site answered: each site's own reason."
    )


class Problem(BaseModel):
    """One invalid part of a request."""

    loc: list[str] = Field(description="Where in the request, e.g. ['privacy', 'epsilon'].")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A request that does not validate (422): every problem, by its place in the request."""

    error: str = Field(description="invalid_query")
    detail: str = Field(description="All problems in one sentence.")
    errors: list[Problem]


def invalid_body(problems: list[Problem], detail: str | None = None) -> dict[str, object]:
    """The one 422 body, whichever layer found the problems (pydantic, a decoder, a check).

    ``detail`` defaults to every problem by its place, in one sentence.
    """
    if detail is None:
        detail = "; ".join(f"{'.'.join(p.loc) or 'body'}: {p.msg}" for p in problems)
    return ValidationErrorBody(error="invalid_query", detail=detail, errors=problems).model_dump()


_WHY = {
    400: "A signed envelope failed verification (forged, replayed, expired, misaddressed).",
    401: "No bearer token, or one nobody issued (checked before anything else).",
    403: (
        "Not allowed: not a member of the project, or every site's policy refuses "
        "(field_not_available when each refuses because it does not expose a field read)."
    ),
    404: "No such project, site, query or job (of yours).",
    409: "Conflicts with the current state: a budget that cannot pay, a used token.",
    503: "No site answered in time, none is connected, or training is not configured.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: its error statuses and their documented bodies."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 422:
            out[422] = {"model": ValidationErrorBody, "description": "Invalid request."}
        else:
            out[status] = {"model": ErrorBody, "description": _WHY[status]}
    return out
