"""The spend page: who spent this site's privacy budget, per researcher or project, over time.

Why: "who spent this project's budget, on what?" is the data-protection
officer's first question. The page shows the same report as ``varde audit
report`` (:mod:`nodes.spend`, read from the audit trail) and, per measure, a
chart of cumulative spend with dated axes and a legend; ``/spend.csv`` is the
same table for a spreadsheet.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import Response

from nodes.console.charts import spend_chart
from nodes.console.deps import Context, StaffUser
from nodes.console.pages import HEADERS, esc, page, problem, table
from nodes.spend import RELEASE_KINDS, TOTAL, By, render_csv, spend_report, spend_series
from varde.envelope import utcnow

__all__ = ["router"]

router = APIRouter()


def _since(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
    except ValueError as err:
        raise ValueError(f"since: {value!r} is not a date (YYYY-MM-DD)") from err


def _by(value: str) -> By:
    if value == "researcher":
        return "researcher"
    if value == "project":
        return "project"
    raise ValueError(f"spend is shown by researcher or by project, not {value!r}")


@router.get("/spend")
def spend_page(ctx: Context, user: StaffUser, by: str = "researcher", since: str = "") -> Response:
    """The spend report and its charts (``by`` researcher or project, ``since`` a date)."""
    try:
        key, start = _by(by), _since(since)
    except ValueError as err:
        return problem(str(err), user, ctx.site)
    entries = ctx.store.log.entries(kinds=RELEASE_KINDS)
    rows = spend_report(entries, by=key, since=start)
    series = spend_series(entries, by=key, since=start)
    cells = [
        [
            f"<strong>{esc(r.key)}</strong>" if r.key == TOTAL else esc(r.key),
            esc(r.measure),
            "" if r.measure == "none" else f"{r.spent:.6g}",
            str(r.charges),
            str(r.releases),
            str(r.repeats),
            esc(r.first.strftime("%Y-%m-%d %H:%M") if r.first else ""),
            esc(r.last.strftime("%Y-%m-%d %H:%M") if r.last else ""),
        ]
        for r in rows
    ]
    now = utcnow()
    charts = "".join(
        f"<figure><figcaption>{esc(measure)} spent per {key}, cumulative</figcaption>"
        + spend_chart(
            lines,
            chart_id=f"spend-chart-{measure}",
            y_label=f"{measure} spent",
            start=start,
            end=now,
        )
        + "</figure>"
        for measure, lines in sorted(series.items())
    )
    other = "project" if key == "researcher" else "researcher"
    query = urlencode({"by": key, **({"since": since} if since else {})})
    body = (
        '<form method="get" action="/spend" class="filters">'
        '<label>By <select name="by" id="spend-by">'
        + "".join(
            f'<option value="{o}"{" selected" if o == key else ""}>{o}</option>'
            for o in ("researcher", "project")
        )
        + "</select></label>"
        f'<label>Since <input type="date" name="since" value="{esc(since)}"></label>'
        '<button type="submit">Show</button></form>'
        f"<p>Privacy budget spent at this site per {key}"
        + (f" since {esc(since)}" if since else " over the whole audit trail")
        + ". Amounts add up only within one measure (epsilon for pure DP, rho for zCDP). "
        "<em>Releases</em> put new numbers out (queries, training rounds, evaluations); "
        "<em>repeats</em> returned a cached release again, at no cost. "
        f'Also: <a href="/spend?by={other}">by {other}</a>, '
        f'<a id="spend-csv" href="/spend.csv?{esc(query)}">CSV</a>; the same report: '
        f"<code>varde audit report --by {key} --state-dir DIR</code>.</p>"
        + table(
            "spend",
            [key, "measure", "spent", "charges", "releases", "repeats", "first", "last (UTC)"],
            cells,
        )
        + (charts or "<p>Nothing was charged in this period.</p>")
    )
    return page("Spend", body, user, ctx.site)


@router.get("/spend.csv")
def spend_csv(ctx: Context, user: StaffUser, by: str = "researcher", since: str = "") -> Response:
    """The spend report as CSV."""
    try:
        key, start = _by(by), _since(since)
    except ValueError as err:
        return problem(str(err), user, ctx.site)
    rows = spend_report(ctx.store.log.entries(kinds=RELEASE_KINDS), by=key, since=start)
    name = f"{ctx.site}-spend-by-{key}.csv"
    return Response(
        render_csv(rows, by=key),
        media_type="text/csv",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )
