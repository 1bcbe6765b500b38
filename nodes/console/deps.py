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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from nodes.console.auth import Sessions
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore

__all__ = [
    "COOKIE",
    "ConsoleContext",
    "Context",
    "FormFields",
    "NotLoggedIn",
    "StaffAction",
    "StaffUser",
    "form_fields",
    "get_context",
    "login_redirect",
    "not_logged_in",
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


def _session_user(request: Request, ctx: ConsoleContext) -> str | None:
    return ctx.sessions.user(request.cookies.get(COOKIE))


def staff_user(request: Request, ctx: Context) -> str:
    """The staff member viewing a page; without a session, a redirect to the login form."""
    user = _session_user(request, ctx)
    if user is None:
        raise NotLoggedIn(login_redirect())
    return user


def staff_action(request: Request, ctx: Context) -> str:
    """The staff member posting a form; without a session, 401 (nothing is changed)."""
    user = _session_user(request, ctx)
    if user is None:
        raise NotLoggedIn(Response("log in first", status_code=401))
    return user


StaffUser = Annotated[str, Depends(staff_user)]
StaffAction = Annotated[str, Depends(staff_action)]


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form body (no multipart dependency: the console posts nothing else)."""
    parsed = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {k: v[0] for k, v in parsed.items() if v}


FormFields = Annotated[dict[str, str], Depends(form_fields)]
