"""The approvals page: staff approve or deny what the policy says needs a person.

Why approving a project writes the policy first: a project approval changes
what may leave the hospital, so it becomes a new policy version (validated and
audited by :func:`nodes.policy_edits.record_project_approval`) before the
request is marked approved; a console without the policy file refuses (409)
and points to ``varde node approve --policy FILE``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from nodes.console.deps import Context, FormFields, StaffAction, StaffUser
from nodes.console.pages import esc, page, problem, table
from nodes.policy_edits import PolicyEditError, record_project_approval
from varde.errors import NotFound

__all__ = ["router"]

router = APIRouter()


@router.get("/approvals")
def approvals_page(ctx: Context, user: StaffUser) -> Response:
    """Every request, oldest first; pending ones with approve and deny forms."""
    rows = []
    for r in ctx.store.approvals.requests():
        if r.status == "pending":
            action = (
                f'<form method="post" action="/approvals/{esc(r.id)}/approve">'
                f'<button type="submit" id="approve-{esc(r.id)}">Approve</button></form>'
                f'<form method="post" action="/approvals/{esc(r.id)}/deny">'
                f'<input name="reason" id="reason-{esc(r.id)}" placeholder="reason" required> '
                f'<button type="submit" id="deny-{esc(r.id)}">Deny</button></form>'
            )
        else:
            action = esc(f"{r.status} by {r.decided_by}: {r.reason}".rstrip(": "))
        rows.append(
            [
                esc(r.id),
                esc(r.status),
                esc(r.kind),
                esc(r.project),
                esc(r.researcher),
                esc("" if r.epsilon is None else f"{r.epsilon:g}"),
                esc(r.why),
                action,
            ]
        )
    body = table(
        "approvals",
        ["id", "status", "kind", "project", "researcher", "epsilon", "why", "decision"],
        rows,
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
