"""One error tree for the whole project, each class with its HTTP status.

::

    VardeError (500)
    ├── InvalidQuery (422)            bad field, category, bounds, epsilon ...
    ├── AuthenticationFailed (401)    missing or unknown bearer token
    ├── Forbidden (403)
    │   └── PolicyViolation (403)     a site's own policy refuses the work
    ├── NotFound (404)                unknown project, site, query
    ├── Conflict (409)
    │   └── BudgetExhausted (409)     the privacy budget cannot pay for the query
    ├── EnvelopeRejected (400)        forged, replayed, expired or misaddressed message
    └── NodeUnavailable (503)         a site did not answer in time

Why a tree: the gateway has exactly one exception handler that turns any
``VardeError`` into ``{"error": code, "detail": message}`` with the class's
status, and a node reports the same ``code`` back in a refused release, so a
researcher sees the same words whether the gateway or a hospital said no.
Library errors are wrapped with ``raise ... from err`` so the cause survives.
"""

from __future__ import annotations

from typing import ClassVar


class VardeError(Exception):
    """Base class: ``status`` is the HTTP status, ``code`` a stable machine-readable name."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, str]:
        """The JSON body the gateway returns for this error."""
        return {"error": self.code, "detail": self.message}


class InvalidQuery(VardeError):
    """The query is well-formed JSON but asks for something that cannot be answered."""

    status = 422
    code = "invalid_query"


class AuthenticationFailed(VardeError):
    """No credentials, or credentials nobody issued."""

    status = 401
    code = "authentication_failed"


class Forbidden(VardeError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class PolicyViolation(Forbidden):
    """A site's policy does not allow this project, field, statistic or privacy mode."""

    code = "policy_violation"


class NotFound(VardeError):
    """The named project, site or query does not exist."""

    status = 404
    code = "not_found"


class Conflict(VardeError):
    """The request conflicts with current state (e.g. a token already used)."""

    status = 409
    code = "conflict"


class BudgetExhausted(Conflict):
    """The privacy budget left cannot pay for this release."""

    code = "budget_exhausted"


class EnvelopeRejected(VardeError):
    """A signed message failed verification; ``reason`` says which check failed."""

    status = 400
    code = "envelope_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class NodeUnavailable(VardeError):
    """A site is not connected or did not answer within the query's timeout."""

    status = 503
    code = "node_unavailable"
