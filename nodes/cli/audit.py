"""``varde audit``: verify and export a node's tamper-evident audit trail."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import NodeStateDir, existing_state, fail, node_public_key

audit_app = typer.Typer(
    pretty_exceptions_show_locals=False,
    help="Verify and export a node's tamper-evident audit trail.",
)


@audit_app.command("verify")
def audit_verify(state_dir: NodeStateDir) -> None:
    """Check the hash chain, the head and every signed checkpoint; exit 1 naming where it breaks."""
    from nodes.store import NodeStore

    store = NodeStore.in_directory(existing_state(state_dir))
    try:
        public_key = node_public_key(state_dir)
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
        fail("--format must be csv or json")
    when = parse_since(since)
    store = NodeStore.in_directory(existing_state(state_dir))
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


@audit_app.command("report")
def audit_report(
    state_dir: NodeStateDir,
    by: Annotated[str, typer.Option(help="researcher or project.")] = "researcher",
    since: Annotated[
        str | None,
        typer.Option(
            help="Only charges and releases at or after this ISO date/time (UTC if bare)."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or csv.")] = "table",
) -> None:
    """Who spent this site's budget: spend per researcher or project, by measure, with totals.

    Read from the audit trail (verify it first with ``varde audit verify``): the
    amount charged in each measure, the number of charges, of releases (queries,
    training rounds, evaluations) and of free repeats, and the first and last of them.
    """
    from nodes.spend import RELEASE_KINDS, By, render_csv, render_table, spend_report
    from nodes.store import NodeStore

    if by not in {"researcher", "project"}:
        fail(f"--by must be researcher or project, not {by!r}")
    if fmt not in {"table", "csv"}:
        fail(f"--format must be table or csv, not {fmt!r}")
    when = parse_since(since)
    store = NodeStore.in_directory(existing_state(state_dir))
    try:
        entries = store.log.entries(kinds=RELEASE_KINDS)
    finally:
        store.close()
    key: By = "researcher" if by == "researcher" else "project"
    rows = spend_report(entries, by=key, since=when)
    if fmt == "csv":
        sys.stdout.write(render_csv(rows, by=key))
        return
    period = f"since {when.isoformat()}" if when is not None else "over the whole trail"
    typer.echo(f"privacy budget spent at this site by {by}, {period}:")
    typer.echo(render_table(rows, by=key))
