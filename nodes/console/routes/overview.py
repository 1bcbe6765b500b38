"""The overview page and the budget edit it offers: connection, policy in force, spend per project.

Why together: the budgets table is the overview's main content and its form
posts back here; a saved budget redirects to the overview with a notice. The
edit goes through :func:`nodes.policy_edits.write_policy_version`, validated
exactly like ``varde policy check`` and audited, and only when the console was
given the policy file.
"""

from __future__ import annotations

import datetime as dt
import math
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from nodes.accounts import Account
from nodes.console.charts import spend_chart
from nodes.console.deps import ConsoleContext, Context, FormFields, Staff, StaffAction, StaffUser
from nodes.console.pages import esc, page, problem, table
from nodes.periods import period_dates
from nodes.policy import ProjectPolicy
from nodes.policy_edits import PolicyEditError, budget_key, set_budget, write_policy_version
from varde.budget import Budget
from varde.envelope import utcnow

__all__ = ["router"]

router = APIRouter()


def _dates(p: ProjectPolicy, now: dt.datetime) -> str:
    """The current budget period's first and last day, or that it never renews."""
    bounds = period_dates(p.budget_period, now)
    if bounds is None:
        return "never renews (lifetime)"
    first, last = bounds
    return f"{first.isoformat()} to {last.isoformat()} (renews {last + dt.timedelta(days=1)})"


def _period_start(p: ProjectPolicy, now: dt.datetime) -> dt.datetime | None:
    bounds = period_dates(p.budget_period, now)
    return None if bounds is None else dt.datetime.combine(bounds[0], dt.time(), tzinfo=dt.UTC)


def _budget_form(project: str, budget: float) -> str:
    p = esc(project)
    return (
        f'<form method="post" action="/budgets/{p}"><input name="budget" id="budget-{p}" '
        f'size="6" value="{budget:g}" required> <button type="submit" id="set-budget-{p}">'
        "Set budget</button></form>"
    )


def _connection(state: bool | None) -> str:
    if state is None:
        return '<span class="muted">not known yet (first contact under way)</span>'
    return '<span class="ok">connected</span>' if state else '<span class="bad">down</span>'


@router.get("/")
def overview(ctx: Context, user: StaffUser, saved: str = "") -> Response:
    """Gateway connection, policy version, pending approvals, training state, budgets."""
    pol = ctx.policy()
    now = utcnow()
    charges = ctx.ledger.charges()
    rows, charts = [], []
    for name, p in sorted(pol.projects.items()):
        account = Account.of(name, p, now)
        total = account.total.amount
        spent = ctx.ledger.spent(name, p.measure, account.period)
        left = account.left(ctx.ledger).amount
        series = [
            (c.created_at, c.spent_after)
            for c in charges
            if (c.project, c.measure, c.period) == (name, p.measure, account.period)
        ]
        over = '<br><span class="bad">spent is above the budget</span>' if spent > total else ""
        rows.append(
            [
                esc(name),
                p.measure,
                esc(account.period),
                esc(_dates(p, now)),
                f"{total:g}",
                f"{spent:g}",
                f"{left:g}{over}",
                f"{account.cap.amount:g}",
                _budget_form(name, total) if ctx.policy_file is not None else "",
            ]
        )
        start = _period_start(p, now) or (series[0][0] if series else now)
        charts.append(
            f"<figure><figcaption>{esc(name)}: {p.measure} spent, "
            + (
                "lifetime budget"
                if p.budget_period == "lifetime"
                else f"period {esc(account.period)} ({esc(_dates(p, now))})"
            )
            + "</figcaption>"
            + spend_chart(
                {f"{p.measure} spent": series},
                chart_id=f"chart-{name}",
                y_label=f"{p.measure} spent",
                rules={"budget": total},
                start=min(start, series[0][0]) if series else start,
                end=now,
            )
            + "</figure>"
        )
    pending = len(ctx.store.approvals.requests("pending"))
    notice = f'<p class="ok" id="notice">{esc(saved)}</p>' if saved else ""
    body = (
        notice + f'<p>Gateway connection: <strong id="connection">{_connection(ctx.connected())}'
        f'</strong>. Policy in force: <code id="policy-version">{esc(pol.version)}</code>. '
        f'<a href="/approvals">Pending approvals: <strong id="pending">{pending}</strong></a>'
        "</p>"
        + (
            f'<p>Training (Flower SuperNode): <strong id="training">{esc(flower)}</strong></p>'
            if (flower := ctx.training()) is not None
            else ""
        )
        + "<h2>Budgets in the current period</h2>"
        "<p>Each project spends in its own measure (epsilon for pure DP, rho for zCDP), per "
        "budget period: <em>budget</em> is what it may spend in the period, <em>spent</em> what "
        "its queries and training have already spent there (never refunded), <em>left</em> the "
        "difference (never below 0). A new period starts again from 0; a lifetime budget never "
        'renews. Who spent it: <a href="/spend?by=researcher">spend per researcher</a>.</p>'
        + table(
            "budgets",
            [
                "project",
                "measure",
                "period",
                "period dates (UTC)",
                "budget",
                "spent",
                "left",
                "max per query",
                "",
            ],
            rows,
        )
        + "<h2>Spent over time</h2>"
        + "".join(charts)
    )
    return page("Overview", body, user, ctx.site)


