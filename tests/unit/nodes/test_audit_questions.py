"""Every audit entry about a work item says who asked what under which policy; the chain holds."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.policy import ApprovalRules
from tests.conftest import make_work
from varde.envelope import seal
from varde.release import WorkItem

COUNT: dict[str, Any] = {
    "project": "nsclc-feasibility",
    "cohort": {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
        ],
    },
    "statistic": {"kind": "count"},
    "group_by": ["sex"],
    "privacy": {"mode": "dp", "epsilon": 0.5},
}
SUMMARY = "count where topography starts with C34 and stage = IV, by sex; epsilon 0.5 (dp)"


def test_query_preview_repeat_refusal_and_approval_entries_carry_the_question(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    version = node_ctx.policy.version
    item = WorkItem(
        query_id="pv-1", project=COUNT["project"], researcher="bob", query=COUNT, preview=True
    )
    env = seal(
        gateway_key,
        kind="work",
        sender="gateway",
        recipient="oslo",
        body=item.model_dump(mode="json"),
        ttl=dt.timedelta(seconds=30),
    )
    assert handle(node_ctx, env).preview
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="q-1")).status == "ok"
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="q-2")).cached  # a repeat
    too_much = {**COUNT, "privacy": {"mode": "dp", "epsilon": 5.0}}
    assert handle(node_ctx, make_work(gateway_key, too_much, query_id="q-3")).status == (
        "policy_violation"
    )
    node_ctx.set_policy(
        node_ctx.policy.model_copy(update={"approvals": ApprovalRules(epsilon_above=0.4)})
    )
    other = {**COUNT, "group_by": []}
    assert handle(node_ctx, make_work(gateway_key, other, query_id="q-4")).status == (
        "awaiting_approval"
    )

    entries = node_ctx.store.events()
    about = {
        e.kind + ":" + e.query_id: e
        for e in entries
        if e.query_id and e.kind not in {"checkpoint", "policy_loaded"}
    }
    for key in ("work_received:q-1", "charged:q-1", "released:q-1", "previewed:pv-1"):
        d = about[key].data
        assert d["summary"] == SUMMARY, key
        assert d["question"]["cohort"] == COUNT["cohort"] and "timeout_s" not in d["question"]
        assert d["researcher"] == ("bob" if key.endswith("pv-1") else "alice")
        assert d["policy_version"] == version
        assert about[key].project == "nsclc-feasibility"
    released = about["released:q-1"].data
    assert (released["measure"], released["amount"], released["n_cells"]) == ("epsilon", 0.5, 2)
    assert about["charged:q-1"].data["amount"] == 0.5
    preview_entry = about["previewed:pv-1"].data
    assert (preview_entry["measure"], preview_entry["amount"]) == ("epsilon", 0.5)
    assert preview_entry["error_95"]["count"] > 0  # the preview's 95% error, recorded
    repeat = about["released_from_cache:q-2"].data
    assert (repeat["amount"], repeat["summary"], repeat["n_cells"]) == (0.0, SUMMARY, 2)
    refused = about["policy_violation:q-3"]
    assert refused.project == "nsclc-feasibility" and "epsilon 5" in refused.data["summary"]
    asked = about["approval_requested:q-4"].data
    assert asked["summary"] == "count where topography starts with C34 and stage = IV; " + (
        "epsilon 0.5 (dp)"
    )
    assert asked["cost"]["measure"] == "epsilon" and asked["cost"]["error_95"]["count"] > 0
    (req,) = node_ctx.store.approvals.requests("pending")
    node_ctx.store.approvals.decide(req.id, approve=True, by="kari", reason="fine by the DPO")
    (granted,) = node_ctx.store.events("approval_granted")
    assert granted.data["summary"] == asked["summary"]
    assert (granted.data["by"], granted.data["reason"]) == ("kari", "fine by the DPO")
    assert node_ctx.store.verify().ok


def test_verify_finds_an_edit_of_a_new_field(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    assert handle(node_ctx, make_work(gateway_key, COUNT, query_id="q-1")).status == "ok"
    assert node_ctx.store.verify().ok
    (released,) = node_ctx.store.events("released")
    con = sqlite3.connect(tmp_path / "node.sqlite")
    with con:  # someone makes the trail say another researcher asked, in the summary too
        con.execute(
            "UPDATE audit_entries SET detail = replace(replace(detail, "
            '\'"researcher":"alice"\', \'"researcher":"mallory"\'), \'stage = IV\', '
            "'stage = III') WHERE id = ?",
            (released.id,),
        )
    con.close()
    (edited,) = node_ctx.store.events("released")
    assert edited.data["researcher"] == "mallory"  # the edit took
    report = node_ctx.store.verify()
    assert not report.ok
    assert report.first is not None
    assert (report.first.entry_id, report.first.kind) == (released.id, "edited")
