"""The audit trail page: the node's append-only log, searchable by text and kind.

Why in the console: staff answer "what left, for whom, and who decided" from
here without shell access to the node's database.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from nodes.console.deps import Context, StaffUser
from nodes.console.pages import esc, page, table

__all__ = ["router"]

router = APIRouter()


@router.get("/audit")
def audit_page(
    ctx: Context, user: StaffUser, q: str = "", kind: str = "", limit: int = 200
) -> Response:
    """Entries matching ``q`` and ``kind``, newest first (at most ``limit``, 1 to 2000)."""
    entries = ctx.store.log.entries(
        search=q or None, kind=kind or None, newest_first=True, limit=max(1, min(limit, 2000))
    )
    rows = [
        [
            str(e.id),
            esc(e.at.strftime("%Y-%m-%d %H:%M:%S")),
            esc(e.kind),
            esc(e.query_id),
            esc(e.project),
            f"<code>{esc(e.detail[:400])}</code>",
        ]
        for e in entries
    ]
    body = (
        '<form method="get" action="/audit">'
        f'<label>Search <input name="q" value="{esc(q)}"></label> '
        f'<label>Kind <input name="kind" value="{esc(kind)}"></label> '
        '<button type="submit">Filter</button></form>'
        f"<p>{len(entries)} entries, newest first.</p>"
        + table("audit", ["id", "at (UTC)", "kind", "query", "project", "detail"], rows)
    )
    return page("Audit trail", body, user, ctx.site)
