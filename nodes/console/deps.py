"""FastAPI dependencies of the site console: the node it serves and the logged-in staff member.

Why a module of its own: every page needs the same two things, the console's
context (which node, its store, ledger and policy) and who is logged in, and
the routers in :mod:`nodes.console.routes` should declare them rather than
close over the factory's arguments. The context lives on ``app.state`` (set
by :func:`nodes.console.app.create_console`), so tests can swap it with
``app.dependency_overrides[get_context]`` instead of patching globals.

Not logged in, a page answers with a redirect to ``/login`` and a form post
with a plain 401 (:class:`NotLoggedIn` carries that response to the handler
the app registers).

Cross-site requests: SameSite cookies do not separate two ports of 127.0.0.1
(they are the same *site*), so a page served by anything else on the machine
could post to the console with the staff member's cookie. Every state-changing
request must therefore (1) come from the console's own origin (``Origin``, or
``Referer`` where a browser sends no Origin; neither is refused) and (2) carry
the session's CSRF token in its form (:func:`staff_action`). A refusal is a 403
naming the reason, audited as ``console_csrf_refused``; nothing is changed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from nodes.console.auth import LoginGuard, Sessions
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore

__all__ = [
    "COOKIE",
    "ConsoleContext",
    "Context",
    "FormFields",
    "NotLoggedIn",
    "Staff",
    "StaffAction",
    "StaffUser",
    "form_fields",
    "get_context",
    "login_redirect",
    "not_logged_in",
    "refuse_cross_site",
    "same_origin",
    "staff_action",
    "staff_user",
]

COOKIE = "varde_console"


@dataclass(frozen=True)
class ConsoleContext:
    """What the console's pages read and change at one node (see ``create_console``)."""

    site: str
    store: NodeStore
    ledger: Ledger
    policy: Callable[[], Policy]
    users: Path
    connected: Callable[[], bool | None]
    training: Callable[[], str | None]
    policy_file: Path | None = None
    policy_saved: Callable[[], object] | None = None
    sessions: Sessions = field(default_factory=Sessions)
    logins: LoginGuard = field(default_factory=LoginGuard)


def get_context(request: Request) -> ConsoleContext:
    """The console context the app was built with."""
    ctx: ConsoleContext = request.app.state.console
    return ctx


Context = Annotated[ConsoleContext, Depends(get_context)]


class NotLoggedIn(Exception):
    """No live staff session; ``response`` is what the request gets instead."""

    def __init__(self, response: Response) -> None:
        super().__init__("not logged in")
        self.response = response


async def not_logged_in(request: Request, exc: Exception) -> Response:
    """Exception handler: answer with the response the :class:`NotLoggedIn` carries."""
    if not isinstance(exc, NotLoggedIn):  # registered for NotLoggedIn only
        raise exc
    return exc.response


def login_redirect() -> Response:
    """Back to the login form (after a logout, or for a page seen without a session)."""
    return RedirectResponse("/login", status_code=303)


@dataclass(frozen=True)
class Staff:
    """The logged-in staff member, and the CSRF token every form of theirs carries."""

    name: str
    csrf: str

    def __str__(self) -> str:
        return self.name


def _staff(request: Request, ctx: ConsoleContext) -> Staff | None:
    found = ctx.sessions.session(request.cookies.get(COOKIE))
    return Staff(found.user, found.csrf) if found is not None else None


def staff_user(request: Request, ctx: Context) -> Staff:
    """The staff member viewing a page; without a session, a redirect to the login form."""
    staff = _staff(request, ctx)
    if staff is None:
        raise NotLoggedIn(login_redirect())
    return staff


def same_origin(request: Request) -> bool:
    """Whether a request comes from a page of this console (``Origin``, else ``Referer``).

    A browser sends ``Origin`` with every cross-origin POST and most same-origin
    ones; where it sends none, the ``Referer`` tells. With neither, the request
    is refused: the console's own forms always produce one of them.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return parts.scheme in ("http", "https") and parts.netloc == host
    return False


def refuse_cross_site(request: Request, ctx: ConsoleContext, why: str) -> None:
    """Audit and refuse a state-changing request that is not the console's own."""
    ctx.store.audit(
        "console_csrf_refused",
        why=why,
        path=request.url.path,
        origin=request.headers.get("origin", ""),
        referer=request.headers.get("referer", ""),
    )
    raise NotLoggedIn(Response(f"refused: {why}; nothing was changed", status_code=403))


async def staff_action(request: Request, ctx: Context) -> Staff:
    """The staff member posting a form: logged in, same origin, the session's CSRF token.

    Without a session: 401. From another origin, or without the form's token: 403,
    audited. In every case nothing is changed.
    """
    staff = _staff(request, ctx)
    if staff is None:
        raise NotLoggedIn(Response("log in first", status_code=401))
    if not same_origin(request):
        refuse_cross_site(request, ctx, "the request does not come from this console")
    sent = (await form_fields(request)).get("csrf", "")
    if not hmac.compare_digest(sent.encode(), staff.csrf.encode()):
        refuse_cross_site(request, ctx, "the form's CSRF token is missing or wrong")
    return staff


StaffUser = Annotated[Staff, Depends(staff_user)]
StaffAction = Annotated[Staff, Depends(staff_action)]


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form body (no multipart dependency: the console posts nothing else)."""
    parsed = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {k: v[0] for k, v in parsed.items() if v}


FormFields = Annotated[dict[str, str], Depends(form_fields)]
