"""Staff login and logout: the only console pages open without a session.

A login, right or wrong, is written to the audit trail. The session cookie is
``HttpOnly`` and ``SameSite=Strict`` so another site cannot post a decision on
a staff member's behalf.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nodes.console.auth import check_password
from nodes.console.deps import COOKIE, Context, FormFields, login_redirect
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
async def login(ctx: Context, form: FormFields) -> Response:
    """Check the password, audit the attempt, and open a session if it was right."""
    name, password = form.get("username", ""), form.get("password", "")
    ok = check_password(ctx.users, name, password)
    ctx.store.audit("console_login", user=name, ok=ok)
    if not ok:
        query = urlencode({"error": "wrong user name or password"})
        return RedirectResponse(f"/login?{query}", status_code=303)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, ctx.sessions.open(name), httponly=True, samesite="strict", path="/")
    return resp


@router.post("/logout")
def logout(request: Request, ctx: Context) -> Response:
    """End the session and drop its cookie."""
    ctx.sessions.close(request.cookies.get(COOKIE))
    resp = login_redirect()
    resp.delete_cookie(COOKIE, path="/")
    return resp
