"""Staff login and logout: the only console pages open without a session.

A login, right or wrong, is written to the audit trail. Five wrong passwords for
one name within 15 minutes lock that name out for 15 minutes (even the right
password is refused meanwhile), audited as ``console_lockout``
(:class:`nodes.console.auth.LoginGuard`). A login form posted from another
origin is refused. The session cookie is ``HttpOnly`` and ``SameSite=Strict``;
state-changing forms also need the session's CSRF token
(:mod:`nodes.console.deps`).
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from nodes.console.auth import check_password
from nodes.console.deps import (
    COOKIE,
    Context,
    FormFields,
    StaffAction,
    login_redirect,
    refuse_cross_site,
    same_origin,
)
from nodes.console.pages import esc, page

__all__ = ["router"]

router = APIRouter()


@router.get("/login")
def login_form(ctx: Context, error: str = "") -> HTMLResponse:
    """The login form (with the error of the last attempt, if any)."""
    msg = f'<p class="bad" id="login-error">{esc(error)}</p>' if error else ""
    body = (
        f'{msg}<form method="post" action="/login">'
        '<p><label>User <input name="username" autocomplete="username" required></label></p>'
        '<p><label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label></p>'
        '<p><button type="submit">Log in</button></p></form>'
    )
    return page("Staff login", body, site=ctx.site)


@router.post("/login")
async def login(request: Request, ctx: Context, form: FormFields) -> Response:
    """Check the password (unless the name is locked out), audit the attempt, open a session."""
    if not same_origin(request):
        refuse_cross_site(request, ctx, "the login form does not come from this console")
    name, password = form.get("username", ""), form.get("password", "")
    locked = ctx.logins.locked(name)
    if locked > 0:
        ctx.store.audit("console_login", user=name, ok=False, locked=True)
        minutes = math.ceil(locked / 60)
        query = urlencode(
            {"error": f"too many wrong passwords for {name}: try again in {minutes} min"}
        )
        return RedirectResponse(f"/login?{query}", status_code=303)
    ok = await run_in_threadpool(check_password, ctx.users, name, password)  # scrypt: ~50 ms
    ctx.store.audit("console_login", user=name, ok=ok)
    if not ok:
        if ctx.logins.failed(name):
            ctx.store.audit(
                "console_lockout",
                user=name,
                failures=ctx.logins.max_failures,
                seconds=ctx.logins.lockout,
            )
        query = urlencode({"error": "wrong user name or password"})
        return RedirectResponse(f"/login?{query}", status_code=303)
    ctx.logins.succeeded(name)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(
        COOKIE,
        ctx.sessions.open(name),
        httponly=True,
        samesite="strict",
        path="/",
        max_age=int(ctx.sessions.ttl),
    )
    return resp


@router.post("/logout")
def logout(request: Request, ctx: Context, _staff: StaffAction) -> Response:
    """End the session and drop its cookie (a form of this console, with its CSRF token)."""
    ctx.sessions.close(request.cookies.get(COOKIE))
    resp = login_redirect()
    resp.delete_cookie(COOKIE, path="/")
    return resp
