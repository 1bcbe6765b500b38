"""The researcher's commands: ``varde query``, ``train``, ``trainings`` and ``schema``.

They talk to the gateway over HTTP through :class:`~varde_client.client.VardeClient`
and print tables; nothing here imports gateway or node code. What a command
raises (a bad file, an unreachable gateway, a refusal) becomes one redacted
``error:`` line in the ``varde`` command's group (``launcher/cli_errors.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from varde.redaction import redact

if TYPE_CHECKING:
    import pandas as pd

    from varde_client.frames import QueryResponse

client_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Ask the network questions (researcher side)."
)


def _fail(err: Exception) -> NoReturn:
    typer.echo(f"error: {redact(str(err))}", err=True)
    raise typer.Exit(code=2)


@client_app.command()
def schema(
    markdown: Annotated[bool, typer.Option(help="Print as a Markdown table.")] = True,
) -> None:
    """Print the common registry schema."""
    from varde.schema import render_markdown

    typer.echo(render_markdown())


Output = Annotated[
    str,
    typer.Option(
        "--format", help="table, csv or json.", rich_help_panel="Output", show_default=True
    ),
]
Build = "Build the query (instead of a file)"
Privacy = "Privacy (exactly one of --epsilon, --rho, --aggregate, --accuracy)"
DevNetwork = Annotated[
    bool,
    typer.Option(
        "--dev-network",
        envvar="VARDE_DEV_NETWORK",
        help="Allow plain http to a gateway that is not on this machine (a development network "
        "only: your token would cross it in clear text).",
    ),
]
FORMATS = ("table", "csv", "json")


@client_app.command()
def query(
    gateway: Annotated[
        str, typer.Option(envvar="VARDE_GATEWAY", help="e.g. http://127.0.0.1:8700")
    ],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN", help="Your researcher token.")],
    dev_network: DevNetwork = False,
    spec: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE]",
            help="Query document, JSON or YAML ('-' for stdin); or build one with the options.",
            show_default=False,
        ),
    ] = None,
    project: Annotated[str | None, typer.Option(rich_help_panel=Build)] = None,
    cohort: Annotated[
        str | None,
        typer.Option(
            help="e.g. 'topography^=C34 and stage=IV and age_at_diagnosis in 18..75'.",
            rich_help_panel=Build,
        ),
    ] = None,
    statistic: Annotated[
        str | None,
        typer.Option(
            help="count (the default), histogram, sum, mean, quantile, crosstab or survival.",
            rich_help_panel=Build,
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="group_by: public categorical fields, a,b.", rich_help_panel=Build),
    ] = None,
    field: Annotated[
        str | None,
        typer.Option(
            help="The statistic's field (histogram, sum, mean, quantile; crosstab: a,b).",
            rich_help_panel=Build,
        ),
    ] = None,
    bins: Annotated[
        str | None,
        typer.Option(
            help="Edges, e.g. 0,18,40,65,120: a numeric histogram's bins, a quantile's grid.",
            rich_help_panel=Build,
        ),
    ] = None,
    lower: Annotated[
        float | None, typer.Option(help="sum/mean: declared lower bound.", rich_help_panel=Build)
    ] = None,
    upper: Annotated[
        float | None, typer.Option(help="sum/mean: declared upper bound.", rich_help_panel=Build)
    ] = None,
    alphas: Annotated[
        str | None, typer.Option(help="quantile: e.g. 0.25,0.5,0.75.", rich_help_panel=Build)
    ] = None,
    months: Annotated[
        int | None, typer.Option(help="survival: horizon in months.", rich_help_panel=Build)
    ] = None,
    interval: Annotated[
        int | None, typer.Option(help="survival: months per interval.", rich_help_panel=Build)
    ] = None,
    sites: Annotated[
        str | None, typer.Option(help="Only these sites, a,b (default all).", rich_help_panel=Build)
    ] = None,
    unit: Annotated[
        str | None,
        typer.Option(
            help="What is counted: tumours (default) or patients (each once).",
            rich_help_panel=Build,
        ),
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Epsilon each site spends.", rich_help_panel=Privacy)
    ] = None,
    rho: Annotated[
        float | None, typer.Option(help="zCDP rho each site spends.", rich_help_panel=Privacy)
    ] = None,
    aggregate: Annotated[
        bool,
        typer.Option("--aggregate", help="Non-DP counts (where allowed).", rich_help_panel=Privacy),
    ] = False,
    accuracy: Annotated[
        float | None,
        typer.Option(
            help="Target: +-this at 95% per number; each site spends the least budget for it.",
            rich_help_panel=Privacy,
        ),
    ] = None,
    zcdp: Annotated[
        bool, typer.Option("--zcdp", help="With --accuracy: spend rho.", rich_help_panel=Privacy)
    ] = False,
    cohort_size: Annotated[
        int | None,
        typer.Option(help="With --accuracy, survival: patients per site.", rich_help_panel=Privacy),
    ] = None,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="Only show what each site would charge and the expected +-95% error; "
            "nothing is charged.",
            rich_help_panel="Output",
        ),
    ] = False,
    fmt: Output = "table",
) -> None:
    """Run one query (or --preview it) and print per-site and network results.

    The query is a file (JSON or YAML, '-' for stdin) or built from the options:

    varde query --project nsclc-feasibility --cohort "topography^=C34 and stage=IV"
    --statistic histogram --field egfr --epsilon 0.5
    """
    from varde_client import VardeClient
    from varde_client.query_file import read_query_file
    from varde_client.query_flags import QueryFlagError, QueryFlags, build_query

    if fmt not in FORMATS:
        raise QueryFlagError(f"--format {fmt!r} is not known — use table, csv or json")
    flags = QueryFlags(
        project=project,
        cohort=cohort,
        statistic=statistic,
        by=by,
        field=field,
        bins=bins,
        lower=lower,
        upper=upper,
        alphas=alphas,
        months=months,
        interval=interval,
        sites=sites,
        unit=unit,
        epsilon=epsilon,
        rho=rho,
        aggregate=aggregate,
        accuracy=accuracy,
        zcdp=zcdp,
        cohort_size=cohort_size,
    )
    if spec is not None and flags.given():
        raise QueryFlagError(
            f"give a query file or build the query with options, not both "
            f"(file {spec!r} and {', '.join(flags.given())})"
        )
    body = read_query_file(spec) if spec is not None else build_query(flags)
    with VardeClient(gateway, token, dev_network=dev_network) as client:
        if preview:
            typer.echo(_preview_text(client.preview(body), fmt))
        else:
            typer.echo(_result_text(client.query(body), fmt))


def _result_text(res: QueryResponse, fmt: str) -> str:
    from varde_client.report import render

    if fmt == "json":
        return json.dumps(res.raw, indent=2, ensure_ascii=False)
    if fmt == "csv":
        return str(res.frame().to_csv(index=False)).rstrip("\n")
    return render(res)


def _preview_text(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "json":
        return str(frame.to_json(orient="records", indent=2))
    if fmt == "csv":
        return str(frame.to_csv(index=False)).rstrip("\n")
    return str(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))


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
    dev_network: DevNetwork = False,
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
    with VardeClient(gateway, token, dev_network=dev_network) as client:
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
    dev_network: DevNetwork = False,
) -> None:
    """List your training jobs, newest first."""
    from varde_client import VardeClient, VardeHTTPError

    with VardeClient(gateway, token, dev_network=dev_network) as client:
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
