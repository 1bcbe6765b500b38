"""The policy page: the version in force, its text, and every load, change and refusal.

Why staff need it: the policy decides what may leave the hospital, so the
console shows the exact text in force (as recorded in the audit trail when it
was loaded) next to its history, refused edits included.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from nodes.console.deps import Context, StaffUser
from nodes.console.pages import esc, page, table

__all__ = ["router"]

router = APIRouter()

_POLICY_KINDS = ("policy_loaded", "policy_changed", "policy_refused")


@router.get("/policy")
def policy_page(ctx: Context, user: StaffUser) -> Response:
    """The policy in force and its history, newest first."""
    pol = ctx.policy()
    history = [e for e in ctx.store.log.entries(newest_first=True) if e.kind in _POLICY_KINDS]
    current_text = next(
        (
            str(e.data.get("text", ""))
            for e in history
            if e.kind != "policy_refused" and e.data.get("version") == pol.version
        ),
        "",
    )
    rows = [
        [
            esc(e.at.strftime("%Y-%m-%d %H:%M:%S")),
            esc(e.kind),
            esc(e.data.get("version", e.data.get("version_in_force", ""))),
            esc("; ".join(map(str, e.data.get("changes", e.data.get("problems", []))))),
        ]
        for e in history
    ]
    body = (
        f"<p>Version <code>{esc(pol.version)}</code> is in force.</p>"
        f'<pre id="policy-text">{esc(current_text or pol.model_dump_json(indent=2))}</pre>'
        "<h2>History</h2>"
        + table("policy-history", ["at (UTC)", "event", "version", "changes / problems"], rows)
    )
    return page("Policy", body, user, ctx.site)
