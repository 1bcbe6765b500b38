"""``varde node approve/deny/pending/console-user``: staff decisions on work waiting at a node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import NodeStateDir, existing_state, fail

node_admin = typer.Typer(
    pretty_exceptions_show_locals=False, help="Staff decisions on work waiting at a node."
)


def _staff_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "staff"


def _decide(
    state_dir: Path,
    request_id: str,
    *,
    approve: bool,
    reason: str,
    by: str,
    policy_file: Path | None = None,
) -> None:
    from nodes.policy_edits import record_project_approval
    from nodes.store import NodeStore
    from varde.errors import NotFound

    store = NodeStore.in_directory(existing_state(state_dir))
    version = ""
    try:
        pending = store.approvals.get(request_id)
        if approve and pending.kind == "project":
            # Approving a project changes what may leave the site: it is a new policy
            # version (approvals.approved_projects), which the running node reloads.
            if policy_file is None:
                fail(
                    f"{request_id} approves project {pending.project!r}, which is written into "
                    "the policy: pass --policy policies/<site>.yaml (the file the node runs with)"
                )
            version = record_project_approval(
                policy_file,
                project=pending.project,
                request_id=request_id,
                site=None,
                store=store,
                user=by,
                via="cli",
            ).version
        req = store.approvals.decide(request_id, approve=approve, by=by, reason=reason)
    except (NotFound, ValueError, OSError) as err:  # PolicyEditError is a ValueError
        fail(str(err))
    finally:
        store.close()
    if version:
        typer.echo(f"policy {policy_file} is now version {version}: {req.project} approved")
    verb = "approved" if approve else "denied"
    typer.echo(
        f"{req.id} {verb} ({req.kind} request of {req.researcher} for {req.project}); "
        + (
            f"the researcher may now submit the same {'job' if req.kind == 'training' else 'query'}"
            " again"
            if approve
            else f"the researcher will be told: {reason}"
        )
    )


ReasonOption = Annotated[str, typer.Option(help="Why (recorded; a denial's reason is shown).")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who decides (default: the login name).")
]


@node_admin.command("approve")
def node_approve(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="Request id, e.g. ap-1a2b3c4d.")],
    state_dir: NodeStateDir,
    reason: ReasonOption = "",
    by: ByOption = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="The node's policy file: approving a project adds it to "
            "approvals.approved_projects there (a new, validated policy version).",
        ),
    ] = None,
) -> None:
    """Approve a request waiting at this node (audited; a project approval edits the policy)."""
    _decide(
        state_dir,
        request_id,
        approve=True,
        reason=reason,
        by=by or _staff_name(),
        policy_file=policy,
    )


@node_admin.command("deny")
def node_deny(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="Request id, e.g. ap-1a2b3c4d.")],
    state_dir: NodeStateDir,
    reason: Annotated[str, typer.Option(help="Why; the researcher is told.")],
    by: ByOption = None,
) -> None:
    """Deny a request waiting at this node; the reason goes back to the researcher."""
    _decide(state_dir, request_id, approve=False, reason=reason, by=by or _staff_name())


@node_admin.command("pending")
def node_pending(
    state_dir: NodeStateDir,
    all_: Annotated[bool, typer.Option("--all", help="Decided requests too.")] = False,
    show: Annotated[
        str | None,
        typer.Option(
            "--show",
            metavar="ID",
            help="Show one request in full: the question (cohort, statistic, grid), its "
            "privacy and cost here, who asked, when, and the decision.",
        ),
    ] = None,
) -> None:
    """List approval requests waiting for a decision (one line each: id, who, the question)."""
    from nodes.approval_view import view_request
    from nodes.approvals import request_summary
    from nodes.store import NodeStore
    from varde.errors import NotFound

    store = NodeStore.in_directory(existing_state(state_dir))
    try:
        if show is not None:
            try:
                view = view_request(store.log, store.approvals.get(show))
            except NotFound as err:
                fail(f"{err.message} (`varde node pending --all` lists every request)")
            width = max(len(label) for label, _ in view.facts)
            typer.echo(f"{view.request.id}  {view.request.kind} request, {view.request.status}")
            for label, text in view.facts:
                typer.echo(f"  {label.ljust(width)}  {text}")
            typer.echo("  as the node will answer it:")
            typer.echo("\n".join("    " + line for line in view.question_json.splitlines()))
            return
        reqs = store.approvals.requests(None if all_ else "pending")
    finally:
        store.close()
    if not reqs:
        typer.echo("no pending requests" if not all_ else "no requests")
        return
    for r in reqs:
        eps = f" epsilon {r.epsilon:g}" if r.epsilon is not None else ""
        typer.echo(
            f"{r.id}  {r.status:8}  {r.kind:7}  {r.project}  by {r.researcher}{eps}  "
            f"since {r.created_at[:19]}  {r.why}"
            + (f"  [{r.decided_by}: {r.reason}]" if r.decided_at else "")
        )
        typer.echo(f"    {request_summary(r)}")
    typer.echo(f"details: varde node pending --show ID --state-dir {state_dir}")


@node_admin.command("console-user")
def node_console_user(
    name: Annotated[str, typer.Argument(help="Staff user name (lowercase).")],
    state_dir: NodeStateDir,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="VARDE_CONSOLE_PASSWORD",
            help="At least 10 characters (asked for when not given).",
        ),
    ],
) -> None:
    """Create (or reset) a staff login for this node's site console."""
    from nodes.console.auth import add_user, users_path

    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        add_user(users_path(state_dir), name, password)
    except ValueError as err:
        fail(str(err))
    typer.echo(f"console user {name} saved in {users_path(state_dir)}")
