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
    assert cells[:7] == [
        "nsclc-feasibility",
        "epsilon",
        "lifetime",
        "never renews (lifetime)",
        "10",
        "0.5",
        "9.5",
    ]
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
    assert cells.all_inner_texts()[5] == "1"  # spent


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


# --- the question staff approve, and who spent what (issue 15) -------------------------------


def _log_in(page: Any, url: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", "kari")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_the_approval_page_shows_the_cohort_and_records_the_reason(
    console: str, page: Any, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    node_ctx.set_policy(
        node_ctx.policy.model_copy(update={"approvals": ApprovalRules(epsilon_above=0.4)})
    )
    trial = {
        **COUNT,
        "cohort": {
            "op": "and",
            "args": [
                {"op": "startswith", "field": "topography", "prefix": "C34"},
                {"op": "eq", "field": "stage", "value": "IV"},
                {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            ],
        },
        "statistic": {"kind": "histogram", "field": "egfr"},
        "group_by": ["sex"],
    }
    work = make_work(gateway_key, trial, query_id="trial-1", researcher="bob")
    assert handle(node_ctx, work).status == "awaiting_approval"
    (req,) = node_ctx.store.approvals.requests("pending")
    _log_in(page, console)
    page.click("text=Approvals")
    card = page.locator(f"#request-{req.id}")
    assert card.locator(".summary").inner_text() == (
        "histogram of egfr (all 3 categories) where topography starts with C34 and stage = IV "
        "and age_at_diagnosis 18–75, by sex; epsilon 0.5 (dp)"
    )

    def fact(label: str) -> str:
        return str(card.locator(f'dd[data-fact="{label}"]').inner_text())

    assert fact("cohort") == "topography starts with C34 and stage = IV and age_at_diagnosis 18–75"
    assert fact("statistic") == "histogram of egfr (all 3 categories)"
    assert fact("grouped by") == "sex"
    assert fact("cost here").startswith("epsilon 0.5 per site (opendp.")
    assert "95% error ±" in fact("cost here")
    assert (fact("researcher"), fact("project")) == ("bob", "nsclc-feasibility")
    assert fact("decision") == "waiting for a decision"
    page.fill(f"#why-{req.id}", "feasibility study agreed with the DPO")
    page.click(f"#approve-{req.id}")
    decided = page.locator(f"#request-{req.id}")
    assert decided.locator(".status").inner_text() == "approved"
    text = decided.locator('dd[data-fact="decision"]').inner_text()
    assert text.startswith("approved by kari (console) at ")
    assert text.endswith("UTC: feasibility study agreed with the DPO")
    (granted,) = node_ctx.store.events("approval_granted")
    assert granted.data["reason"] == "feasibility study agreed with the DPO"


def test_the_spend_view_and_a_readable_audit_page(
    console: str, page: Any, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    for who, n in (("alice", 3), ("bob", 2)):
        for i in range(n):
            query = {
                **COUNT,
                "cohort": {"op": ">=", "field": "age_at_diagnosis", "value": 10 * i + len(who)},
            }
            work = make_work(gateway_key, query, query_id=f"{who}-{i}", researcher=who)
            assert handle(node_ctx, work).status == "ok"
    long_funnel = {
        **COUNT,
        "statistic": {
            "kind": "funnel",
            "steps": [
                {
                    "label": f"step {i} with a long label",
                    "criterion": {"op": ">=", "field": "age_at_diagnosis", "value": i},
                }
                for i in range(12)
            ],
        },
        "privacy": {"mode": "dp", "epsilon": 1.0},
    }
    work = make_work(gateway_key, long_funnel, query_id="long-1", researcher="bob")
    assert handle(node_ctx, work).status == "ok"
    _log_in(page, console)
    page.click("text=Spend")
    rows = {
        tuple(r.locator("td").all_inner_texts()[:5]) for r in page.locator("#spend tbody tr").all()
    }
    assert ("alice", "epsilon", "1.5", "3", "3") in rows
    assert ("bob", "epsilon", "2", "3", "3") in rows
    assert ("TOTAL", "epsilon", "3.5", "6", "6") in rows
    chart = page.locator("#spend-chart-epsilon")
    assert chart.is_visible()
    legend = chart.locator("g.legend text").all_text_contents()  # SVG: no innerText
    assert legend == ["alice (1.5)", "bob (2)"]
    assert len(chart.locator("text.x-tick").all_text_contents()) == 5  # dated time axis
    assert chart.locator("text.y-tick").all_text_contents()[0] == "0"
    page.select_option("#spend-by", "project")
    page.click("text=Show")
    assert page.locator("#spend tbody tr").first.locator("td").all_inner_texts()[:3] == [
        "nsclc-feasibility",
        "epsilon",
        "3.5",
    ]
    # the audit page: kinds to choose from, a summary per row, no page wider than the window
    page.set_viewport_size({"width": 1280, "height": 900})
    page.click("text=Audit trail")
    page.select_option("#filter-kind", "released")
    page.click("text=Filter")
    summaries = page.locator("#audit tbody tr td:nth-child(5)").all_inner_texts()
    assert len(summaries) == 6 and summaries[0].startswith("bob: released 12 cell(s)")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.locator("#audit tbody tr").first.locator("summary").click()
    detail = page.locator("#audit tbody tr").first.locator("pre").inner_text()
    assert '"researcher": "bob"' in detail and '"policy_version"' in detail
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
