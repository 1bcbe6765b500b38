"""The site console over real HTTP (uvicorn on 127.0.0.1): login, budgets, approvals, audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.network import DEFAULT_POLICIES, free_port
from nodes.console import ConsoleServer, add_user, create_console, users_path
from nodes.console.auth import Sessions, check_password
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.reload import PolicyReloader
from tests.conftest import make_work
from tests.console_client import StaffClient

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}
PASSWORD = "correct horse battery"


@pytest.fixture
def console(node_ctx: NodeContext, tmp_path: Path) -> Iterator[str]:
    add_user(users_path(tmp_path), "kari", PASSWORD)
    (tmp_path / "oslo.yaml").write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        connected=lambda: True,
        policy_file=tmp_path / "oslo.yaml",
        policy_saved=PolicyReloader(node_ctx, tmp_path / "oslo.yaml").check_once,
    )
    server = ConsoleServer(app, port=free_port()).start()
    yield server.url
    server.stop()


@contextmanager
def _login(url: str) -> Iterator[StaffClient]:
    with StaffClient(url) as client:
        resp = client.login("kari", PASSWORD)
        assert resp.status_code == 200 and 'id="budgets"' in resp.text
        assert client.csrf
        yield client


def test_pages_need_a_login(console: str, node_ctx: NodeContext) -> None:
    for path in ("/", "/policy", "/audit", "/approvals"):
        resp = httpx.get(console + path)
        assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert httpx.post(console + "/approvals/ap-1/approve").status_code == 401
    resp = httpx.post(
        console + "/login",
        data={"username": "kari", "password": "wrong password!"},
        headers={"Origin": console},
    )
    assert resp.status_code == 303 and "error=" in resp.headers["location"]
    logins = node_ctx.store.events("console_login")
    assert [e.data for e in logins] == [{"user": "kari", "ok": False}]


def test_session_cookie_is_httponly_and_strict(console: str) -> None:
    resp = httpx.post(
        console + "/login",
        data={"username": "kari", "password": PASSWORD},
        headers={"Origin": console},
    )
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert resp.headers["location"] == "/"


def test_budgets_show_spent_and_remaining(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    assert handle(node_ctx, make_work(gateway_key, COUNT)).status == "ok"
    with _login(console) as client:
        page = client.get("/").text
    row = (
        "<td>nsclc-feasibility</td><td>epsilon</td><td>lifetime</td>"
        "<td>never renews (lifetime)</td><td>10</td><td>0.5</td><td>9.5</td>"
    )
    assert row in page
    assert 'id="chart-nsclc-feasibility"' in page and "budget (10)" in page  # the legend
    assert 'id="connection"><span class="ok">connected' in page
    assert node_ctx.policy.version in page


def test_approve_and_deny_from_the_console(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "oslo.yaml"
    reloader = PolicyReloader(node_ctx, path)
    with path.open("a") as f:
        f.write("approvals:\n  new_projects: true\n  epsilon_above: 0.4\n")
    assert reloader.check_once() == "reloaded"
    version = node_ctx.policy.version
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="w1")).status == (
        "awaiting_approval"
    )
    # both requests are opened at once: the new project and this query's epsilon
    req, second = node_ctx.store.approvals.requests("pending")
    assert (req.kind, second.kind) == ("project", "query")
    with _login(console) as client:
        page = client.get("/approvals").text
        assert f'id="approve-{req.id}"' in page and f'id="deny-{second.id}"' in page
        assert client.act(f"/approvals/{req.id}/deny", data={}).status_code == 422
        assert client.act("/approvals/ap-nope/approve").status_code == 404
        resp = client.act(f"/approvals/{req.id}/approve")
        assert resp.status_code == 200 and "approved by kari (console)" in resp.text
        # approving the project wrote a new policy version, now in force
        assert "  approved_projects: [nsclc-feasibility]\n" in path.read_text()
        assert node_ctx.policy.approvals.approved_projects == ["nsclc-feasibility"]
        assert node_ctx.policy.version != version
        (edit,) = node_ctx.store.events("console_policy_edit")
        assert (edit.project, edit.data["user"], edit.data["request"]) == (
            "nsclc-feasibility",
            "kari",
            req.id,
        )
        assert edit.data["version"] == node_ctx.policy.version
        assert (
            f"Version <code>{node_ctx.policy.version}</code> is in force"
            in client.get("/policy").text
        )
        rel = handle(node_ctx, make_work(gateway_key, COUNT, query_id="w2"))
        assert rel.status == "awaiting_approval" and second.id in rel.message
        assert req.id not in rel.message
        resp = client.act(f"/approvals/{second.id}/deny", data={"reason": "<b>too much</b>"})
        assert "&lt;b&gt;too much&lt;/b&gt;" in resp.text  # escaped, never markup
        audit = client.get("/audit", params={"kind": "approval_denied"}).text
        assert second.id in audit and "1 entries" in audit
        search = client.get("/audit", params={"q": "w1"}).text
        assert "approval_requested" in search and "approval_granted" in search
    assert node_ctx.store.events("approval_granted")[0].data["by"] == "kari (console)"


def test_policy_page_shows_the_version_in_force(console: str, node_ctx: NodeContext) -> None:
    with _login(console) as client:
        page = client.get("/policy").text
    assert f"Version <code>{node_ctx.policy.version}</code> is in force" in page
    assert 'id="policy-history"' in page


def test_passwords_are_scrypt_hashes(tmp_path: Path) -> None:
    path = users_path(tmp_path)
    add_user(path, "ola", "a long enough secret")
    text = path.read_text()
    assert "a long enough secret" not in text and "scrypt$16384$8$1$" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert check_password(path, "ola", "a long enough secret")
    assert not check_password(path, "ola", "a long enough secreT")
    assert not check_password(path, "nobody", "a long enough secret")
    with pytest.raises(ValueError, match="at least 10"):
        add_user(path, "ola", "short")


def test_budget_change_writes_a_validated_policy_version(
    console: str, node_ctx: NodeContext, tmp_path: Path
) -> None:
    path = tmp_path / "oslo.yaml"
    before = path.read_text()
    with _login(console) as client:
        asked = client.act("/budgets/nsclc-feasibility", data={"budget": "12.5"})
        assert asked.status_code == 200 and "Confirm the budget change" in asked.text
        assert "from 10 to 12.5" in asked.text and path.read_text() == before  # not yet
        resp = client.act("/budgets/nsclc-feasibility", data={"budget": "12.5", "confirm": "yes"})
        assert resp.status_code == 200
        assert "saved nsclc-feasibility budget 12.5" in resp.text
        assert (
            "<td>nsclc-feasibility</td><td>epsilon</td><td>lifetime</td>"
            "<td>never renews (lifetime)</td><td>12.5</td>" in resp.text
        )
        # one number changed; the staff's comments and layout are kept
        changed = [
            (a, b)
            for a, b in zip(before.splitlines(), path.read_text().splitlines(), strict=True)
            if a != b
        ]
        assert changed == [
            (
                "    epsilon_budget: 10.0       # lifetime epsilon this project may spend here",
                "    epsilon_budget: 12.5       # lifetime epsilon this project may spend here",
            )
        ]
        assert node_ctx.policy.projects["nsclc-feasibility"].epsilon_budget == 12.5
        # the same validation as `varde policy check`: below the per-query cap is refused
        text = path.read_text()
        bad = client.act("/budgets/nsclc-feasibility", data={"budget": "0.5", "confirm": "yes"})
        assert bad.status_code == 422
        assert "exceeds the whole epsilon_budget" in bad.text and "oslo.yaml:23:" in bad.text
        assert client.act("/budgets/nsclc-feasibility", data={"budget": "-1"}).status_code == 422
        assert client.act("/budgets/nope", data={"budget": "1"}).status_code == 422
        assert path.read_text() == text
    edit = node_ctx.store.events("console_policy_edit")[0].data
    assert (edit["user"], edit["old"], edit["new"]) == ("kari", 10.0, 12.5)
    (changed_entry,) = node_ctx.store.events("policy_changed")
    assert changed_entry.data["version"] == edit["version"] == node_ctx.policy.version


def test_overview_shows_the_training_supernode_state_when_configured(
    console: str, node_ctx: NodeContext, tmp_path: Path
) -> None:
    with _login(console) as client:
        assert 'id="training"' not in client.get("/").text  # no SuperNode: nothing to show
    state = {"now": "running (pid 42), connecting out to 127.0.0.1:9092"}
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        training=lambda: state["now"],
    )
    server = ConsoleServer(app, port=free_port()).start()
    try:
        with _login(server.url) as client:
            assert f'id="training">{state["now"]}<' in client.get("/").text
            state["now"] = "exited with code 1: no training at this site until the node restarts"
            assert "exited with code 1" in client.get("/").text
    finally:
        server.stop()


# --- cross-site requests, login guessing, bounded budget edits, sessions (issue 10) -----------


def _budget(node_ctx: NodeContext) -> float:
    return node_ctx.policy.projects["nsclc-feasibility"].epsilon_budget


@pytest.mark.parametrize(
    ("headers", "with_token"),
    [
        ({"Origin": "http://127.0.0.1:1"}, True),  # another port of the same machine
        ({"Origin": "http://evil.example"}, True),
        ({"Origin": "null"}, True),  # a sandboxed or file page
        ({}, True),  # neither Origin nor Referer
        ({"Referer": "http://evil.example/page"}, True),
        (None, False),  # the console's own origin, but no CSRF token
    ],
)
def test_cross_site_posts_change_nothing(
    console: str, node_ctx: NodeContext, headers: dict[str, str] | None, with_token: bool
) -> None:
    version = node_ctx.policy.version
    with _login(console) as client:
        form = {"budget": "1000000", "confirm": "yes"}
        if with_token:
            form["csrf"] = client.csrf
        sent = {"Origin": console} if headers is None else headers
        client.headers.pop("Origin", None)
        resp = client.post("/budgets/nsclc-feasibility", data=form, headers=sent)
    assert resp.status_code == 403 and "nothing was changed" in resp.text
    assert _budget(node_ctx) == 10.0 and node_ctx.policy.version == version
    assert node_ctx.store.events("console_policy_edit") == []
    assert node_ctx.store.events("console_csrf_refused")


def test_a_foreign_login_form_is_refused(console: str, node_ctx: NodeContext) -> None:
    resp = httpx.post(
        console + "/login",
        data={"username": "kari", "password": PASSWORD},
        headers={"Origin": "http://127.0.0.1:1"},
    )
    assert resp.status_code == 403 and "set-cookie" not in resp.headers
    assert node_ctx.store.events("console_login") == []


def test_guessing_passwords_locks_the_name_out_and_is_audited(
    console: str, node_ctx: NodeContext, tmp_path: Path
) -> None:
    with StaffClient(console) as client:
        for _ in range(20):
            client.post("/login", data={"username": "kari", "password": "not the password"})
        resp = client.login("kari", PASSWORD)  # the right one, during the lockout
        assert 'id="budgets"' not in resp.text and "too many wrong passwords" in resp.text
        assert client.get("/", follow_redirects=False).status_code == 303  # no session
    (lockout,) = node_ctx.store.events("console_lockout")
    assert lockout.data["user"] == "kari" and lockout.data["failures"] == 5
    attempts = node_ctx.store.events("console_login")
    assert len(attempts) == 21 and attempts[-1].data == {
        "user": "kari",
        "ok": False,
        "locked": True,
    }
    # another name is not locked by kari's failures
    add_user(users_path(tmp_path), "ola", PASSWORD)
    with StaffClient(console) as other:
        assert 'id="budgets"' in other.login("ola", PASSWORD).text


def test_budget_edits_are_bounded_by_the_policy(console: str, node_ctx: NodeContext) -> None:
    ceiling = node_ctx.policy.console.max_epsilon_budget
    with _login(console) as client:
        resp = client.act(
            "/budgets/nsclc-feasibility", data={"budget": str(ceiling + 1), "confirm": "yes"}
        )
        assert resp.status_code == 422 and "console.max_epsilon_budget" in resp.text
        asked = client.act("/budgets/nsclc-feasibility", data={"budget": "0"})
        assert "nothing left until the next period" not in asked.text  # nothing spent yet
    assert _budget(node_ctx) == 10.0


def test_sessions_end_when_idle_or_old() -> None:
    sessions = Sessions(ttl=60, idle=0.2)
    token = sessions.open("kari")
    assert sessions.user(token) == "kari"
    time.sleep(0.3)
    assert sessions.user(token) is None  # idle too long
    old = Sessions(ttl=0.2, idle=60)
    token = old.open("kari")
    for _ in range(3):
        time.sleep(0.1)
        old.user(token)  # in use, but past its lifetime at the end
    assert old.user(token) is None


def test_every_page_keeps_its_security_headers(console: str) -> None:
    with _login(console) as client:
        for path in ("/", "/policy", "/audit", "/approvals"):
            headers = client.get(path).headers
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "same-origin"
            assert "default-src 'none'" in headers["content-security-policy"]
            assert headers["cache-control"].startswith("no-store")


# --- a console that explains itself (issue 15) -------------------------------------------------


def _spend(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, n: int, who: str) -> None:
    for i in range(n):
        query = {**COUNT, "group_by": ["sex"], "privacy": {"mode": "dp", "epsilon": 0.75}}
        stage = {"op": "eq", "field": "stage", "value": ["I", "II", "III", "IV"][i % 4]}
        older = {"op": ">=", "field": "age_at_diagnosis", "value": len(who)}  # one per name
        query["cohort"] = {"op": "and", "args": [stage, older]}
        work = make_work(gateway_key, query, query_id=f"{who}-{i}", researcher=who)
        assert handle(node_ctx, work).status == "ok"


def test_a_budget_below_what_is_spent_needs_an_explicit_confirmation(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    _spend(node_ctx, gateway_key, 4, "alice")  # 3 epsilon spent of 10
    before = (tmp_path / "oslo.yaml").read_text()
    with _login(console) as client:
        asked = client.act("/budgets/nsclc-feasibility", data={"budget": "2"})
        assert asked.status_code == 200
        assert "below the 3 epsilon that nsclc-feasibility has already spent" in asked.text
        assert "nothing left for good (a lifetime budget never renews)" in asked.text
        assert 'name="below_spent"' in asked.text and "required" in asked.text
        # the confirmation alone is not enough: refused, saying what it would mean
        refused = client.act("/budgets/nsclc-feasibility", data={"budget": "2", "confirm": "yes"})
        assert (
            refused.status_code == 422
            and "not saved: a budget of 2 epsilon is below" in refused.text
        )
        assert "tick the box" in refused.text
        assert (tmp_path / "oslo.yaml").read_text() == before and _budget(node_ctx) == 10.0
        assert node_ctx.store.events("console_policy_edit") == []
        # above what is spent, the plain confirmation does it
        ok = client.act("/budgets/nsclc-feasibility", data={"budget": "5", "confirm": "yes"})
        assert "saved nsclc-feasibility budget 5" in ok.text and _budget(node_ctx) == 5.0
        # with the box ticked, staff may set it below what is spent
        done = client.act(
            "/budgets/nsclc-feasibility",
            data={"budget": "2", "confirm": "yes", "below_spent": "yes"},
        )
        assert "saved nsclc-feasibility budget 2" in done.text and _budget(node_ctx) == 2.0
        assert "spent is above the budget" in done.text
    edits = node_ctx.store.events("console_policy_edit")
    assert [e.data.get("below_spent", False) for e in edits] == [False, True]


def test_overview_shows_the_period_dates_of_a_renewing_budget(
    console: str, node_ctx: NodeContext
) -> None:
    from nodes.periods import period_dates
    from varde.envelope import utcnow

    project = node_ctx.policy.projects["breast-outcomes"]
    node_ctx.set_policy(
        node_ctx.policy.model_copy(
            update={
                "projects": {
                    **node_ctx.policy.projects,
                    "breast-outcomes": project.model_copy(update={"budget_period": "quarter"}),
                }
            }
        )
    )
    bounds = period_dates("quarter", utcnow())
    assert bounds is not None
    with _login(console) as client:
        page = client.get("/").text
    first, last = bounds
    assert f"<td>{first.isoformat()} to {last.isoformat()} (renews " in page
    assert 'id="chart-breast-outcomes"' in page and "time (UTC)" in page


def test_the_connection_is_not_called_down_before_the_first_poll_answered(
    node_ctx: NodeContext, tmp_path: Path
) -> None:
    add_user(users_path(tmp_path), "kari", PASSWORD)
    state: dict[str, bool | None] = {"now": None}
    app = create_console(
        site="oslo",
        store=node_ctx.store,
        ledger=node_ctx.ledger,
        policy=lambda: node_ctx.policy,
        users=users_path(tmp_path),
        connected=lambda: state["now"],
    )
    server = ConsoleServer(app, port=free_port()).start()
    try:
        with _login(server.url) as client:
            assert "first contact under way" in client.get("/").text
            state["now"] = False
            assert 'id="connection"><span class="bad">down' in client.get("/").text
    finally:
        server.stop()


def test_approvals_page_shows_the_question_its_cost_and_who_asked(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    from nodes.policy import ApprovalRules

    node_ctx.set_policy(
        node_ctx.policy.model_copy(update={"approvals": ApprovalRules(epsilon_above=0.4)})
    )
    query = {
        **COUNT,
        "cohort": {
            "op": "and",
            "args": [
                {"op": "startswith", "field": "topography", "prefix": "C34"},
                {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            ],
        },
        "statistic": {"kind": "histogram", "field": "stage"},
    }
    work = make_work(gateway_key, query, query_id="w-9", researcher="bob")
    assert handle(node_ctx, work).status == "awaiting_approval"
    (req,) = node_ctx.store.approvals.requests("pending")
    with _login(console) as client:
        page = client.get("/approvals").text
        assert "topography starts with C34 and age_at_diagnosis 18–75" in page
        assert "histogram of stage (all 6 categories)" in page
        assert "epsilon 0.5 per site (opendp." in page and "95% error ±" in page
        assert '<dd data-fact="researcher">bob</dd>' in page
        assert '<dd data-fact="project">nsclc-feasibility</dd>' in page
        assert "epsilon 0.5 is above 0.4" in page  # why it waits
        resp = client.act(f"/approvals/{req.id}/approve", data={"reason": "DPO agreed"})
        assert "approved by kari (console) at " in resp.text and "DPO agreed" in resp.text


def test_audit_page_filters_pages_and_summarises(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    from nodes.console.routes.audit import PAGE

    _spend(node_ctx, gateway_key, 8, "alice")
    _spend(node_ctx, gateway_key, 4, "bob")
    for i in range(PAGE):
        node_ctx.store.audit("console_login", user="kari", ok=True, n=i)
    with _login(console) as client:
        page = client.get("/audit").text
        assert '<option value="charged">charged</option>' in page  # kinds as a select
        assert 'class="wide"' in page and "<details>" in page  # wraps; detail on demand
        first = client.get("/audit", params={"kind": "console_login"}).text
        assert f"{PAGE + 1} entries match" in first and 'id="older"' in first
        older = client.get("/audit", params={"kind": "console_login", "before": "60"}).text
        assert 'id="newest"' in older and "older than entry 60" in older
        bob = client.get("/audit", params={"kind": "charged", "researcher": "bob"}).text
        assert "4 entries match" in bob
        assert "bob: paid 0.75 epsilon for a query" in bob and "alice: paid" not in bob
        assert "count where stage = I and age_at_diagnosis &gt;= 3, by sex; epsilon 0.75" in bob
        today = node_ctx.store.events()[-1].at.date().isoformat()
        dated = client.get("/audit", params={"researcher": "alice", "since": today})
        assert "entries match" in dated.text and "alice" in dated.text
        none = client.get("/audit", params={"researcher": "alice", "until": "2000-01-01"}).text
        assert "0 entries match" in none
        assert client.get("/audit", params={"since": "yesterday"}).status_code == 422
        project = client.get("/audit", params={"project": "breast-outcomes"}).text
        assert "0 entries match" in project


def test_spend_page_reports_per_researcher_and_project_with_a_chart(
    console: str, node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    _spend(node_ctx, gateway_key, 4, "alice")
    _spend(node_ctx, gateway_key, 2, "bob")
    with _login(console) as client:
        page = client.get("/spend", params={"by": "researcher"}).text
        assert "<td>alice</td><td>epsilon</td><td>3</td><td>4</td><td>4</td><td>0</td>" in page
        assert "<td>bob</td><td>epsilon</td><td>1.5</td><td>2</td><td>2</td><td>0</td>" in page
        assert "<td><strong>TOTAL</strong></td><td>epsilon</td><td>4.5</td>" in page
        assert 'id="spend-chart-epsilon"' in page and "time (UTC)" in page
        assert "alice (3)" in page and "bob (1.5)" in page  # the legend, with totals
        by_project = client.get("/spend", params={"by": "project"}).text
        assert "<td>nsclc-feasibility</td><td>epsilon</td><td>4.5</td><td>6</td>" in by_project
        csv_text = client.get("/spend.csv", params={"by": "project"}).text
        assert csv_text.splitlines()[1].startswith("nsclc-feasibility,epsilon,4.5,6,6,0,")
        assert client.get("/spend", params={"by": "site"}).status_code == 422
        later = client.get("/spend", params={"since": "2999-01-01"}).text
        assert "Nothing was charged in this period." in later
