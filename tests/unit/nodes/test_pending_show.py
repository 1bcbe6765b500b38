"""``varde node pending --show ID``: staff read the question they are asked to approve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from nodes.cli import node_admin
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.policy import ApprovalRules
from tests.conftest import make_work

runner = CliRunner()

FUNNEL: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
    "statistic": {
        "kind": "funnel",
        "steps": [
            {"label": "stage IV", "criterion": {"op": "eq", "field": "stage", "value": "IV"}},
            {"label": "EGFR+", "criterion": {"op": "eq", "field": "egfr", "value": "positive"}},
        ],
    },
    "privacy": {"mode": "dp", "epsilon": 0.8},
}


def test_show_prints_the_question_its_cost_who_and_the_decision(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    node_ctx.set_policy(
        node_ctx.policy.model_copy(update={"approvals": ApprovalRules(epsilon_above=0.5)})
    )
    work = make_work(gateway_key, FUNNEL, query_id="f-1", researcher="bob")
    assert handle(node_ctx, work).status == "awaiting_approval"
    (req,) = node_ctx.store.approvals.requests("pending")
    listed = runner.invoke(node_admin, ["pending", "--state-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert "funnel of 2 steps (1. stage IV: stage = IV; 2. EGFR+: egfr = positive)" in (
        listed.output
    )
    shown = runner.invoke(node_admin, ["pending", "--show", req.id, "--state-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    facts = {
        line.split()[0]: line.split(None, 1)[1]
        for line in shown.output.splitlines()[1:]
        if line.startswith("  ") and not line.startswith("    ")
    }
    assert facts["cohort"].strip() == "topography starts with C34"
    assert facts["researcher"].strip() == "bob"
    assert facts["project"].strip() == "nsclc-feasibility"
    assert "epsilon 0.8 per site" in facts["cost"] and "95% error ±" in facts["cost"]
    assert facts["decision"].strip() == "waiting for a decision"
    assert '"label": "EGFR+"' in shown.output  # the question as the node will answer it
    runner.invoke(
        node_admin,
        ["deny", req.id, "--reason", "too broad", "--by", "ola", "--state-dir", str(tmp_path)],
    )
    decided = runner.invoke(node_admin, ["pending", "--show", req.id, "--state-dir", str(tmp_path)])
    assert "denied by ola at " in decided.output and "UTC: too broad" in decided.output
    unknown = runner.invoke(
        node_admin, ["pending", "--show", "ap-nope", "--state-dir", str(tmp_path)]
    )
    assert unknown.exit_code == 2 and "no approval request 'ap-nope'" in unknown.output
