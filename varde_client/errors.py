"""What the client raises when the gateway, or a site, says no: one tree, one class per reason.

::

    VardeHTTPError                  any refusal: status, code, detail, sites, site, site_errors
    ├── AuthenticationFailed  401   no bearer token, or one nobody issued
    ├── InvalidQuery          422   the query does not validate (``errors``: each problem)
    ├── Forbidden             403   not a member of the project
    │   └── PolicyViolation   403   a site's policy refuses (project, statistic, cap, mode ...)
    │       └── FieldNotAvailable   the site does not expose a field the query reads (``fields``)
    ├── NotFound              404   unknown project, site, query or job
    ├── Conflict              409   the sites refused for different reasons, a used token ...
    │   └── BudgetExhausted   409   the privacy budget left cannot pay for the query
    ├── AwaitingApproval      202   the site's staff must approve first (nothing charged)
    ├── SiteUnavailable       503   a site is not connected or did not answer in time
    ├── EnvelopeRejected      400   a signed message failed verification
    ├── ServerError           500   an internal error (at the gateway, or ``error`` at a site)
    └── QueryRefused                raised by :meth:`QueryResponse.raise_for_refusals`

The classes mirror the server's tree (:mod:`varde.errors`) and take their codes
from it, so the word a hospital or the gateway used is the class a researcher
catches: ``except FieldNotAvailable`` whether the gateway refused the whole
query or one site refused inside an answer.

Two places a refusal can come from:

* **The whole query** (HTTP 4xx/5xx): :meth:`VardeClient.query` and every other
  client call raise the class of the body's ``error`` code (or, for a body
  without one, of the HTTP status). When no site released anything because
  every site refused, the gateway answers with the reason all of them share
  (every site out of budget: 409 ``budget_exhausted``; reasons with nothing in
  common: 409 ``conflict``) and each site's own row; the client raises that
  class with ``site_errors``, one typed error per site.
* **One site inside an answer** (HTTP 200, or 202 when nothing is released yet
  because some site awaits its staff's approval): a partial answer is a result,
  not an exception. ``res.refusals`` holds the typed error of each site that did
  not answer ``ok``; ``res.raise_for_refusals()`` raises :class:`QueryRefused`
  carrying them when there is any (and returns the result otherwise).

``status`` is the HTTP status of the response for a whole-query refusal; for a
per-site error it is the status the same refusal has on its own (the class's
``default_status``), and ``site`` names the site.

>>> err = error_for(403, {"error": "field_not_available",
...                       "detail": "site 'trondheim' does not expose field(s) pdl1_tps"})
>>> type(err).__name__, err.status, err.fields, isinstance(err, PolicyViolation)
('FieldNotAvailable', 403, ['pdl1_tps'], True)
>>> type(site_error({"site": "oslo", "status": "unavailable", "message": "slow"})).__name__
'SiteUnavailable'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from varde import errors as server


class VardeHTTPError(Exception):
    """The gateway or a site said no: ``status``, machine ``code``, human ``detail``.

    ``sites`` are the refusing sites' rows as the gateway sent them (dicts with
    ``site``, ``status``, ``message``; empty when the refusal is not about sites),
    ``site_errors`` the same as typed errors by site, and ``site`` the site a
    per-site error is about (None for the gateway's own refusals).
    """

    codes: ClassVar[tuple[str, ...]] = ()
    """The server codes and site statuses this class stands for."""
    default_status: ClassVar[int] = 500
    """The HTTP status this refusal has on its own (a per-site error's ``status``)."""

    def __init__(self, status: int, body: Mapping[str, Any], *, site: str | None = None) -> None:
        self.status = status
        self.code = str(body.get("error", "http_error"))
        raw = body.get("detail", body)
        self.detail = raw if isinstance(raw, str) else str(raw)
        self.site = site
        rows = body.get("sites")
        self.sites: list[dict[str, Any]] = (
            [dict(r) for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
        )
        self.site_errors: dict[str, VardeHTTPError] = {
            str(r.get("site", "")): site_error(r) for r in self.sites if r.get("status") != "ok"
        }
        where = f" at {site}" if site is not None else ""
        super().__init__(f"{status} {self.code}{where}: {self.detail}")


class AuthenticationFailed(VardeHTTPError):
    """No bearer token, or one the gateway never issued or has revoked."""

    codes = (server.AuthenticationFailed.code,)
    default_status = server.AuthenticationFailed.status


class InvalidQuery(VardeHTTPError):
    """The query does not validate: ``errors`` lists each problem (``loc``, ``msg``, ``type``)."""

    codes = (server.InvalidQuery.code,)
    default_status = server.InvalidQuery.status

    def __init__(self, status: int, body: Mapping[str, Any], *, site: str | None = None) -> None:
        super().__init__(status, body, site=site)
        found = body.get("errors")
        self.errors: list[dict[str, Any]] = (
            [dict(e) for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []
        )


class Forbidden(VardeHTTPError):
    """Authenticated, but not allowed (e.g. not a member of the project)."""

    codes = (server.Forbidden.code,)
    default_status = server.Forbidden.status


class PolicyViolation(Forbidden):
    """A site's policy does not allow this project, statistic, privacy mode or budget."""

    codes = (server.PolicyViolation.code,)
    default_status = server.PolicyViolation.status


class FieldNotAvailable(PolicyViolation):
    """The site does not expose a field the query reads; ``fields`` names them (sorted).

    Leave the field out, or the site (``"sites": [...]``), and ask again.
    """

    codes = (server.FieldNotAvailable.code,)
    default_status = server.FieldNotAvailable.status

    def __init__(self, status: int, body: Mapping[str, Any], *, site: str | None = None) -> None:
        super().__init__(status, body, site=site)
        self.fields = server.FieldNotAvailable.fields_in(self.detail)


class NotFound(VardeHTTPError):
    """No such project, site, query or training job (of yours)."""

    codes = (server.NotFound.code,)
    default_status = server.NotFound.status


class Conflict(VardeHTTPError):
    """Conflicts with the current state; also every site refused, each for its own reason."""

    codes = (server.Conflict.code,)
    default_status = server.Conflict.status


class BudgetExhausted(Conflict):
    """The project's privacy budget left at the site cannot pay for the query."""

    codes = (server.BudgetExhausted.code,)
    default_status = server.BudgetExhausted.status


class AwaitingApproval(VardeHTTPError):
    """The site's staff must approve the request first; nothing was computed or charged.

    Ask the same question again once they have: the site recognises it.
    """

    codes = ("awaiting_approval",)
    default_status = 202


class SiteUnavailable(VardeHTTPError):
    """A site is not connected or did not answer within the query's timeout."""

    codes = (server.NodeUnavailable.code, "unavailable")
    default_status = server.NodeUnavailable.status


class EnvelopeRejected(VardeHTTPError):
    """A signed message failed verification (forged, replayed, expired, misaddressed)."""

    codes = (server.EnvelopeRejected.code,)
    default_status = server.EnvelopeRejected.status


class ServerError(VardeHTTPError):
    """An internal error at the gateway, or a site's ``error`` (details stay at the site)."""

    codes = (server.VardeError.code, "error")
    default_status = server.VardeError.status


class QueryRefused(VardeHTTPError):
    """Some sites did not answer ``ok``; ``site_errors`` holds each one's typed error.

    Raised by :meth:`~varde_client.frames.QueryResponse.raise_for_refusals`; the
    answer of the sites that did release is still in ``response``.
    """

    codes = ()
    default_status = 200

    def __init__(self, status: int, body: Mapping[str, Any], *, response: Any = None) -> None:
        super().__init__(status, body)
        self.response = response
        """The :class:`~varde_client.frames.QueryResponse` the refusals came with."""


_CLASSES: tuple[type[VardeHTTPError], ...] = (
    AuthenticationFailed,
    InvalidQuery,
    Forbidden,
    PolicyViolation,
    FieldNotAvailable,
    NotFound,
    Conflict,
    BudgetExhausted,
    AwaitingApproval,
    SiteUnavailable,
    EnvelopeRejected,
    ServerError,
)
_BY_CODE: dict[str, type[VardeHTTPError]] = {code: cls for cls in _CLASSES for code in cls.codes}
_BY_STATUS: dict[int, type[VardeHTTPError]] = {
    401: AuthenticationFailed,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidQuery,
    400: EnvelopeRejected,
    503: SiteUnavailable,
}


def error_for(status: int, body: Mapping[str, Any]) -> VardeHTTPError:
    """The typed error of a whole-query refusal: by the body's ``error`` code, else its status.

    A code this client does not know falls back to the status's class (a newer
    gateway's finer reason is still a 403 or a 409), a 5xx to :class:`ServerError`,
    anything else to :class:`VardeHTTPError` itself.
    """
    cls = _BY_CODE.get(str(body.get("error", "")))
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else VardeHTTPError)
    return cls(status, body)


def site_error(row: Mapping[str, Any]) -> VardeHTTPError:
    """The typed error of one site's refusal row (``site``, ``status``, ``message``)."""
    status = str(row.get("status", ""))
    cls = _BY_CODE.get(status, ServerError)
    body = {"error": status, "detail": str(row.get("message", "")) or status}
    return cls(cls.default_status, body, site=str(row.get("site", "")))
