"""``varde policy``: check, compare and document site policies (policies as code)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

policy_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Check and compare site policies (policies as code)."
)


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="The policy YAML file.")],
    site: Annotated[
        str | None, typer.Option(help="Require the policy to be for this site.")
    ] = None,
) -> None:
    """Validate a policy file; every problem is printed with its YAML line (exit 1 if any)."""
    from nodes.policy_check import check_policy_file

    result = check_policy_file(file, site=site)
    typer.echo(result.explain())
    if not result.ok:
        raise typer.Exit(code=1)


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="The policy in force.")],
    new: Annotated[Path, typer.Argument(help="The proposed policy.")],
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="The node's state directory: each budget change then shows what the "
            "project has already spent in its current period (from the node's ledger).",
        ),
    ] = None,
) -> None:
    """Show what replacing OLD by NEW does to budgets and exposure (both must be valid)."""
    from nodes.policy_check import check_policy_file
    from nodes.policy_diff import render_diff

    results = [check_policy_file(old), check_policy_file(new)]
    bad = [r for r in results if not r.ok]
    if bad:
        for r in bad:
            typer.echo(r.explain(), err=True)
        raise typer.Exit(code=2)
    assert results[0].policy is not None and results[1].policy is not None
    if state_dir is None:
        typer.echo(render_diff(results[0].policy, results[1].policy))
        return
    from nodes.ledger import Ledger
    from nodes.periods import BudgetPeriod, period_key
    from varde.budget import Measure
    from varde.envelope import utcnow

    if not (state_dir / "ledger.sqlite").exists():
        typer.echo(f"error: no node ledger at {state_dir / 'ledger.sqlite'}", err=True)
        raise typer.Exit(code=2)
    ledger = Ledger.in_directory(state_dir)
    now = utcnow()

    def spent(project: str, measure: Measure, period: BudgetPeriod) -> tuple[float, str]:
        key = period_key(period, now)
        return ledger.spent(project, measure, key), key

    try:
        typer.echo(render_diff(results[0].policy, results[1].policy, spent=spent))
    finally:
        ledger.close()


@policy_app.command("schema")
def policy_schema() -> None:
    """Print the policy schema as Markdown (``varde policy schema > docs/POLICY.md``)."""
    from nodes.policy_docs import render_policy_markdown

    sys.stdout.write(render_policy_markdown())
