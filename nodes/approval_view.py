"""What staff see of one approval request: the question, its price here, who asked, the decision.

Why one view for the console and ``varde node pending --show``: staff must
approve the *question* (cohort, statistic and grid, privacy and what it costs
this site, who asks for which project, when), not an id and an epsilon; both
tools show the same facts in the same words (:mod:`nodes.question`). The cost
is the one the node computed when the request was recorded (the
``approval_requested`` audit entry: the plan's cost and 95% error, no row
read), so what staff read is what the node will charge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nodes.approvals import ApprovalRequest, request_summary
from nodes.audit import AuditLog
from nodes.question import describe_cohort, describe_privacy, describe_statistic
from varde.query import Query

__all__ = ["RequestView", "describe_cost", "view_request"]


@dataclass(frozen=True)
class RequestView:
    """One request as staff read it: ``facts`` are (label, plain text) in reading order."""

    request: ApprovalRequest
    summary: str
    facts: list[tuple[str, str]]
    question_json: str
    """The stored question, pretty-printed (what the node will answer, to the letter)."""


def describe_cost(cost: dict[str, Any] | None) -> str:
    """The price of a request at this site, e.g. ``epsilon 0.5; 95% error ±8 (count)``.

    >>> describe_cost({"measure": "epsilon", "amount": 0.5, "mechanism": "opendp.laplace",
    ...                "error_95": {"count": 7.4}})
    'epsilon 0.5 per site (opendp.laplace); 95% error ±7.4 (count)'
    >>> describe_cost(None)
    'no DP budget (aggregate mode)'
    """
    if cost is None:
        return "no DP budget (aggregate mode)"
    head = f"{cost.get('measure', '?')} {float(cost.get('amount', 0.0)):g} per site"
    if cost.get("problem"):
        return f"{head}; cannot be priced here: {cost['problem']}"
    errors = cost.get("error_95") or {}
    parts = [f"±{float(v):.3g} ({k})" for k, v in list(errors.items())[:6]]
    if len(errors) > 6:
        parts.append(f"... ({len(errors)} parts)")
    mech = f" ({cost['mechanism']})" if cost.get("mechanism") else ""
    return f"{head}{mech}" + (f"; 95% error {', '.join(parts)}" if parts else "")


def _requested_entry(log: AuditLog, req: ApprovalRequest) -> dict[str, Any]:
    for e in log.entries(kind="approval_requested", query_id=req.query_id):
        if e.data.get("request") == req.id:
            return e.data
    return {}


def _decision(req: ApprovalRequest) -> str:
    if req.status == "pending":
        return "waiting for a decision"
    why = f": {req.reason}" if req.reason else " (no reason given)"
    return f"{req.status} by {req.decided_by} at {req.decided_at[:19].replace('T', ' ')} UTC{why}"


def view_request(log: AuditLog, req: ApprovalRequest) -> RequestView:
    """The facts staff need to decide on ``req`` (never raises on an old or odd request)."""
    requested = _requested_entry(log, req)
    summary = request_summary(req)
    facts: list[tuple[str, str]] = [("question", summary)]
    try:
        body = json.loads(req.query)
    except ValueError:
        body = {}
    if req.kind == "training":
        facts.append(
            (
                "privacy",
                f"epsilon {req.epsilon:g} for the whole job"
                if req.epsilon is not None
                else "see the question",
            )
        )
    else:
        try:
            query = Query.model_validate(body)
        except ValueError:
            query = None
        if query is not None:
            facts += [
                ("cohort", describe_cohort(query.cohort)),
                ("statistic", describe_statistic(query)),
                ("grouped by", ", ".join(query.group_by) or "nothing (one group)"),
                ("privacy", describe_privacy(query)),
            ]
        facts.append(
            (
                "cost here",
                describe_cost(requested["cost"])
                if "cost" in requested
                else "not recorded with this request (recorded before costs were)",
            )
        )
    facts += [
        ("researcher", req.researcher),
        ("project", req.project),
        ("asked", f"{req.created_at[:19].replace('T', ' ')} UTC (work item {req.query_id})"),
        ("why it waits", req.why),
        ("decision", _decision(req)),
    ]
    return RequestView(req, summary, facts, json.dumps(body, indent=2, ensure_ascii=False))
