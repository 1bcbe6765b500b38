"""The site console: a small web app for the hospital's registry staff, served by the node.

Why server-rendered HTML with no JavaScript: the console runs inside the
hospital, often in locked-down browsers, and shows a handful of tables. Plain
forms keep it auditable and testable in a real browser.

Trust: it listens on 127.0.0.1 by default, has its own staff login
(:mod:`nodes.console.auth`) and is never reachable through the gateway (the
node opens no port towards it). Session cookies are ``HttpOnly`` and
``SameSite=Strict`` (so another site cannot post a decision on a staff
member's behalf); every login and decision is in the audit trail.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nodes.console.auth import Sessions, check_password
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.policy_edits import (
    PolicyEditError,
    record_project_approval,
    set_budget,
    write_policy_version,
)
from nodes.store import NodeStore
from varde.errors import NotFound

__all__ = ["ConsoleServer", "create_console"]

COOKIE = "varde_console"
_POLICY_KINDS = ("policy_loaded", "policy_changed", "policy_refused")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2730}
header{background:#1d3b53;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff}
main{padding:1em 1.5em}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #c8d0d8;padding:.25em .6em;text-align:left;vertical-align:top}
pre{background:#f4f6f8;padding:.6em;overflow:auto;max-width:90em}
.ok{color:#1a7f37}.bad{color:#b42318}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _page(title: str, body: str, user: str | None = None, site: str = "") -> HTMLResponse:
    nav = (
        '<a href="/">Overview</a><a href="/policy">Policy</a><a href="/audit">Audit trail</a>'
        '<a href="/approvals">Approvals</a>'
        f'<form method="post" action="/logout" style="margin-left:auto">{_e(user)} '
        '<button type="submit">Log out</button></form>'
        if user
        else ""
    )
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)} - "
        f"{_e(site)} site console</title><style>{_STYLE}</style></head><body>"
        f"<header><strong>Varde site console: {_e(site)}</strong>{nav}</header>"
        f"<main><h1>{_e(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(doc, headers=_HEADERS)


def _table(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    """A table; cells are already escaped HTML."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _chart(points: list[float], budget: float) -> str:
    """Cumulative spend as an inline SVG line (charge by charge), with the budget as a rule."""
    width, height = 320, 80
    top = max([budget, *points]) or 1.0
    xs = [i * width / max(1, len(points)) for i in range(len(points) + 1)]
    ys = [height - v * height / top for v in [0.0, *points]]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    rule = height - budget * height / top
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="spent over time">'
        f'<line x1="0" x2="{width}" y1="{rule:.1f}" y2="{rule:.1f}" stroke="#b42318" '
        f'stroke-dasharray="4"/><polyline fill="none" stroke="#1d3b53" stroke-width="2" '
        f'points="{line}"/></svg>'
    )


def _budget_form(project: str, budget: float) -> str:
    p = _e(project)
    return (
        f'<form method="post" action="/budgets/{p}"><input name="budget" id="budget-{p}" '
        f'size="6" value="{budget:g}" required> <button type="submit" id="set-budget-{p}">'
        "Set budget</button></form>"
    )


