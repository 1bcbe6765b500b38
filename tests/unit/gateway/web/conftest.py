"""An in-process gateway app with one researcher, and a cookie-keeping client for it."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.admin import add_project, add_researcher
from gateway.app import create_app
from gateway.core.config import Settings


class Browser:
    """Calls into the ASGI app, keeping cookies as a browser does (not per call: deprecated)."""

    def __init__(self, app: FastAPI, base_url: str = "http://test") -> None:
        self.app, self.base_url = app, base_url
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as c:
                return await c.request(method, url, headers=headers, **kwargs)

        response = asyncio.run(go())
        for raw in response.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in raw.lower() or value == "":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def login_form(self) -> str:
        """The CSRF value of a fresh login form (also set as its cookie)."""
        page = self.get("/feasibility/login")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def log_in(self, token: str) -> httpx.Response:
        csrf = self.login_form()
        return self.post("/feasibility/login", data={"csrf": csrf, "token": token})

    def page_csrf(self) -> str:
        """The CSRF token the page carries for its scripts."""
        page = self.get("/feasibility")
        found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)


@dataclass
class Gateway:
    app: FastAPI
    token: str
    extra: dict[str, Any] = field(default_factory=dict)

    def browser(self, base_url: str = "http://test") -> Browser:
        return Browser(self.app, base_url)


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    app = create_app(Settings(state_dir=tmp_path / "gateway"))
    sessions = app.state.varde.sessions
    add_project(sessions, "nsclc-feasibility")
    token = add_researcher(sessions, "alice", ["nsclc-feasibility"])
    return Gateway(app, token)
