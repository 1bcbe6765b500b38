"""The site console in a real headless Chromium (Debian's, driven by Playwright).

Playwright's own browser download cannot work on these machines, so the test
launches ``/usr/bin/chromium`` and skips, saying why, where it or Playwright is
missing.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.network import free_port
from nodes.console import ConsoleServer, add_user, create_console, users_path
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.policy import ApprovalRules

from ..conftest import make_work

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("browser")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True
    )

PASSWORD = "correct horse battery"
COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


@pytest.fixture
def console(node_ctx: NodeContext, tmp_path: Path) -> Iterator[str]:
    add_user(users_path(tmp_path), "kari", PASSWORD)
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        connected=lambda: True,
    )
    server = ConsoleServer(app, port=free_port()).start()
    yield server.url
    server.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_staff_log_in_read_a_budget_approve_and_see_the_audit_entry(
    console: str, page: Any, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="paid-1")).status == "ok"
    node_ctx.set_policy(
        node_ctx.policy.model_copy(update={"approvals": ApprovalRules(epsilon_above=0.4)})
    )
    big = {**COUNT, "cohort": {"op": "eq", "field": "sex", "value": "female"}}
    waiting = handle(node_ctx, make_work(gateway_key, big, query_id="big-1"))
    assert waiting.status == "awaiting_approval"
    (req,) = node_ctx.store.approvals.requests("pending")

    # log in (a wrong password first)
    page.goto(console + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", "kari")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong user name or password" in page.inner_text("#login-error")
    page.fill("input[name=username]", "kari")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    # read a budget
    row = page.locator("#budgets tr", has_text="nsclc-feasibility")
    cells = row.locator("td").all_inner_texts()
    assert cells[:6] == ["nsclc-feasibility", "epsilon", "lifetime", "10", "0.5", "9.5"]
    assert page.inner_text("#pending") == "1"
    assert page.inner_text("#connection") == "connected"

    # approve the pending query
    page.click("text=Approvals")
    page.click(f"#approve-{req.id}")
    status = page.locator("#approvals tr", has_text=req.id).locator("td").nth(1).inner_text()
    assert status == "approved"

    # the decision is in the audit trail, and the re-submitted query is answered
    page.click("text=Audit trail")
    page.fill("input[name=q]", req.id)
    page.click("text=Filter")
    kinds = page.locator("#audit tbody tr td:nth-child(3)").all_inner_texts()
    assert kinds == ["approval_granted", "approval_requested"]
    again = handle(node_ctx, make_work(gateway_key, big, query_id="big-2"))
    assert again.status == "ok" and again.charged is not None
    assert again.charged.epsilon == pytest.approx(0.5)
    page.goto(console + "/")
    cells = page.locator("#budgets tr", has_text="nsclc-feasibility").locator("td")
    assert cells.all_inner_texts()[4] == "1"  # spent


def test_approving_a_project_in_the_browser_writes_a_new_policy_version(
    page: Any, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from launcher.network import DEFAULT_POLICIES
    from nodes.reload import PolicyReloader

    path = tmp_path / "oslo.yaml"
    path.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    reloader = PolicyReloader(node_ctx, path)
    with path.open("a") as f:
        f.write("approvals:\n  new_projects: true   # Oslo looks at every new project\n")
    assert reloader.check_once() == "reloaded"
    before = node_ctx.policy.version
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="new-1")).status == (
        "awaiting_approval"
    )
    (req,) = node_ctx.store.approvals.requests("pending")
    add_user(users_path(tmp_path), "kari", PASSWORD)
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        policy_file=path,
        policy_saved=reloader.check_once,
    )
    server = ConsoleServer(app, port=free_port()).start()
    try:
        page.goto(server.url + "/login")
        page.fill("input[name=username]", "kari")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.click("text=Approvals")
        page.click(f"#approve-{req.id}")
        row = page.locator("#approvals tr", has_text=req.id).locator("td")
        assert row.nth(1).inner_text() == "approved"
        # the policy page shows the new version in force, which lists the project
        page.click("text=Policy")
        after = node_ctx.policy.version
        assert after != before and f"Version {after} is in force" in page.inner_text("body")
        assert "approved_projects: [nsclc-feasibility]" in page.inner_text("body")
    finally:
        server.stop()
    assert "# Oslo looks at every new project" in path.read_text()
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="new-2")).status == "ok"


def _attacker(html_page: str) -> tuple[ThreadingHTTPServer, str]:
    """Another web server on this machine (another port: the same *site* for cookies)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = html_page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_cross_origin_form_post_is_refused_and_nothing_changes(
    page: Any, node_ctx: NodeContext, tmp_path: Path
) -> None:
    """A page on another port posts a budget change with the staff member's cookie."""
    from launcher.network import DEFAULT_POLICIES
    from nodes.reload import PolicyReloader

    path = tmp_path / "oslo.yaml"
    path.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    reloader = PolicyReloader(node_ctx, path)
    add_user(users_path(tmp_path), "kari", PASSWORD)
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        policy_file=path,
        policy_saved=reloader.check_once,
    )
    server = ConsoleServer(app, port=free_port()).start()
    before, version = path.read_text(), node_ctx.policy.version
    attack = (
        "<!doctype html><html><body>"
        f'<form id="f" method="post" action="{server.url}/budgets/nsclc-feasibility">'
        '<input name="budget" value="1000000"><input name="confirm" value="yes"></form>'
        "<script>document.getElementById('f').submit()</script></body></html>"
    )
    evil, evil_url = _attacker(attack)
    try:
        page.goto(server.url + "/login")
        page.fill("input[name=username]", "kari")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        assert page.locator("#budgets").count() == 1  # logged in
        page.goto(evil_url)
        page.wait_for_url(f"{server.url}/budgets/nsclc-feasibility", timeout=10_000)
        assert "nothing was changed" in page.inner_text("body")
        assert path.read_text() == before and node_ctx.policy.version == version
        assert node_ctx.policy.projects["nsclc-feasibility"].epsilon_budget == 10.0
        (refused,) = node_ctx.store.events("console_csrf_refused")
        assert refused.data["origin"] == evil_url
        # the console's own form still works, with a confirmation step
        page.goto(server.url + "/")
        page.fill("#budget-nsclc-feasibility", "12")
        page.click("#set-budget-nsclc-feasibility")
        assert "from 10 to 12" in page.inner_text("#confirm-text")
        page.click("#confirm-budget-nsclc-feasibility")
        assert "saved nsclc-feasibility budget 12" in page.inner_text("#notice")
        assert node_ctx.policy.projects["nsclc-feasibility"].epsilon_budget == 12.0
    finally:
        evil.shutdown()
        server.stop()
