"""The page's login, session cookie, CSRF checks, headers and static files."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from gateway.core.db import Researcher
from gateway.web.pages import HEADERS, STATIC
from gateway.web.sessions import SessionSealer
from varde.query import Query

from .conftest import Browser, Gateway

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def set_cookie(response: Any, name: str) -> str:
    (found,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    return str(found)


def test_the_page_sends_a_stranger_to_the_login_form(gateway: Gateway) -> None:
    response = gateway.browser().get("/feasibility")
    assert response.status_code == 303
    assert response.headers["location"] == "/feasibility/login"


def test_login_form_has_a_double_submit_csrf_value_and_strict_headers(gateway: Gateway) -> None:
    browser = gateway.browser()
    response = browser.get("/feasibility/login")
    assert response.status_code == 200
    assert 'type="password"' in response.text and 'method="post"' in response.text
    cookie = set_cookie(response, "varde_login_csrf")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/feasibility" in cookie
    assert f'value="{browser.cookies["varde_login_csrf"]}"' in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    assert response.headers["x-frame-options"] == "DENY"


def test_logging_in_opens_a_session_cookie_and_never_puts_the_token_in_a_url(
    gateway: Gateway,
) -> None:
    browser = gateway.browser()
    response = browser.log_in(gateway.token)
    assert response.status_code == 303
    assert response.headers["location"] == "/feasibility"
    cookie = set_cookie(response, "varde_session")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/feasibility" in cookie
    assert "Secure" not in cookie  # plain http (loopback): a Secure cookie would not come back
    assert gateway.token not in cookie
    page = browser.get("/feasibility")
    assert page.status_code == 200
    assert gateway.token not in page.text
    assert 'name="researcher" content="alice"' in page.text
    assert page.headers["content-security-policy"] == HEADERS["Content-Security-Policy"]


def test_over_https_the_session_cookie_is_secure(gateway: Gateway) -> None:
    response = gateway.browser("https://test").log_in(gateway.token)
    assert "Secure" in set_cookie(response, "varde_session")


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"token": "vr_nobody"}, 400, "stale"),  # no CSRF value
        ({"csrf": "not-the-cookie", "token": "vr_nobody"}, 400, "stale"),
        ({"token": "vr_nobody", "csrf": None}, 401, "Unknown or revoked token"),
        ({"token": "   ", "csrf": None}, 401, "Paste your researcher token"),
    ],
)
def test_a_bad_login_opens_nothing_and_says_why(
    gateway: Gateway, form: dict[str, Any], status: int, message: str
) -> None:
    browser = gateway.browser()
    csrf = browser.login_form()
    data = {k: (csrf if v is None else v) for k, v in form.items()}
    response = browser.post("/feasibility/login", data=data)
    assert response.status_code == status
    assert message in response.text
    assert "varde_session" not in browser.cookies


def test_the_page_api_needs_the_session_and_the_json_api_ignores_it(gateway: Gateway) -> None:
    browser = gateway.browser()
    assert browser.get("/feasibility/api/catalog").status_code == 401
    browser.log_in(gateway.token)
    catalog = browser.get("/feasibility/api/catalog")
    assert catalog.status_code == 200
    body = catalog.json()
    assert body["researcher"] == "alice" and body["projects"] == ["nsclc-feasibility"]
    names = {f["name"] for f in body["fields"]}
    assert {"topography", "stage", "egfr", "age_at_diagnosis"} <= names
    assert {"code": "C34", "name": "Bronchus and lung"} in body["topography"]
    assert body["units"] == (["tumours", "patients"] if "unit" in Query.model_fields else [])
    # the cookie alone never authenticates the JSON API (bearer only there)
    assert browser.get("/v1/schema").status_code == 401
    # and a bearer token alone does not drive the page's API
    bearer = {"Authorization": f"Bearer {gateway.token}"}
    assert gateway.browser().get("/feasibility/api/catalog", headers=bearer).status_code == 401


@pytest.mark.parametrize("path", ["/feasibility/api/preview", "/feasibility/api/queries"])
def test_state_changing_calls_need_the_csrf_header(gateway: Gateway, path: str) -> None:
    browser = gateway.browser()
    browser.log_in(gateway.token)
    csrf = browser.page_csrf()
    missing = browser.post(path, json=COUNT)
    assert missing.status_code == 401 and "security token" in missing.json()["detail"]
    wrong = browser.post(path, json=COUNT, headers={"X-CSRF-Token": csrf[:-1] + "x"})
    assert wrong.status_code == 401
    # with it, the request reaches the query route: no site is enrolled here, so 503
    right = browser.post(path, json=COUNT, headers={"X-CSRF-Token": csrf})
    assert right.status_code == 503, right.text


def test_a_bad_question_gets_the_api_s_422(gateway: Gateway) -> None:
    browser = gateway.browser()
    browser.log_in(gateway.token)
    bad = {
        **COUNT,
        "cohort": {"op": "between", "field": "age_at_diagnosis", "low": 80, "high": 18},
    }
    response = browser.post(
        "/feasibility/api/preview", json=bad, headers={"X-CSRF-Token": browser.page_csrf()}
    )
    assert response.status_code == 422
    assert "low 80 > high 18" in response.json()["detail"]


def test_an_expired_session_is_refused_with_a_clear_message(gateway: Gateway) -> None:
    now = [1_700_000_000.0]
    secret = b"k" * 32
    gateway.app.state.feasibility_sealer = SessionSealer(secret, ttl=60, clock=lambda: now[0])
    browser = gateway.browser()
    browser.log_in(gateway.token)
    assert browser.get("/feasibility/api/catalog").status_code == 200
    now[0] += 61
    response = browser.get("/feasibility/api/catalog")
    assert response.status_code == 401
    assert "session has expired or is not valid" in response.json()["detail"]
    assert browser.get("/feasibility").status_code == 303


def test_each_request_of_the_page_keeps_its_session_alive(gateway: Gateway) -> None:
    now = [1_700_000_000.0]
    sealer = SessionSealer(b"k" * 32, ttl=3600, idle=60, clock=lambda: now[0])
    gateway.app.state.feasibility_sealer = sealer
    browser = gateway.browser()
    browser.log_in(gateway.token)
    csrf = browser.page_csrf()
    for path in ["/feasibility/api/catalog", "/feasibility/api/budgets", "/feasibility"]:
        now[0] += 50  # each call within the idle time of the one before
        response = browser.get(path)
        assert response.status_code == 200, path
        assert "varde_session=" in ";".join(response.headers.get_list("set-cookie"))
    now[0] += 50
    preview = browser.post("/feasibility/api/preview", json=COUNT, headers={"X-CSRF-Token": csrf})
    assert preview.status_code == 503  # no site here, but the session was good
    now[0] += 61
    assert browser.get("/feasibility/api/catalog").status_code == 401


def test_revoking_the_token_ends_its_sessions(gateway: Gateway) -> None:
    browser = gateway.browser()
    browser.log_in(gateway.token)
    with gateway.app.state.varde.sessions() as s:
        s.execute(update(Researcher).where(Researcher.name == "alice").values(active=False))
        s.commit()
    response = browser.get("/feasibility/api/catalog")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert browser.get("/feasibility").status_code == 303


def test_logout_needs_the_csrf_header_and_deletes_the_cookie(gateway: Gateway) -> None:
    browser = gateway.browser()
    browser.log_in(gateway.token)
    csrf = browser.page_csrf()
    assert browser.post("/feasibility/logout").status_code == 401
    assert "varde_session" in browser.cookies
    response = browser.post("/feasibility/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    assert "varde_session" not in browser.cookies
    assert browser.get("/feasibility").status_code == 303


def test_only_the_listed_static_files_are_served(gateway: Gateway) -> None:
    browser: Browser = gateway.browser()
    for name, media in STATIC.items():
        response = browser.get(f"/feasibility/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media
        assert response.headers["content-security-policy"] == HEADERS["Content-Security-Policy"]
    for name in ["app.html", "README.md", "..%2Fpages.py", "missing.js"]:
        assert browser.get(f"/feasibility/static/{name}").status_code == 404, name


@pytest.mark.parametrize("name", ["post_preview", "post_query"])
def test_page_routes_run_what_the_api_routes_run_before_the_body(name: str) -> None:
    from fastapi.routing import APIRoute

    from gateway.api.routes import queries
    from gateway.web import routes

    def deps(router: Any) -> list[Any]:
        (route,) = [r for r in router.routes if isinstance(r, APIRoute) and r.name == name]
        return [d.dependency for d in route.dependencies]

    assert deps(routes.router) == deps(queries.router)


def test_an_oversized_or_malformed_login_form_is_refused(gateway: Gateway) -> None:
    browser = gateway.browser()
    csrf = browser.login_form()
    huge = browser.post("/feasibility/login", data={"csrf": csrf, "token": "x" * 5000})
    assert huge.status_code == 400 and "not understood" in huge.text
    many = browser.post("/feasibility/login", content=b"&".join([b"a=1"] * 10))
    assert many.status_code == 400 and "not understood" in many.text
    assert "varde_session" not in browser.cookies


def test_the_page_api_is_not_cached(gateway: Gateway) -> None:
    browser = gateway.browser()
    browser.log_in(gateway.token)
    for path in ["/feasibility/api/catalog", "/feasibility/api/budgets"]:
        response = browser.get(path)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
    assert browser.get("/feasibility/api/budgets").json() == {"projects": {"nsclc-feasibility": {}}}
