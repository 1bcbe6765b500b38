"""Registry staff tools against a real node process: hot policy reload, audit trail, approvals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.network import DEFAULT_POLICIES, LocalNetwork
from nodes.policy_check import check_policy_text
from nodes.store import NodeStore
from tests.console_client import StaffClient
from varde_client import VardeClient

from .conftest import ledger_of

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("staff")]

SITE = "bergen"


@pytest.fixture(scope="module")
def staff_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    workdir = tmp_path_factory.mktemp("staff")
    policy = workdir / f"{SITE}.yaml"
    policy.write_text((DEFAULT_POLICIES / f"{SITE}.yaml").read_text())
    net = LocalNetwork(workdir=workdir, sites=[SITE], rows=5_000, seed=11, policies={SITE: policy})
    net.start()
    yield net
    net.stop()


def _query(i: int, epsilon: float = 0.05, project: str = "nsclc-feasibility") -> dict[str, Any]:
    # distinct cohorts: a repeated question would be answered from the release cache for free
    return {
        "project": project,
        "cohort": {"op": "<=", "field": "age_at_diagnosis", "value": 20 + i},
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": epsilon},
    }


def _events(net: LocalNetwork, kind: str | None) -> list[Any]:
    store = NodeStore.in_directory(net.node_state(SITE))
    try:
        return store.events(kind)
    finally:
        store.close()


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_hot_reload_under_concurrent_queries_loses_and_doubles_no_charge(
    staff_net: LocalNetwork,
) -> None:
    path: Path = staff_net.policy_path(SITE)
    original = path.read_text()
    budgets = ["9.0", "8.5", "BROKEN", "9.5", "10.0"]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def researcher(t: int) -> None:
        try:
            with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
                for i in range(12):
                    raw = client.query(_query(t * 12 + i)).raw
                    with lock:
                        results.append(raw)
        except BaseException as err:  # pragma: no cover - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=researcher, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    seen = len(_events(staff_net, "policy_changed")) + len(_events(staff_net, "policy_refused"))
    for budget in budgets:
        time.sleep(0.3)  # let queries run under each version
        if budget == "BROKEN":
            path.write_text(original.replace("min_cell", "min_cel").replace("profile:", "profle:"))
        else:
            path.write_text(original.replace("epsilon_budget: 8.0", f"epsilon_budget: {budget}"))
        seen += 1  # wait until the node has acted on this version (a loaded machine is slow)
        _wait_for(
            lambda n=seen: (
                len(_events(staff_net, "policy_changed"))
                + len(_events(staff_net, "policy_refused"))
                >= n
            ),
            timeout=30,
        )
    for th in threads:
        th.join()
    assert not errors
    time.sleep(1.0)

    rows = [s for r in results for s in r["sites"]]
    assert len(rows) == 48
    assert {s["status"] for s in rows} == {"ok"}, {s["message"] for s in rows}
    led = ledger_of(staff_net, SITE)
    try:
        charges = led.charges("nsclc-feasibility")
    finally:
        led.close()
    charged_ids = [c.query_id for c in charges]
    released_ids = [r["query_id"] for r in results]
    # every released answer paid exactly once, and nothing was charged that was not released
    assert sorted(charged_ids) == sorted(released_ids)
    assert sum(c.amount for c in charges) == pytest.approx(
        sum(s["charged"]["epsilon"] for s in rows)
    )

    changed = _events(staff_net, "policy_changed")[-4:]
    refused = _events(staff_net, "policy_refused")
    assert [e.data["changes"] for e in changed] == [
        ["+ projects.nsclc-feasibility.epsilon_budget: 8 -> 9 (+1)"],
        ["- projects.nsclc-feasibility.epsilon_budget: 9 -> 8.5 (-0.5)"],
        ["+ projects.nsclc-feasibility.epsilon_budget: 8.5 -> 9.5 (+1)"],
        ["+ projects.nsclc-feasibility.epsilon_budget: 9.5 -> 10 (+0.5)"],
    ]
    (bad,) = refused
    assert any("profle" in p for p in bad.data["problems"])
    final = check_policy_text(path.read_text()).policy
    assert final is not None and changed[-1].data["version"] == final.version
    # the refusal did not interrupt service, and the node answers under the last valid version
    with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
        (site,) = client.query(_query(999)).raw["sites"]
    assert site["status"] == "ok"
    assert site["budget_total"] == {"epsilon": 10.0}


def test_audit_trail_of_a_running_node_verifies(staff_net: LocalNetwork) -> None:
    with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
        assert client.query(_query(500)).raw["sites"][0]["status"] == "ok"
    store = NodeStore.in_directory(staff_net.node_state(SITE))
    try:
        report = store.log.verify()
        kinds = {e.kind for e in store.events()}
    finally:
        store.close()
    assert report.ok, report.problems
    assert {"policy_loaded", "work_received", "released"} <= kinds


def test_approvals_end_to_end(staff_net: LocalNetwork) -> None:
    """The researcher is told to wait, staff approve or deny from the CLI, the node follows."""
    from typer.testing import CliRunner

    from nodes.cli import node_admin
    from varde_client import VardeHTTPError

    path = staff_net.policy_path(SITE)
    text = (DEFAULT_POLICIES / f"{SITE}.yaml").read_text() + (
        "\napprovals:\n  epsilon_above: 0.3\n  message: Bergen staff review within a day.\n"
    )
    version = check_policy_text(text).policy.version  # type: ignore[union-attr]
    path.write_text(text)
    _wait_for(
        lambda: any(e.data["version"] == version for e in _events(staff_net, "policy_changed"))
    )
    state = str(staff_net.node_state(SITE))
    cli = CliRunner()

    with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
        big = _query(700, epsilon=0.5)
        waiting = client.query(big)  # the only site is waiting: 202, nothing to combine yet
        assert waiting.status == 202 and waiting.raw["network"] is None
        (row,) = waiting.raw["sites"]
        assert row["status"] == "awaiting_approval"
        assert "awaiting approval at bergen" in row["message"]
        assert row["message"].endswith("Bergen staff review within a day.")
        request_id = row["message"].split("(request ")[1].split(":")[0]
        led = ledger_of(staff_net, SITE)
        before = len(led.charges())
        res = cli.invoke(node_admin, ["pending", "--state-dir", state])
        assert request_id in res.output

        res = cli.invoke(node_admin, ["approve", request_id, "--state-dir", state, "--by", "ola"])
        assert res.exit_code == 0, res.output
        assert len(led.charges()) == before  # nothing charged while waiting
        (site,) = client.query(big).raw["sites"]
        assert site["status"] == "ok" and site["charged"]["epsilon"] == pytest.approx(0.5)
        assert len(led.charges()) == before + 1

        other = _query(701, epsilon=0.6)
        waiting = client.query(other)
        assert waiting.status == 202
        request_id = waiting.raw["sites"][0]["message"].split("(request ")[1].split(":")[0]
        res = cli.invoke(
            node_admin,
            ["deny", request_id, "--state-dir", state, "--reason", "too much epsilon for a count"],
        )
        assert res.exit_code == 0, res.output
        with pytest.raises(VardeHTTPError) as info:
            client.query(other)
        (row,) = info.value.sites
        assert row["status"] == "policy_violation"
        assert row["message"].endswith(
            "denied request " + request_id + ": too much epsilon for a count"
        )
        assert len(led.charges()) == before + 1
        led.close()
    store = NodeStore.in_directory(staff_net.node_state(SITE))
    kinds = [e.kind for e in store.events() if e.kind.startswith("approval_")]
    store.close()
    assert kinds == [
        "approval_requested",
        "approval_granted",
        "approval_requested",
        "approval_denied",
    ]


def test_project_approval_is_a_policy_version_the_running_node_loads(
    staff_net: LocalNetwork,
) -> None:
    """Approving a project with the CLI edits the policy file; the node reloads it and serves."""
    from typer.testing import CliRunner

    from nodes.cli import node_admin

    path = staff_net.policy_path(SITE)
    text = (DEFAULT_POLICIES / f"{SITE}.yaml").read_text() + (
        "\napprovals:\n  new_projects: true   # Bergen looks at every new project\n"
    )
    path.write_text(text)
    version = check_policy_text(text).policy.version  # type: ignore[union-attr]
    _wait_for(
        lambda: any(e.data["version"] == version for e in _events(staff_net, "policy_changed"))
    )
    with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
        waiting = client.query(_query(900))
        assert waiting.status == 202
        message = waiting.raw["sites"][0]["message"]
        assert "project 'nsclc-feasibility' is new at this site" in message
        request_id = message.split("(request ")[1].split(":")[0]
        res = CliRunner().invoke(
            node_admin,
            ["approve", request_id, "--state-dir", str(staff_net.node_state(SITE)),
             "--by", "ola", "--policy", str(path)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        approved = check_policy_text(path.read_text()).policy
        assert approved is not None
        assert approved.approvals.approved_projects == ["nsclc-feasibility"]
        assert "# Bergen looks at every new project" in path.read_text()
        _wait_for(
            lambda: any(
                e.data["version"] == approved.version for e in _events(staff_net, "policy_changed")
            )
        )
        (row,) = client.query(_query(900)).raw["sites"]
        assert row["status"] == "ok" and row["charged"]["epsilon"] > 0
    (edit,) = _events(staff_net, "cli_policy_edit")
    assert (edit.project, edit.data["user"], edit.data["version"]) == (
        "nsclc-feasibility",
        "ola",
        approved.version,
    )


def test_stopped_node_signs_its_whole_trail(staff_net: LocalNetwork) -> None:
    """SIGTERM (what a service manager sends) shuts down cleanly: a final signed checkpoint."""
    from typer.testing import CliRunner

    from nodes.cli import audit_app

    with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
        assert client.query(_query(800)).raw["sites"][0]["status"] == "ok"
    staff_net.stop_process(SITE, timeout=30)  # a clean stop flushes and signs
    try:
        res = CliRunner().invoke(
            audit_app, ["verify", "--state-dir", str(staff_net.node_state(SITE))]
        )
        assert res.exit_code == 0, res.output
        assert "audit trail OK" in res.output and "not signed yet" not in res.output
        assert _events(staff_net, None)[-1].kind == "checkpoint"
    finally:
        staff_net.restart_node(SITE)
        staff_net.wait_connected([SITE], timeout=60)


def test_node_serves_its_console_on_loopback(staff_net: LocalNetwork, tmp_path: Path) -> None:
    """``run_node(console_port=...)``: the console shows the node's live connection state."""

    from launcher.network import free_port
    from nodes.console import add_user, users_path
    from nodes.runner import run_node

    policy = tmp_path / "voss.yaml"
    policy.write_text(
        (DEFAULT_POLICIES / f"{SITE}.yaml").read_text().replace(f"site: {SITE}", "site: voss")
    )
    state = tmp_path / "state"
    state.mkdir()
    add_user(users_path(state), "kari", "correct horse battery")
    port = free_port()
    stop = threading.Event()
    node = threading.Thread(
        target=run_node,
        kwargs={
            "policy_path": policy,
            "gateway_url": staff_net.url,
            "data_path": staff_net.data_files[SITE],
            "state_dir": state,
            "enroll_token": staff_net.enrollment_token("voss"),
            "console_port": port,
            "stop": stop,
        },
        daemon=True,
    )
    node.start()
    try:
        staff_net.wait_connected(["voss"], timeout=60)
        with StaffClient(f"http://127.0.0.1:{port}") as c:
            c.login("kari", "correct horse battery")
            # connected as soon as the gateway is: the node's first poll is answered at once
            # (it used to say "down" until its first 20 s long poll returned); a few seconds
            # allow for the poll's answer still being on its way back to the node
            deadline = time.monotonic() + 5
            while 'class="ok">connected' not in (page := c.get("/").text):
                assert time.monotonic() < deadline, "the console does not show 'connected'"
                time.sleep(0.1)
            with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
                raw = client.query({**_query(900), "sites": ["voss"]}).raw
            assert raw["sites"][0]["status"] == "ok"
            page = c.get("/").text
        row = (
            "<td>nsclc-feasibility</td><td>epsilon</td><td>lifetime</td>"
            "<td>never renews (lifetime)</td><td>8</td><td>0.05</td><td>7.95</td>"
        )
        assert row in page
    finally:
        stop.set()
        with VardeClient(staff_net.url, staff_net.token, timeout=60) as client:
            client.query({**_query(901), "sites": ["voss"]})  # ends the open long-poll
        node.join(timeout=60)
    assert not node.is_alive()
