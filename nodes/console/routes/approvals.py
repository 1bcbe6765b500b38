"""The approvals page: staff approve or deny what the policy says needs a person.

Each request shows the question in full (cohort as criteria, statistic and
grid, privacy and what it costs this site, who asks, for which project, when;
:mod:`nodes.approval_view`, the same facts ``varde node pending --show``
prints), and the decision records who decided, when and why.

Why approving a project writes the policy first: a project approval changes
what may leave the hospital, so it becomes a new policy version (validated and
audited by :func:`nodes.policy_edits.record_project_approval`) before the
request is marked approved; a console without the policy file refuses (409)
and points to ``varde node approve --policy FILE``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from nodes.approval_view import RequestView, view_request
from nodes.console.deps import Context, FormFields, StaffAction, StaffUser
from nodes.console.pages import esc, page, problem, table
from nodes.policy_edits import PolicyEditError, record_project_approval
from varde.errors import NotFound

__all__ = ["router"]

router = APIRouter()


def _request(view: RequestView) -> str:
    """One request: the question in full, its cost here, who asked, and the decision forms."""
    r = view.request
    rid = esc(r.id)
    facts = "".join(
        f'<dt>{esc(label)}</dt><dd data-fact="{esc(label)}">{esc(text)}</dd>'
        for label, text in view.facts
        if label != "question"  # the card's heading line
    )
    if r.status == "pending":
        action = (
            f'<form method="post" action="/approvals/{rid}/approve">'
            f'<input name="reason" id="why-{rid}" placeholder="why (recorded)" size="30"> '
            f'<button type="submit" id="approve-{rid}">Approve</button></form>'
            f'<form method="post" action="/approvals/{rid}/deny">'
            f'<input name="reason" id="reason-{rid}" placeholder="reason (the researcher is told)" '
            f'size="30" required> <button type="submit" id="deny-{rid}">Deny</button></form>'
        )
    else:
        action = ""
    return (
        f'<section class="request" id="request-{rid}"><h3>{rid}: {esc(r.kind)} request, '
        f'<span class="status">{esc(r.status)}</span></h3>'
        f'<p class="summary"><strong>{esc(view.summary)}</strong></p>'
        f'<dl class="facts">{facts}</dl>'
        f"<details><summary>the question as the node will answer it (JSON)</summary>"
        f"<pre>{esc(view.question_json)}</pre></details>{action}</section>"
    )


@router.get("/approvals")
def approvals_page(ctx: Context, user: StaffUser) -> Response:
    """Every request, oldest first: the question, its cost, who asked; pending ones with forms."""
    rows = []
    views = [view_request(ctx.store.log, r) for r in ctx.store.approvals.requests()]
    for v in views:
        r = v.request
        decision = (
            "waiting"
            if r.status == "pending"
            else f"{r.status} by {r.decided_by}: {r.reason}".rstrip(": ")
        )
        rows.append(
            [
                f'<a href="#request-{esc(r.id)}">{esc(r.id)}</a>',
                esc(r.status),
                esc(r.kind),
                esc(r.project),
                esc(r.researcher),
                esc(v.summary),
                esc(decision),
            ]
        )
    pending = [v for v in views if v.request.status == "pending"]
    decided = [v for v in views if v.request.status != "pending"]
    body = (
        "<p>Nothing is computed or charged while a request waits; the researcher submits the "
        "same question again once it is approved. A denial's reason is sent to the researcher.</p>"
        + table(
            "approvals",
            ["id", "status", "kind", "project", "researcher", "question", "decision"],
            rows,
            css="wide",
            widths=["7em", "6em", "5em", "9em", "7em", "auto", "14em"],
        )
        + "<h2>Waiting for a decision</h2>"
        + ("".join(_request(v) for v in pending) or "<p>Nothing waits.</p>")
        + "<h2>Decided</h2>"
        + ("".join(_request(v) for v in reversed(decided)) or "<p>Nothing decided yet.</p>")
    )
    return page("Approvals", body, user, ctx.site)


@router.post("/approvals/{request_id}/{verdict}")
async def decide(
    ctx: Context, user: StaffAction, request_id: str, verdict: str, form: FormFields
) -> Response:
    """Approve or deny one request (a denial needs a reason), then back to the list."""
    if verdict not in {"approve", "deny"}:
        return Response("unknown decision", status_code=404)
    try:
        pending = ctx.store.approvals.get(request_id)
        if verdict == "approve" and pending.kind == "project":
            # a project approval changes what may leave: a new policy version first
            if ctx.policy_file is None:
                return Response(
                    "this console cannot edit the policy: approve projects with "
                    "`varde node approve --policy FILE`",
                    status_code=409,
                )
            record_project_approval(
                ctx.policy_file,
                project=pending.project,
                request_id=request_id,
                site=ctx.site,
                store=ctx.store,
                user=user.name,
                via="console",
                saved=ctx.policy_saved,
            )
        ctx.store.approvals.decide(
            request_id,
            approve=verdict == "approve",
            by=f"{user} (console)",
            reason=form.get("reason", ""),
        )
    except NotFound as err:
        return Response(err.message, status_code=404)
    except PolicyEditError as err:
        return problem(str(err), user, ctx.site)
    except ValueError as err:
        return Response(str(err), status_code=422)
    return RedirectResponse("/approvals", status_code=303)
