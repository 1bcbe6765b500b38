"""The overview page and the budget edit it offers: connection, policy in force, spend per project.

Why together: the budgets table is the overview's main content and its form
posts back here; a saved budget redirects to the overview with a notice. The
edit goes through :func:`nodes.policy_edits.write_policy_version`, validated
exactly like ``varde policy check`` and audited, and only when the console was
given the policy file.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from nodes.accounts import Account
from nodes.console.deps import ConsoleContext, Context, FormFields, Staff, StaffAction, StaffUser
from nodes.console.pages import esc, page, problem, table
from nodes.policy import ProjectPolicy
from nodes.policy_edits import PolicyEditError, budget_key, set_budget, write_policy_version
from varde.budget import Budget

__all__ = ["router"]

router = APIRouter()


def _chart(points: list[float], budget: float) -> str:
    """Cumulative spend as an inline SVG line (charge by charge), with the budget as a rule."""
    width, height = 320, 80
    top = max([budget, *points]) or 1.0
    xs = [i * width / max(1, len(points)) for i in range(len(points) + 1)]
    ys = [height - v * height / top for v in [0.0, *points]]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    rule = height - budget * height / top
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="spent over time">'
        f'<line x1="0" x2="{width}" y1="{rule:.1f}" y2="{rule:.1f}" stroke="#b42318" '
        f'stroke-dasharray="4"/><polyline fill="none" stroke="#1d3b53" stroke-width="2" '
        f'points="{line}"/></svg>'
    )


def _budget_form(project: str, budget: float) -> str:
    p = esc(project)
    return (
        f'<form method="post" action="/budgets/{p}"><input name="budget" id="budget-{p}" '
        f'size="6" value="{budget:g}" required> <button type="submit" id="set-budget-{p}">'
        "Set budget</button></form>"
    )


@router.get("/")
def overview(ctx: Context, user: StaffUser, saved: str = "") -> Response:
    """Gateway connection, policy version, pending approvals, training state, budgets."""
    pol = ctx.policy()
    state = ctx.connected()
    conn = (
        "unknown"
        if state is None
        else ('<span class="ok">connected</span>' if state else '<span class="bad">down</span>')
    )
    charges = ctx.ledger.charges()
    rows = []
    for name, p in sorted(pol.projects.items()):
        account = Account.of(name, p)
        total = account.total.amount
        series = [
            c.spent_after
            for c in charges
            if (c.project, c.measure, c.period) == (name, p.measure, account.period)
        ]
        rows.append(
            [
                esc(name),
                p.measure,
                esc(account.period),
                f"{total:g}",
                f"{ctx.ledger.spent(name, p.measure, account.period):g}",
                f"{account.left(ctx.ledger).amount:g}",
                f"{account.cap.amount:g}",
                _chart(series, total),
                _budget_form(name, total) if ctx.policy_file is not None else "",
            ]
        )
    pending = len(ctx.store.approvals.requests("pending"))
    notice = f'<p class="ok" id="notice">{esc(saved)}</p>' if saved else ""
    body = (
        notice + f'<p>Gateway connection: <strong id="connection">{conn}</strong>. '
        f'Policy in force: <code id="policy-version">{esc(pol.version)}</code>. '
        f'<a href="/approvals">Pending approvals: <strong id="pending">{pending}</strong></a>'
        "</p>"
        + (
            f'<p>Training (Flower SuperNode): <strong id="training">{esc(flower)}</strong></p>'
            if (flower := ctx.training()) is not None
            else ""
        )
        + "<h2>Budgets (each in its project's measure, current period)</h2>"
        + table(
            "budgets",
            [
                "project",
                "measure",
                "period",
                "budget",
                "spent",
                "remaining",
                "max per query",
                "spent over time",
                "",
            ],
            rows,
        )
    )
    return page("Overview", body, user, ctx.site)


@router.post("/budgets/{project}")
async def save_budget(ctx: Context, user: StaffAction, project: str, form: FormFields) -> Response:
    """Change ``project``'s budget: a confirmation page first, then a new policy version.

    The new budget must be a number from 0 up to the policy's ``console`` maximum
    for the project's measure; the first post only shows what the change means
    (old and new budget, spent and left in the current period); the change is
    written when the confirmation form comes back with ``confirm=yes``.
    """
    if ctx.policy_file is None:
        return Response("this console cannot edit the policy", status_code=404)
    raw = form.get("budget", "")
    try:
        budget = float(raw)
        if not math.isfinite(budget) or budget < 0:
            raise ValueError
    except ValueError:
        return problem(f"{raw!r} is not a budget (a number >= 0)", user, ctx.site)
    policy = ctx.policy()
    if project not in policy.projects:
        return problem(f"this site's policy has no project {project!r}", user, ctx.site)
    proj = policy.projects[project]
    old = proj.budget
    new = old.like(budget)
    ceiling = policy.console.max_budget(old)
    if new > ceiling:  # type: ignore[operator]
        return problem(
            f"{new} is above what the console may set ({ceiling}; policy key "
            f"console.max_{old.measure}_budget): edit the policy file to go higher",
            user,
            ctx.site,
        )
    if form.get("confirm") != "yes":
        return _confirm(ctx, user, project, proj, new)
    try:
        saved = write_policy_version(
            ctx.policy_file,
            lambda text: set_budget(text, project, new),
            site=ctx.site,
            store=ctx.store,
            user=user.name,
            via="console",
            project=project,
            change={"key": budget_key(new), "old": old.amount, "new": budget},
            saved=ctx.policy_saved,
        )
    except PolicyEditError as err:
        return problem(str(err), user, ctx.site)
    msg = f"saved {project} budget {budget:g}: policy version {saved.version}"
    return RedirectResponse("/?" + urlencode({"saved": msg}), status_code=303)


def _confirm(
    ctx: ConsoleContext, user: Staff, project: str, proj: ProjectPolicy, new: Budget
) -> Response:
    """What changing the budget would mean, and the form that confirms it."""
    account = Account.of(project, proj)
    spent = ctx.ledger.spent(project, proj.measure, account.period)
    p = esc(project)
    meaning = (
        f"{esc(project)} has spent {spent:g} {proj.measure} in period {esc(account.period)}; "
        + (
            f"with a budget of {new.amount:g} it would have {new.amount - spent:g} left."
            if new.amount >= spent
            else f"a budget of {new.amount:g} is below that: it would have nothing left "
            "until the next period (nothing already spent comes back)."
        )
    )
    body = (
        f'<p id="confirm-text">Change the {proj.measure} budget of <strong>{p}</strong> from '
        f"{account.total.amount:g} to {new.amount:g}? {meaning}</p>"
        f'<form method="post" action="/budgets/{p}">'
        f'<input type="hidden" name="budget" value="{new.amount!r}">'
        '<input type="hidden" name="confirm" value="yes">'
        f'<button type="submit" id="confirm-budget-{p}">Confirm</button> '
        '<a href="/">Cancel</a></form>'
    )
    return page("Confirm the budget change", body, user, ctx.site)
