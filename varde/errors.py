"""One error tree for the whole project, each class with its HTTP status.

::

    VardeError (500)
    ├── InvalidQuery (422)            bad field, category, bounds, epsilon ...
    ├── AuthenticationFailed (401)    missing or unknown bearer token
    ├── Forbidden (403)
    │   └── PolicyViolation (403)     a site's own policy refuses the work
    │       └── FieldNotAvailable (403)  ... because the site does not expose a field read
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

from collections.abc import Iterable
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


class FieldNotAvailable(PolicyViolation):
    """The query (or training job) reads a field the site's policy does not expose.

    A refusal of its own (code ``field_not_available``, a site status of the same
    name) so that a researcher's code can tell "drop this field or this site"
    from every other policy refusal without reading the sentence. ``fields``
    are the schema fields the site does not expose, sorted; :meth:`fields_in`
    reads them back from the message (the wire carries only the message).

    >>> err = FieldNotAvailable("trondheim", {"pdl1_tps"})
    >>> err.code, err.message
    ('field_not_available', "site 'trondheim' does not expose field(s) pdl1_tps")
    >>> FieldNotAvailable.fields_in(err.message)
    ['pdl1_tps']
    """

    code = "field_not_available"
    _MARK: ClassVar[str] = " does not expose field(s) "

    def __init__(self, site: str, fields: Iterable[str]) -> None:
        self.site = site
        self.fields = sorted(fields)
        super().__init__(f"site {site!r}{self._MARK}{', '.join(self.fields)}")

    @classmethod
    def fields_in(cls, message: str) -> list[str]:
        """The fields named by a message this class wrote (empty for any other message)."""
        _, mark, names = message.partition(cls._MARK)
        return [n for n in names.split(", ") if n] if mark else []


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
