"""The page's static files: all shipped, nothing loaded from elsewhere, every value escaped."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gateway.web import pages
from gateway.web.pages import STATIC, app_page, login_page

ROOT = Path(__file__).resolve().parents[4]
STATIC_DIR = ROOT / "gateway" / "web" / "static"
OUTSIDE = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|"""
    r"""import[^;]*from\s*["'](?:https?:)?//|fetch\(\s*["'`](?:https?:)?//|@import"""
)


def test_every_listed_file_exists_and_every_file_is_listed() -> None:
    on_disk = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
    assert set(STATIC) | {"app.html", "README.md"} == on_disk


def test_the_wheel_ships_the_static_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gateway.web"]
    for name in [*STATIC, "app.html"]:
        assert any(Path("static", name).match(p) for p in patterns), name


def test_nothing_loads_from_another_host() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not OUTSIDE.search(text), (path.name, OUTSIDE.search(text))
    assert "<script>" not in (STATIC_DIR / "app.html").read_text()  # no inline script (CSP)


def test_the_scripts_never_write_html_from_data() -> None:
    for name in STATIC:
        if name.endswith(".js"):
            assert "innerHTML" not in (STATIC_DIR / name).read_text(), name


def test_names_and_tokens_are_escaped_into_the_pages() -> None:
    page = app_page('<b onload="x">', 'a"b').body.decode()
    assert '<b onload="x">' not in page and "&lt;b onload=&quot;x&quot;&gt;" in page
    assert 'content="a&quot;b"' in page
    login = login_page("c", error="<script>alert(1)</script>").body.decode()
    assert "<script>alert" not in login and "&lt;script&gt;" in login


def test_the_csp_allows_only_this_origin() -> None:
    csp = pages.HEADERS["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
