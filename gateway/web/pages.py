"""The page's HTML and static files, every response with the same strict headers.

Why one module: the login page, the page itself and each static file carry one
Content-Security-Policy (scripts, styles and fetches from this origin only; nothing
from a CDN or any other host; no inline script), no framing and no caching; a route
cannot forget them. Static files are served from a fixed list inside the package, so
no path a browser sends ever reaches the file system.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from fastapi.responses import HTMLResponse, Response

__all__ = ["HEADERS", "STATIC", "app_page", "login_page", "static_file"]

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STATIC: dict[str, str] = {
    "feasibility.css": "text/css; charset=utf-8",
    "feasibility.js": "text/javascript; charset=utf-8",
    "criteria.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "form.js": "text/javascript; charset=utf-8",
    "results.js": "text/javascript; charset=utf-8",
    "saved.js": "text/javascript; charset=utf-8",
}
"""Every file the page loads, by name, with its media type (anything else is a 404)."""


@cache
def _text(name: str) -> str:
    return (resources.files("gateway.web") / "static" / name).read_text(encoding="utf-8")


def static_file(name: str) -> Response | None:
    """The static file ``name`` from the package, or None when it is not one of ours."""
    media = STATIC.get(name)
    if media is None:
        return None
    return Response(_text(name), media_type=media, headers=HEADERS)


def login_page(csrf: str, error: str = "", status: int = 200) -> HTMLResponse:
    """The login form: the researcher token, posted (never in a URL) with a CSRF field."""
    alert = (
        f'<p id="login-error" class="error" role="alert">{html.escape(error)}</p>' if error else ""
    )
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>Log in - Varde trial feasibility</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/feasibility/static/feasibility.css"></head><body>'
        '<header class="top"><strong>Varde trial feasibility</strong></header>'
        '<main class="login"><h1>Log in</h1>'
        "<p>Paste the researcher token your gateway administrator gave you "
        "(<code>varde admin researcher add</code>; the demo prints one).</p>"
        f'{alert}<form method="post" action="/feasibility/login">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        '<label for="token">Researcher token</label>'
        '<input id="token" name="token" type="password" autocomplete="off" required '
        'spellcheck="false">'
        '<button type="submit">Log in</button></form></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def app_page(researcher: str, csrf: str) -> HTMLResponse:
    """The page itself, with the session's CSRF token for its scripts to send back."""
    body = (
        _text("app.html")
        .replace("{{csrf}}", html.escape(csrf))
        .replace("{{researcher}}", html.escape(researcher))
    )
    return HTMLResponse(body, headers=HEADERS)
