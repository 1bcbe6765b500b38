"""The researcher's commands: ``varde query``, ``train``, ``trainings`` and ``schema``.

They talk to the gateway over HTTP through :class:`~varde_client.client.VardeClient`
and print tables; nothing here imports gateway or node code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

client_app = typer.Typer(help="Ask the network questions (researcher side).")


def _fail(err: Exception) -> NoReturn:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@client_app.command()
def schema(
    markdown: Annotated[bool, typer.Option(help="Print as a Markdown table.")] = True,
) -> None:
    """Print the common registry schema."""
    from varde.schema import render_markdown

    typer.echo(render_markdown())


@client_app.command()
def query(
    spec: Annotated[Path, typer.Argument(help="Query JSON file ('-' for stdin).")],
    gateway: Annotated[str, typer.Option(envvar="VARDE_GATEWAY")],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN")],
) -> None:
    """Run one query and print per-site and network tables."""
    from varde_client import VardeClient, VardeHTTPError
    from varde_client.report import render

    text = sys.stdin.read() if str(spec) == "-" else spec.read_text()
    with VardeClient(gateway, token) as client:
        try:
            res = client.query(json.loads(text))
        except VardeHTTPError as err:
            _fail(err)
        typer.echo(render(res))


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@client_app.command()
def train(
    project: Annotated[str, typer.Option(help="Project the job spends budget from.")],
    features: Annotated[str, typer.Option(help="Comma-separated schema fields, e.g. age,stage.")],
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")],
    gateway: Annotated[str, typer.Option(envvar="VARDE_GATEWAY")],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN")],
    epsilon: Annotated[
        float | None, typer.Option(help="Epsilon per site for the whole job (or --rho).")
    ] = None,
    rho: Annotated[
        float | None, typer.Option(help="zCDP rho per site for the whole job (or --epsilon).")
    ] = None,
    model: Annotated[str, typer.Option(help="logistic or cox (as the gateway supports).")] = (
        "logistic"
    ),
    sites: Annotated[str | None, typer.Option(help="Comma-separated sites (default all).")] = None,
    min_sites: Annotated[int | None, typer.Option(min=1, help="Fail below this many.")] = None,
    delta: Annotated[float | None, typer.Option(help="Delta per site (default 1e-6).")] = None,
    clip: Annotated[float | None, typer.Option(help="Per-example gradient L2 clip.")] = None,
    local_steps: Annotated[int | None, typer.Option(min=1, help="Steps per round.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Gradient step size.")] = None,
    secure_aggregation: Annotated[
        str | None,
        typer.Option(help="Flower SecAgg+: auto (on with >= 3 sites), on or off."),
    ] = None,
    evaluation_epsilon: Annotated[
        float | None,
        typer.Option(help="Part of epsilon for DP metrics on held-out patients (0: none)."),
    ] = None,
    evaluation_rho: Annotated[
        float | None,
        typer.Option(help="With --rho: part of rho for DP metrics on held-out patients."),
    ] = None,
    holdout: Annotated[
        float | None, typer.Option(help="Share of each site's patients held out for metrics.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between polls.")] = 2.0,
    timeout: Annotated[float, typer.Option(min=1, help="Stop waiting after this long.")] = 3600.0,
) -> None:
    """Train a model across the sites (federated, DP at each site); --wait shows its progress.

    Give the job's privacy budget per site as exactly one of --epsilon or --rho
    (zCDP); each site charges it in the measure its project accounts in.

    Exit code 0 when the job finished (or was accepted, without --wait), 1 when it
    failed or is still running at --timeout, 2 when the gateway refused it.
    """
    from pydantic import ValidationError
    from rich.console import Console

    from varde_client import TrainingProgress, TrainingTimeout, VardeClient, VardeHTTPError
    from varde_client.report import print_training

    if (epsilon is None) == (rho is None):
        _fail(ValueError("give exactly one of --epsilon or --rho (zCDP)"))
    fields: dict[str, Any] = {
        "project": project,
        "features": _csv(features) or [],
        "rounds": rounds,
        "model": model,
    }
    optional = {
        "epsilon": epsilon,
        "rho": rho,
        "sites": _csv(sites),
        "min_sites": min_sites,
        "delta": delta,
        "clip": clip,
        "local_steps": local_steps,
        "learning_rate": learning_rate,
        "secure_aggregation": secure_aggregation,
        "evaluation_epsilon": evaluation_epsilon,
        "evaluation_rho": evaluation_rho,
        "holdout": holdout,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    err_console = Console(stderr=True)
    out = Console()
    with VardeClient(gateway, token) as client:
        try:
            result = client.train(fields, wait=False)
        except ValidationError as err:
            _fail(
                ValueError(
                    "; ".join(
                        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
                    )
                )
            )
        except VardeHTTPError as err:
            _fail(err)
        if not wait:
            typer.echo(f"training job {result.id} {result.state}")
            return
        try:
            with TrainingProgress(err_console) as bar:
                result = client.wait_training(
                    result.id, progress=bar, poll_s=poll, timeout_s=timeout
                )
        except TrainingTimeout as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=1) from None
        except VardeHTTPError as err:
            _fail(err)
    print_training(result, out)
    if not result.ok:
        typer.echo(f"error: training job {result.id} failed: {result.status.detail}", err=True)
        raise typer.Exit(code=1)


@client_app.command()
def trainings(
    gateway: Annotated[str, typer.Option(envvar="VARDE_GATEWAY")],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN")],
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """List your training jobs, newest first."""
    from varde_client import VardeClient, VardeHTTPError

    with VardeClient(gateway, token) as client:
        try:
            frame = client.trainings(limit)
        except VardeHTTPError as err:
            _fail(err)
    if frame.empty:
        typer.echo("no training jobs")
        return
    cols = ["id", "created_at", "project", "model", "state", "round", "rounds", "epsilon", "rho"]
    cols = [c for c in [*cols, "detail"] if c in frame.columns]
    typer.echo(frame[cols].to_string(index=False))
