"""Staff commands of a node: ``varde policy``, ``varde audit`` and ``varde node approve/deny``.

They work on local files only (a policy file, a node's state directory) and
never talk to the gateway, so registry staff can check, prove and decide on
their own machine. ``varde/cli.py`` registers the apps defined here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

policy_app = typer.Typer(help="Check and compare site policies (policies as code).")
audit_app = typer.Typer(help="Verify and export a node's tamper-evident audit trail.")
node_admin = typer.Typer(help="Staff decisions on work waiting at a node.")

NodeStateDir = Annotated[
    Path, typer.Option("--state-dir", help="The node's state directory (key, ledger, audit).")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _existing_state(state_dir: Path) -> Path:
    if not (state_dir / "node.sqlite").exists():
        _fail(f"no node state at {state_dir} (expected {state_dir / 'node.sqlite'})")
    return state_dir


def _node_public_key(state_dir: Path) -> str | None:
    from nodes.enrollment import key_path
    from varde.crypto import load_private_key, public_key_b64

    path = key_path(state_dir)
    return public_key_b64(load_private_key(path)) if path.exists() else None


@audit_app.command("verify")
def audit_verify(state_dir: NodeStateDir) -> None:
    """Check the hash chain, the head and every signed checkpoint; exit 1 naming where it breaks."""
    from nodes.store import NodeStore

    store = NodeStore.in_directory(_existing_state(state_dir))
    try:
        public_key = _node_public_key(state_dir)
        report = store.log.verify(public_key)
    finally:
        store.close()
    if not report.ok:
        first = report.first
        typer.echo(f"audit trail BROKEN at entry {first.entry_id if first else '?'}")
        for problem in sorted(report.problems, key=lambda p: p.entry_id):
            typer.echo(f"  {problem}")
        raise typer.Exit(code=1)
    unsigned = report.unsigned
    typer.echo(
        f"audit trail OK: {report.entries} entries, {report.checkpoints} signed checkpoints, "
        f"signed up to entry {report.last_signed_id}"
        + (f" ({unsigned} later entries not signed yet)" if unsigned > 0 else "")
        + ("" if public_key else " (no node key here: signatures checked, signer not pinned)")
    )


def parse_since(value: str | None) -> dt.datetime | None:
    """An ISO date or datetime; a value without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise typer.BadParameter(f"{value!r} is not an ISO date or datetime") from err
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@audit_app.command("export")
def audit_export(
    state_dir: NodeStateDir,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "json",
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this ISO date/time (UTC if bare).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only entries of this kind.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Export audit entries (with their hashes) for the data protection officer."""
    from nodes.store import NodeStore

    if fmt not in {"csv", "json"}:
        _fail("--format must be csv or json")
    when = parse_since(since)
    store = NodeStore.in_directory(_existing_state(state_dir))
    try:
        entries = store.log.entries(since=when, kind=kind)
    finally:
        store.close()
    buf = io.StringIO()
    if fmt == "json":
        json.dump([e.as_dict() for e in entries], buf, indent=2, ensure_ascii=False)
        buf.write("\n")
    else:
        cols = ["id", "at", "kind", "query_id", "project", "detail", "prev_hash", "hash"]
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        for e in entries:
            writer.writerow(
                [e.id, e.at_text, e.kind, e.query_id, e.project, e.detail, e.prev_hash, e.hash]
            )
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        out.write_text(buf.getvalue())
        typer.echo(f"{len(entries)} entries -> {out}", err=True)


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="The policy YAML file.")],
    site: Annotated[
        str | None, typer.Option(help="Require the policy to be for this site.")
    ] = None,
) -> None:
    """Validate a policy file; every problem is printed with its YAML line (exit 1 if any)."""
    from nodes.policy_tools import check_policy_file

    result = check_policy_file(file, site=site)
    typer.echo(result.explain())
    if not result.ok:
        raise typer.Exit(code=1)


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="The policy in force.")],
    new: Annotated[Path, typer.Argument(help="The proposed policy.")],
) -> None:
    """Show what replacing OLD by NEW does to budgets and exposure (both must be valid)."""
    from nodes.policy_tools import check_policy_file, render_diff

    results = [check_policy_file(old), check_policy_file(new)]
    bad = [r for r in results if not r.ok]
    if bad:
        for r in bad:
            typer.echo(r.explain(), err=True)
        raise typer.Exit(code=2)
    assert results[0].policy is not None and results[1].policy is not None
    typer.echo(render_diff(results[0].policy, results[1].policy))


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy schema as Markdown (``varde policy schema > docs/POLICY.md``)."""
    from nodes.policy_tools import render_policy_markdown

    sys.stdout.write(render_policy_markdown())


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

    store = NodeStore.in_directory(_existing_state(state_dir))
    version = ""
    try:
        pending = store.approvals.get(request_id)
        if approve and pending.kind == "project":
            # Approving a project changes what may leave the site: it is a new policy
            # version (approvals.approved_projects), which the running node reloads.
            if policy_file is None:
                _fail(
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
        _fail(str(err))
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
) -> None:
    """List approval requests waiting for a decision."""
    from nodes.store import NodeStore

    store = NodeStore.in_directory(_existing_state(state_dir))
    try:
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
        _fail(str(err))
    typer.echo(f"console user {name} saved in {users_path(state_dir)}")