def _problem(message: str, user: str, site: str) -> HTMLResponse:
    resp = _page("Not saved", f'<pre id="problem">{_e(message)}</pre>', user, site)
    resp.status_code = 422
    return resp


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (no multipart dependency: the console posts nothing else)."""
    parsed = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {k: v[0] for k, v in parsed.items() if v}


def create_console(
    *,
    site: str,
    store: NodeStore,
    ledger: Ledger,
    policy: Callable[[], Policy],
    users: Path,
    connected: Callable[[], bool | None] = lambda: None,
    training: Callable[[], str | None] = lambda: None,
    policy_file: Path | None = None,
    policy_saved: Callable[[], object] | None = None,
) -> FastAPI:
    """The console app for one node.

    Args:
        site: The site's name (shown everywhere, so staff know which node this is).
        store: The node's store (audit trail, approvals).
        ledger: The node's budget ledger (read only here).
        policy: Returns the policy in force (the node's, swapped on reload).
        users: The staff users file (see :func:`nodes.console.auth.add_user`).
        connected: Whether the node's long-poll to the gateway is up (None: unknown).
        training: The state of the node's Flower SuperNode (None: training not configured).
        policy_file: The policy file; when given, staff may change budgets here
            (the edit is validated exactly like ``varde policy check``).
        policy_saved: Called after the console wrote the policy file (the node
            passes its reloader, so the new version is in force at once).
    """
    app = FastAPI(title=f"{site} site console", docs_url=None, redoc_url=None, openapi_url=None)
    sessions = Sessions()

    def user_of(request: Request) -> str | None:
        return sessions.user(request.cookies.get(COOKIE))

    def login_redirect() -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.get("/login")
    def login_form(error: str = "") -> HTMLResponse:
        msg = f'<p class="bad" id="login-error">{_e(error)}</p>' if error else ""
        body = (
            f'{msg}<form method="post" action="/login">'
            '<p><label>User <input name="username" autocomplete="username" required></label></p>'
            '<p><label>Password <input name="password" type="password" '
            'autocomplete="current-password" required></label></p>'
            '<p><button type="submit">Log in</button></p></form>'
        )
        return _page("Staff login", body, site=site)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        name, password = form.get("username", ""), form.get("password", "")
        ok = check_password(users, name, password)
        store.audit("console_login", user=name, ok=ok)
        if not ok:
            query = urlencode({"error": "wrong user name or password"})
            return RedirectResponse(f"/login?{query}", status_code=303)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, sessions.open(name), httponly=True, samesite="strict", path="/")
        return resp

    @app.post("/logout")
    def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(COOKIE))
        resp = login_redirect()
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/")
    def overview(request: Request) -> Response:
        user = user_of(request)
        if user is None:
            return login_redirect()
        pol = policy()
        state = connected()
        conn = (
            "unknown"
            if state is None
            else ('<span class="ok">connected</span>' if state else '<span class="bad">down</span>')
        )
        charges = ledger.charges()
        rows = []
        for name, p in sorted(pol.projects.items()):
            spent = ledger.spent(name)
            series = [c.spent_after for c in charges if c.project == name]
            rows.append(
                [
                    _e(name),
                    f"{p.epsilon_budget:g}",
                    f"{spent:g}",
                    f"{ledger.remaining(name, p.epsilon_budget):g}",
                    f"{p.max_epsilon_per_query:g}",
                    _chart(series, p.epsilon_budget),
                    _budget_form(name, p.epsilon_budget) if policy_file is not None else "",
                ]
            )
        pending = len(store.approvals.requests("pending"))
        saved = request.query_params.get("saved", "")
        notice = f'<p class="ok" id="notice">{_e(saved)}</p>' if saved else ""
        body = (
            notice + f'<p>Gateway connection: <strong id="connection">{conn}</strong>. '
            f'Policy in force: <code id="policy-version">{_e(pol.version)}</code>. '
            f'<a href="/approvals">Pending approvals: <strong id="pending">{pending}</strong></a>'
            "</p>"
            + (
                f'<p>Training (Flower SuperNode): <strong id="training">{_e(flower)}</strong></p>'
                if (flower := training()) is not None
                else ""
            )
            + "<h2>Budgets (epsilon)</h2>"
            + _table(
                "budgets",
                ["project", "budget", "spent", "remaining", "max per query", "spent over time", ""],
                rows,
            )
        )
        return _page("Overview", body, user, site)

    @app.post("/budgets/{project}")
    async def save_budget(request: Request, project: str) -> Response:
        user = user_of(request)
        if user is None:
            return Response("log in first", status_code=401)
        if policy_file is None:
            return Response("this console cannot edit the policy", status_code=404)
        raw = (await _form(request)).get("budget", "")
        try:
            budget = float(raw)
            if not math.isfinite(budget) or budget < 0:
                raise ValueError
        except ValueError:
            return _problem(f"{raw!r} is not a budget (a number >= 0)", user, site)
        old = policy().projects[project].epsilon_budget if project in policy().projects else None
        try:
            saved = write_policy_version(
                policy_file,
                lambda text: set_budget(text, project, budget),
                site=site,
                store=store,
                user=user,
                via="console",
                project=project,
                change={"key": "epsilon_budget", "old": old, "new": budget},
                saved=policy_saved,
            )
        except PolicyEditError as err:
            return _problem(str(err), user, site)
        msg = f"saved {project} budget {budget:g}: policy version {saved.version}"
        return RedirectResponse("/?" + urlencode({"saved": msg}), status_code=303)

    @app.get("/policy")
    def policy_page(request: Request) -> Response:
        user = user_of(request)
        if user is None:
            return login_redirect()
        pol = policy()
        history = [e for e in store.log.entries(newest_first=True) if e.kind in _POLICY_KINDS]
        current_text = next(
            (
                str(e.data.get("text", ""))
                for e in history
                if e.kind != "policy_refused" and e.data.get("version") == pol.version
            ),
            "",
        )
        rows = [
            [
                _e(e.at.strftime("%Y-%m-%d %H:%M:%S")),
                _e(e.kind),
                _e(e.data.get("version", e.data.get("version_in_force", ""))),
                _e("; ".join(map(str, e.data.get("changes", e.data.get("problems", []))))),
            ]
            for e in history
        ]
        body = (
            f"<p>Version <code>{_e(pol.version)}</code> is in force.</p>"
            f'<pre id="policy-text">{_e(current_text or pol.model_dump_json(indent=2))}</pre>'
            "<h2>History</h2>"
            + _table("policy-history", ["at (UTC)", "event", "version", "changes / problems"], rows)
        )
        return _page("Policy", body, user, site)

    @app.get("/audit")
    def audit_page(request: Request, q: str = "", kind: str = "", limit: int = 200) -> Response:
        user = user_of(request)
        if user is None:
            return login_redirect()
        entries = store.log.entries(
            search=q or None, kind=kind or None, newest_first=True, limit=max(1, min(limit, 2000))
        )
        rows = [
            [
                str(e.id),
                _e(e.at.strftime("%Y-%m-%d %H:%M:%S")),
                _e(e.kind),
                _e(e.query_id),
                _e(e.project),
                f"<code>{_e(e.detail[:400])}</code>",
            ]
            for e in entries
        ]
        body = (
            '<form method="get" action="/audit">'
            f'<label>Search <input name="q" value="{_e(q)}"></label> '
            f'<label>Kind <input name="kind" value="{_e(kind)}"></label> '
            '<button type="submit">Filter</button></form>'
            f"<p>{len(entries)} entries, newest first.</p>"
            + _table("audit", ["id", "at (UTC)", "kind", "query", "project", "detail"], rows)
        )
        return _page("Audit trail", body, user, site)

    @app.get("/approvals")
    def approvals_page(request: Request) -> Response:
        user = user_of(request)
        if user is None:
            return login_redirect()
        reqs = store.approvals.requests()
        rows = []
        for r in reqs:
            if r.status == "pending":
                action = (
                    f'<form method="post" action="/approvals/{_e(r.id)}/approve">'
                    f'<button type="submit" id="approve-{_e(r.id)}">Approve</button></form>'
                    f'<form method="post" action="/approvals/{_e(r.id)}/deny">'
                    f'<input name="reason" id="reason-{_e(r.id)}" placeholder="reason" required> '
                    f'<button type="submit" id="deny-{_e(r.id)}">Deny</button></form>'
                )
            else:
                action = _e(f"{r.status} by {r.decided_by}: {r.reason}".rstrip(": "))
            rows.append(
                [
                    _e(r.id),
                    _e(r.status),
                    _e(r.kind),
                    _e(r.project),
                    _e(r.researcher),
                    _e("" if r.epsilon is None else f"{r.epsilon:g}"),
                    _e(r.why),
                    action,
                ]
            )
        body = _table(
            "approvals",
            ["id", "status", "kind", "project", "researcher", "epsilon", "why", "decision"],
            rows,
        )
        return _page("Approvals", body, user, site)

    @app.post("/approvals/{request_id}/{verdict}")
    async def decide(request: Request, request_id: str, verdict: str) -> Response:
        user = user_of(request)
        if user is None:
            return Response("log in first", status_code=401)
        if verdict not in {"approve", "deny"}:
            return Response("unknown decision", status_code=404)
        form = await _form(request)
        try:
            pending = store.approvals.get(request_id)
            if verdict == "approve" and pending.kind == "project":
                # a project approval changes what may leave: a new policy version first
                if policy_file is None:
                    return Response(
                        "this console cannot edit the policy: approve projects with "
                        "`varde node approve --policy FILE`",
                        status_code=409,
                    )
                record_project_approval(
                    policy_file,
                    project=pending.project,
                    request_id=request_id,
                    site=site,
                    store=store,
                    user=user,
                    via="console",
                    saved=policy_saved,
                )
            store.approvals.decide(
                request_id,
                approve=verdict == "approve",
                by=f"{user} (console)",
                reason=form.get("reason", ""),
            )
        except NotFound as err:
            return Response(err.message, status_code=404)
        except PolicyEditError as err:
            return _problem(str(err), user, site)
        except ValueError as err:
            return Response(str(err), status_code=422)
        return RedirectResponse("/approvals", status_code=303)

    return app


class ConsoleServer:
    """Runs a console app with uvicorn on a thread of the node process."""

    def __init__(self, app: FastAPI, *, port: int, host: str = "127.0.0.1") -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="varde-console", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 10.0) -> ConsoleServer:
        """Start serving; returns once the socket listens."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the site console did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
