"""A test client for the site console that behaves like a browser on the console's own pages.

A browser sends ``Origin`` with a form post and the form carries the session's
CSRF token; the console refuses anything else. ``act`` posts a form that way.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class StaffClient(httpx.Client):
    """An httpx client logged in to a console, posting forms with Origin and CSRF token."""

    def __init__(self, url: str) -> None:
        super().__init__(base_url=url, follow_redirects=True, headers={"Origin": url})
        self.csrf = ""

    def login(self, user: str, password: str) -> httpx.Response:
        """Log in; the session's CSRF token is read from the page the login lands on."""
        resp = self.post("/login", data={"username": user, "password": password})
        found = _CSRF.search(resp.text)
        self.csrf = found.group(1) if found else ""
        return resp

    def act(self, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
        """Post a console form (with the session's CSRF token)."""
        return self.post(path, data={**(data or {}), "csrf": self.csrf})