BELOW_SPENT = "below_spent"
"""The confirmation form's extra field a budget below what is spent needs (``yes``)."""


@router.post("/budgets/{project}")
async def save_budget(ctx: Context, user: StaffAction, project: str, form: FormFields) -> Response:
    """Change ``project``'s budget: a confirmation page first, then a new policy version.

    The new budget must be a number from 0 up to the policy's ``console`` maximum
    for the project's measure; the first post only shows what the change means
    (old and new budget, spent and left in the current period); the change is
    written when the confirmation form comes back with ``confirm=yes``. A budget
    below what the project has already spent in the period is refused unless
    the confirmation also says ``below_spent=yes`` (a box staff tick after
    reading that the project then has nothing left until the period renews).
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
    meaning = _below_spent(ctx, project, proj, new)
    if meaning is not None and form.get(BELOW_SPENT) != "yes":
        return problem(
            f"not saved: {meaning} To set it anyway, tick the box on the confirmation page "
            "that says you understand this.",
            user,
            ctx.site,
        )
    try:
        saved = write_policy_version(
            ctx.policy_file,
            lambda text: set_budget(text, project, new),
            site=ctx.site,
            store=ctx.store,
            user=user.name,
            via="console",
            project=project,
            change={"key": budget_key(new), "old": old.amount, "new": budget}
            | ({"below_spent": True} if meaning is not None else {}),
            saved=ctx.policy_saved,
        )
    except PolicyEditError as err:
        return problem(str(err), user, ctx.site)
    msg = f"saved {project} budget {budget:g}: policy version {saved.version}"
    return RedirectResponse("/?" + urlencode({"saved": msg}), status_code=303)


def _below_spent(ctx: ConsoleContext, project: str, proj: ProjectPolicy, new: Budget) -> str | None:
    """What a budget below the period's spend means, or None when it is not below."""
    account = Account.of(project, proj)
    spent = ctx.ledger.spent(project, proj.measure, account.period)
    if new.amount >= spent:
        return None
    until = (
        "for good (a lifetime budget never renews)"
        if proj.budget_period == "lifetime"
        else "until the next period starts"
    )
    return (
        f"a budget of {new.amount:g} {proj.measure} is below the {spent:g} {proj.measure} that "
        f"{project} has already spent in period {account.period}: it would have nothing left "
        f"{until}, and nothing already spent comes back (the numbers have left the site)."
    )


def _confirm(
    ctx: ConsoleContext, user: Staff, project: str, proj: ProjectPolicy, new: Budget
) -> Response:
    """What changing the budget would mean, and the form that confirms it."""
    account = Account.of(project, proj)
    spent = ctx.ledger.spent(project, proj.measure, account.period)
    below = _below_spent(ctx, project, proj, new)
    p = esc(project)
    meaning = (
        f"{esc(project)} has spent {spent:g} {proj.measure} in period {esc(account.period)}; "
        + (
            f"with a budget of {new.amount:g} it would have {new.amount - spent:g} left."
            if below is None
            else f'<strong class="bad" id="below-spent">{esc(below)}</strong>'
        )
    )
    tick = (
        ""
        if below is None
        else f'<p><label><input type="checkbox" name="{BELOW_SPENT}" value="yes" '
        f'id="below-spent-ok" required> I understand: {esc(project)} will have nothing left '
        "to spend.</label></p>"
    )
    body = (
        f'<p id="confirm-text">Change the {proj.measure} budget of <strong>{p}</strong> from '
        f"{account.total.amount:g} to {new.amount:g}? {meaning}</p>"
        f'<form method="post" action="/budgets/{p}">'
        f'<input type="hidden" name="budget" value="{new.amount!r}">'
        '<input type="hidden" name="confirm" value="yes">'
        f"{tick}"
        f'<button type="submit" id="confirm-budget-{p}">Confirm</button> '
        '<a href="/">Cancel</a></form>'
    )
    return page("Confirm the budget change", body, user, ctx.site)
