"""The audit trail page: the node's append-only log, filtered, paged, one readable line per entry.

Why in the console: staff and their data-protection officer answer "what
left, for whom, and who decided" from here without shell access to the node's
database. Each row shows a one-line summary (the question asked, what was
charged or released, who logged in) and opens to the entry's full detail;
long values wrap, so no row is wider than the page. Filters: a kind from the
kinds the trail holds, the researcher an entry names, the project, a date
range and free text; pages of :data:`PAGE` entries, newest first.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import Response

from nodes.audit import AuditEntry
from nodes.console.deps import Context, StaffUser
from nodes.console.pages import esc, page, problem, table

__all__ = ["PAGE", "entry_summary", "router"]

router = APIRouter()

PAGE = 50
"""Entries per page."""


def _amount(data: dict[str, Any]) -> str:
    if data.get("measure") and data.get("amount") is not None:
        return f"{float(data['amount']):.6g} {data['measure']}"
    return ""


def entry_summary(e: AuditEntry) -> str:
    """One line saying what an entry records (plain text; the detail holds the rest).

    >>> from nodes.audit import AuditEntry
    >>> import datetime as dt
    >>> e = AuditEntry(1, dt.datetime.now(dt.UTC), "charged", "q1", "p",
    ...     '{"what":"query","measure":"epsilon","amount":0.5,"researcher":"alice",'
    ...     '"summary":"count where stage = IV; epsilon 0.5 (dp)","spent_after":1.5}', "", "")
    >>> entry_summary(e)
    'alice: paid 0.5 epsilon for a query (1.5 spent after) - count where stage = IV; epsilon 0.5 (dp)'
    """  # noqa: E501
    d = e.data
    who = f"{d['researcher']}: " if d.get("researcher") else ""
    question = f" - {d['summary']}" if d.get("summary") else ""
    kind = e.kind
    if kind == "charged":
        after = f" ({float(d['spent_after']):.6g} spent after)" if "spent_after" in d else ""
        return f"{who}paid {_amount(d)} for a {d.get('what', 'release')}{after}{question}"
    if kind == "released":
        cells = d.get("n_cells", len(d.get("cells", [])))
        paid = _amount(d) or "no DP budget (aggregate)"
        return f"{who}released {cells} cell(s), {paid}, {d.get('mechanism', '')}{question}"
    if kind == "previewed":
        price = f"would cost {_amount(d)}" if _amount(d) else "aggregate preview"
        return f"{who}{price}{question}"
    if kind in {"work_received", "released_from_cache"}:
        verb = "asked" if kind == "work_received" else "got a repeat, nothing charged"
        return f"{who}{verb}{question}"
    if kind.startswith("approval_"):
        by = f" by {d['by']}" if d.get("by") else ""
        why = f" ({d.get('reason') or d.get('why')})" if d.get("reason") or d.get("why") else ""
        return f"{d.get('request', '')} {kind.removeprefix('approval_')}{by}{why}{question}"
    if kind in {"console_login", "console_lockout"}:
        if kind == "console_lockout" or d.get("locked"):
            return f"{d.get('user', '?')}: locked out"
        return f"{d.get('user', '?')}: {'logged in' if d.get('ok') else 'wrong password'}"
    if d.get("message"):
        return f"{who}{d['message']}{question}"
    plain = ", ".join(
        f"{k}={v}" for k, v in d.items() if not isinstance(v, dict | list) and k != "text"
    )
    return (plain[:240] + "...") if len(plain) > 240 else plain


def _day(value: str, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
    except ValueError as err:
        raise ValueError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from err


def _row(e: AuditEntry) -> list[str]:
    detail = json.dumps(e.data, indent=2, ensure_ascii=False, sort_keys=True)
    return [
        str(e.id),
        esc(e.at.strftime("%Y-%m-%d %H:%M:%S")),
        esc(e.kind),
        esc(e.project),
        esc(entry_summary(e)),
        f"<details><summary>query {esc(e.query_id) or '-'}, hash {esc(e.hash[:12])}</summary>"
        f"<pre>{esc(detail)}</pre></details>",
    ]


def _select(name: str, chosen: str, options: list[str], everything: str) -> str:
    opts = [f'<option value=""{" selected" if not chosen else ""}>{esc(everything)}</option>']
    opts += [
        f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o)}</option>'
        for o in options
    ]
    return f'<select name="{name}" id="filter-{name}">{"".join(opts)}</select>'


@router.get("/audit")
def audit_page(
    ctx: Context,
    user: StaffUser,
    q: str = "",
    kind: str = "",
    researcher: str = "",
    project: str = "",
    since: str = "",
    until: str = "",
    before: int | None = None,
) -> Response:
    """Entries matching every filter, newest first, :data:`PAGE` a page (``before``: older than)."""
    try:
        start, stop = _day(since, "from"), _day(until, "to")
    except ValueError as err:
        return problem(str(err), user, ctx.site)
    filters: dict[str, Any] = {
        "search": q or None,
        "kind": kind or None,
        "researcher": researcher or None,
        "project": project or None,
        "since": start,
        "until": stop + dt.timedelta(days=1) if stop is not None else None,  # "to" is inclusive
    }
    total = ctx.store.log.count(**filters)
    entries = ctx.store.log.entries(**filters, before_id=before, newest_first=True, limit=PAGE)
    projects = sorted(set(ctx.policy().projects) | ({project} if project else set()))
    shown = {"q": q, "kind": kind, "researcher": researcher, "project": project}
    kept = {k: v for k, v in {**shown, "since": since, "until": until}.items() if v}
    older = (
        f'<a id="older" href="/audit?{esc(urlencode({**kept, "before": entries[-1].id}))}">'
        "Older entries</a>"
        if len(entries) == PAGE and ctx.store.log.count(**filters, before_id=entries[-1].id)
        else ""
    )
    newest = (
        f'<a id="newest" href="/audit?{esc(urlencode(kept))}">Newest entries</a>'
        if before is not None
        else ""
    )
    body = (
        '<form method="get" action="/audit" class="filters">'
        f"<label>Kind {_select('kind', kind, ctx.store.log.kinds(), 'every kind')}</label>"
        f'<label>Researcher <input name="researcher" value="{esc(researcher)}" size="12"></label>'
        f"<label>Project {_select('project', project, projects, 'every project')}</label>"
        f'<label>From <input type="date" name="since" value="{esc(since)}"></label>'
        f'<label>To <input type="date" name="until" value="{esc(until)}"></label>'
        f'<label>Text <input name="q" value="{esc(q)}" size="14"></label>'
        '<button type="submit">Filter</button> <a href="/audit">Clear</a></form>'
        f'<p id="audit-count">{total} entries match, newest first; showing {len(entries)}'
        + (f" older than entry {before}" if before is not None else "")
        + f". {newest} {older}</p>"
        + table(
            "audit",
            ["id", "at (UTC)", "kind", "project", "summary", "detail"],
            [_row(e) for e in entries],
            css="wide",
            widths=["4em", "10em", "11em", "10em", "auto", "16em"],
        )
        + "<p>Every entry is hash-chained and the node signs checkpoints: "
        "<code>varde audit verify --state-dir DIR</code> proves nothing was edited.</p>"
    )
    return page("Audit trail", body, user, ctx.site)
