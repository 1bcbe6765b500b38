"""Approvals at the node: work waits (nothing computed or charged) until staff decide."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from launcher.network import DEFAULT_POLICIES
from nodes.approvals import request_key
from nodes.cli import node_admin
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.policy import ApprovalRules
from nodes.reload import PolicyReloader
from tests.conftest import make_work
from varde.query import parse_query

runner = CliRunner()

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {"kind": "count"},
    "privacy": {"mode": "dp", "epsilon": 0.5},
}


def _rules(ctx: NodeContext, **rules: Any) -> None:
    ctx.set_policy(ctx.policy.model_copy(update={"approvals": ApprovalRules(**rules)}))


@pytest.fixture
def state(node_ctx: NodeContext, tmp_path: Path) -> Iterator[Path]:
    yield tmp_path  # node_ctx keeps its store in tmp_path


def _cli(*args: str) -> Any:
    return runner.invoke(node_admin, list(args))


@pytest.fixture
def policy_file(node_ctx: NodeContext, tmp_path: Path) -> tuple[Path, PolicyReloader]:
    """The node's policy file with approvals of new projects on, and the node's reloader."""
    path = tmp_path / "oslo.yaml"
    path.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    reloader = PolicyReloader(node_ctx, path)
    with path.open("a") as f:
        f.write(
            "approvals:\n  new_projects: true   # staff look at every new project\n"
            "  message: The Oslo registry team decides within 2 days.\n"
        )
    assert reloader.check_once() == "reloaded"
    return path, reloader


def test_new_project_waits_then_runs_after_approval(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    state: Path,
    policy_file: tuple[Path, PolicyReloader],
) -> None:
    path, reloader = policy_file
    rel = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    assert rel.status == "awaiting_approval"
    assert rel.cells == [] and rel.charged is None
    assert "awaiting approval at oslo" in rel.message
    assert rel.message.endswith("The Oslo registry team decides within 2 days.")
    assert node_ctx.ledger.charges() == []
    (req,) = node_ctx.store.approvals.requests("pending")
    assert (req.kind, req.project, req.researcher, req.query_id) == (
        "project",
        "nsclc-feasibility",
        "alice",
        "q1",
    )
    assert req.id in rel.message
    # asking again does not open a second request
    again = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2"))
    assert again.status == "awaiting_approval" and req.id in again.message
    assert len(node_ctx.store.approvals.requests()) == 1

    res = _cli("pending", "--state-dir", str(state))
    assert req.id in res.output and "is new at this site" in res.output
    # a project approval is a policy change: the CLI needs the policy file
    res = _cli("approve", req.id, "--state-dir", str(state), "--by", "kari")
    assert res.exit_code == 2 and "pass --policy" in res.output
    assert node_ctx.store.approvals.get(req.id).status == "pending"
    before = path.read_text()
    res = _cli(
        "approve", req.id, "--state-dir", str(state), "--by", "kari", "--reason", "IRB ok",
        "--policy", str(path),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"{req.id} approved" in res.output
    # one line added, the staff's comments kept; the node's watcher puts it in force
    added = [line for line in path.read_text().splitlines() if line not in before.splitlines()]
    assert added == ["  approved_projects: [nsclc-feasibility]"]
    assert "# staff look at every new project" in path.read_text()
    assert reloader.check_once() == "reloaded"
    assert node_ctx.policy.approvals.approved_projects == ["nsclc-feasibility"]
    assert f"is now version {node_ctx.policy.version}" in res.output

    ok = handle(node_ctx, make_work(gateway_key, COUNT, query_id="q3"))
    assert ok.status == "ok" and ok.charged.epsilon == pytest.approx(0.5)
    other = {**COUNT, "statistic": {"kind": "histogram", "field": "stage"}}
    assert handle(node_ctx, make_work(gateway_key, other, query_id="q4")).status == "ok"
    kinds = [
        e.kind
        for e in node_ctx.store.events()
        if e.kind not in {"work_received", "policy_changed", "policy_loaded"}
    ]
    assert kinds == [
        "approval_requested",
        "cli_policy_edit",
        "approval_granted",
        "charged",
        "released",
        "charged",
        "released",
    ]
    edit = node_ctx.store.events("cli_policy_edit")[0]
    assert edit.project == "nsclc-feasibility"
    assert edit.data["version"] == node_ctx.policy.version and edit.data["request"] == req.id
    granted = node_ctx.store.events("approval_granted")[0]
    assert granted.data["by"] == "kari" and granted.data["reason"] == "IRB ok"
    assert node_ctx.store.verify().ok


def test_taking_a_project_out_of_the_policy_revokes_its_approval(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    state: Path,
    policy_file: tuple[Path, PolicyReloader],
) -> None:
    path, reloader = policy_file
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1")).status == (
        "awaiting_approval"
    )
    (req,) = node_ctx.store.approvals.requests("pending")
    res = _cli("approve", req.id, "--state-dir", str(state), "--policy", str(path))
    assert res.exit_code == 0, res.output
    reloader.check_once()
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="q2")).status == "ok"
    # staff take the project out of the list by hand: the project waits again
    path.write_text(path.read_text().replace("  approved_projects: [nsclc-feasibility]\n", ""))
    assert reloader.check_once() == "reloaded"
    other = {**COUNT, "privacy": {"mode": "dp", "epsilon": 0.25}}
    rel = handle(node_ctx, make_work(gateway_key, other, query_id="q3"))
    assert rel.status == "awaiting_approval" and req.id in rel.message
    assert node_ctx.store.approvals.get(req.id).status == "pending"
    assert node_ctx.store.events("approval_reopened")[0].data["request"] == req.id
    assert [c.query_id for c in node_ctx.ledger.charges()] == ["q2"]


def test_a_policy_the_approval_would_break_is_not_written(
    node_ctx: NodeContext,
    gateway_key: Ed25519PrivateKey,
    state: Path,
    policy_file: tuple[Path, PolicyReloader],
) -> None:
    path, _ = policy_file
    handle(node_ctx, make_work(gateway_key, COUNT, query_id="q1"))
    (req,) = node_ctx.store.approvals.requests("pending")
    broken = path.read_text().replace("site: oslo", "site: oslo\nsurprise: 1")
    path.write_text(broken)
    res = _cli("approve", req.id, "--state-dir", str(state), "--policy", str(path))
    assert res.exit_code == 2 and "surprise" in res.output
    assert path.read_text() == broken  # nothing written ...
    assert node_ctx.store.approvals.get(req.id).status == "pending"  # ... nothing decided


def test_large_epsilon_waits_and_a_denial_carries_the_reason(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, state: Path
) -> None:
    _rules(node_ctx, epsilon_above=0.4)
    small = {**COUNT, "privacy": {"mode": "dp", "epsilon": 0.3}}
    assert handle(node_ctx, make_work(gateway_key, small, query_id="s")).status == "ok"
    rel = handle(node_ctx, make_work(gateway_key, COUNT, query_id="big"))
    assert rel.status == "awaiting_approval"
    assert "epsilon 0.5 is above 0.4" in rel.message
    (req,) = node_ctx.store.approvals.requests("pending")

    res = _cli("deny", req.id, "--state-dir", str(state))
    assert res.exit_code != 0  # a denial needs a reason
    res = _cli("deny", req.id, "--state-dir", str(state), "--reason", "use epsilon 0.4 or less")
    assert res.exit_code == 0, res.output
    assert "the researcher will be told: use epsilon 0.4 or less" in res.output

    refused = handle(node_ctx, make_work(gateway_key, COUNT, query_id="big2"))
    assert refused.status == "policy_violation"
    assert refused.message == (f"staff at 'oslo' denied request {req.id}: use epsilon 0.4 or less")
    assert [c.query_id for c in node_ctx.ledger.charges()] == ["s"]


def test_resubmission_is_recognised_by_its_canonical_key() -> None:
    a = parse_query({**COUNT, "timeout_s": 5})
    b = parse_query(dict(reversed(list(COUNT.items()))))
    assert request_key("query", a, "alice") == request_key("query", b, "alice")
    assert request_key("query", a, "alice") != request_key("query", a, "bob")
    c = parse_query({**COUNT, "privacy": {"mode": "dp", "epsilon": 0.6}})
    assert request_key("query", a, "alice") != request_key("query", c, "alice")
    assert request_key("project", a, "alice") == request_key("project", c, "bob")


def test_unknown_request_id(node_ctx: NodeContext, state: Path) -> None:
    res = _cli("approve", "ap-00000000", "--state-dir", str(state))
    assert res.exit_code == 2
    assert "no approval request 'ap-00000000'" in res.output


def test_no_rules_no_waiting(node_ctx: NodeContext, gateway_key: Ed25519PrivateKey) -> None:
    assert handle(node_ctx, make_work(gateway_key, COUNT)).status == "ok"
    assert node_ctx.store.approvals.requests() == []
