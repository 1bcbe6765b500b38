"""HTML building blocks shared by the console's pages: the page frame, tables, error pages.

Why one module: every page carries the same navigation, style and security
headers (a strict Content-Security-Policy, no framing, no caching), and every
value shown goes through :func:`esc`; keeping them here means a router cannot
forget either.
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

from nodes.console.deps import Staff

__all__ = ["HEADERS", "esc", "page", "problem", "table"]

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" even on
    # the console's own form posts, which the cross-site check must then refuse
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2730}
header{background:#1d3b53;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff}
main{padding:1em 1.5em}
table{border-collapse:collapse;margin:.5em 0 1.5em;max-width:100%}
td,th{border:1px solid #c8d0d8;padding:.25em .6em;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
table.wide{width:100%;table-layout:fixed}
pre{background:#f4f6f8;padding:.6em;overflow:auto;max-width:90em;white-space:pre-wrap;
overflow-wrap:anywhere}
.ok{color:#1a7f37}.bad{color:#b42318}.muted{color:#5b6770}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.4em 0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
section.request{border:1px solid #c8d0d8;padding:.6em 1em;margin:0 0 1em;max-width:70em}
form.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:end;margin:.4em 0 .8em}
form.filters label{display:flex;flex-direction:column;font-size:.9em}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def esc(value: object) -> str:
    """``value`` as escaped HTML text.

    >>> esc("<b>too much</b>")
    '&lt;b&gt;too much&lt;/b&gt;'
    """
    return html.escape(str(value))


_POST_FORM = '<form method="post"'


def with_csrf(html_text: str, token: str) -> str:
    """Every POST form in ``html_text`` with the session's CSRF token as a hidden field.

    One place adds it, so no form can be written without it.

    >>> with_csrf('<form method="post" action="/x"><button>Go</button></form>', "t0k")
    '<form method="post" action="/x"><input type="hidden" name="csrf" value="t0k"><button>Go</button></form>'
    """  # noqa: E501
    hidden = f'<input type="hidden" name="csrf" value="{esc(token)}">'
    out, rest = [], html_text
    while (start := rest.find(_POST_FORM)) >= 0:
        end = rest.index(">", start) + 1
        out.append(rest[:end] + hidden)
        rest = rest[end:]
    return "".join(out) + rest


def page(title: str, body: str, user: Staff | None = None, site: str = "") -> HTMLResponse:
    """A whole page around ``body`` (already HTML); the navigation only for a logged-in user."""
    nav = (
        '<a href="/">Overview</a><a href="/policy">Policy</a><a href="/audit">Audit trail</a>'
        '<a href="/spend">Spend</a><a href="/approvals">Approvals</a>'
        f'<form method="post" action="/logout" style="margin-left:auto">{esc(user.name)} '
        '<button type="submit">Log out</button></form>'
        if user
        else ""
    )
    if user is not None:
        nav, body = with_csrf(nav, user.csrf), with_csrf(body, user.csrf)
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)} - "
        f"{esc(site)} site console</title><style>{_STYLE}</style></head><body>"
        f"<header><strong>Varde site console: {esc(site)}</strong>{nav}</header>"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(doc, headers=HEADERS)


def table(
    table_id: str,
    head: list[str],
    rows: list[list[str]],
    *,
    css: str = "",
    widths: list[str] | None = None,
) -> str:
    """A table; cells are already escaped HTML.

    ``css``: its class (``wide``: full width, fixed layout, so long values wrap
    instead of widening the page); ``widths``: a CSS width per column.
    """
    cols = "".join(f'<col style="width:{w}">' for w in widths) if widths else ""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{css}"' if css else ""
    return (
        f'<table id="{table_id}"{klass}>{f"<colgroup>{cols}</colgroup>" if cols else ""}'
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    )


def problem(message: str, user: Staff, site: str) -> HTMLResponse:
    """A 422 page saying why an edit was not saved."""
    resp = page("Not saved", f'<pre id="problem">{esc(message)}</pre>', user, site)
    resp.status_code = 422
    return resp
