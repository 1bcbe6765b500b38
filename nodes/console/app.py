"""The site console: a small web app for the hospital's registry staff, served by the node.

Why server-rendered HTML with no JavaScript: the console runs inside the
hospital, often in locked-down browsers, and shows a handful of tables. Plain
forms keep it auditable and testable in a real browser.

Trust: it listens on 127.0.0.1 by default, has its own staff login
(:mod:`nodes.console.auth`) and is never reachable through the gateway (the
node opens no port towards it). Session cookies are ``HttpOnly`` and
``SameSite=Strict`` (so another site cannot post a decision on a staff
member's behalf); every login and decision is in the audit trail.

This module only puts the console together: :func:`create_console` builds the
app around a :class:`~nodes.console.deps.ConsoleContext` and includes the page
routers (:mod:`nodes.console.routes`); :class:`ConsoleServer` runs it on a
thread of the node process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from nodes.console.deps import ConsoleContext, NotLoggedIn, not_logged_in
from nodes.console.routes import approvals, audit, login, overview, spend
from nodes.console.routes import policy as policy_page  # `policy` is the factory's argument
from nodes.ledger import Ledger
from nodes.policy import Policy
from nodes.store import NodeStore

__all__ = ["ConsoleServer", "create_console"]


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
    app.state.console = ConsoleContext(
        site=site,
        store=store,
        ledger=ledger,
        policy=policy,
        users=users,
        connected=connected,
        training=training,
        policy_file=policy_file,
        policy_saved=policy_saved,
    )
    app.add_exception_handler(NotLoggedIn, not_logged_in)
    for module in (login, overview, policy_page, audit, spend, approvals):
        app.include_router(module.router)
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
