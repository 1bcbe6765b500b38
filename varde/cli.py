"""``varde``: one console command for the whole project.

Subcommands import their side lazily, so ``varde node run`` on a hospital
machine never loads gateway code and vice versa.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nodes.cli import audit_app, node_admin, policy_app  # imports only typer; commands are lazy
from varde.errors import VardeError

app = typer.Typer(
    help="Varde: federated, differentially private cancer-registry queries.", no_args_is_help=True
)
gateway_app = typer.Typer(help="Run the central gateway.", no_args_is_help=True)
node_app = typer.Typer(help="Run a hospital node.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Researchers, projects and enrollment tokens (gateway side).", no_args_is_help=True
)
project_app = typer.Typer(help="Projects.", no_args_is_help=True)
researcher_app = typer.Typer(help="Researchers.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
app.add_typer(node_app, name="node")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(project_app, name="project")
admin_app.add_typer(researcher_app, name="researcher")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
node_app.registered_commands += node_admin.registered_commands  # approve/deny/pending/console-user

StateDir = Annotated[Path, typer.Option("--state-dir", help="Gateway state directory (DB, key).")]


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@app.command()
def synth(
    site: Annotated[list[str], typer.Option("--site", help="Site name (repeat for several).")],
    rows: Annotated[int, typer.Option(min=1, help="Tumours per site.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible output).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("data"),
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or both.")] = "parquet",
) -> None:
    """Write seeded synthetic registries in the common schema."""
    from nodes.synth import generate_registry, write_registry

    if fmt not in {"parquet", "csv", "both"}:
        _fail(ValueError("--format must be parquet, csv or both"))
    out.mkdir(parents=True, exist_ok=True)
    for name in site:
        frame = generate_registry(name, rows, seed=seed)
        for f in ("parquet", "csv") if fmt == "both" else (fmt,):
            path = write_registry(frame, out / f"{name}.{f}", f)
            typer.echo(f"{name}: {len(frame):,} tumours -> {path}")


@app.command()
def schema(
    markdown: Annotated[bool, typer.Option(help="Print as a Markdown table.")] = True,
) -> None:
    """Print the common registry schema."""
    from varde.schema import render_markdown

    typer.echo(render_markdown())


SuperLinkFile = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="With --with-superlink: TLS (PEM); see above."),
]


@gateway_app.command("serve")
def gateway_serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8700,
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default SQLite).")
    ] = None,
    log_level: Annotated[str, typer.Option()] = "warning",
    flower_superlink: Annotated[
        str | None,
        typer.Option(help="host:port of a Flower SuperLink run elsewhere: enables /v1/trainings."),
    ] = None,
    flower_insecure: Annotated[bool, typer.Option(help="Plain text to the SuperLink.")] = False,
    with_superlink: Annotated[
        bool,
        typer.Option(
            "--with-superlink",
            help="Start a Flower SuperLink beside the gateway (on --host, at --superlink-port) "
            "and train through it: enables /v1/trainings; stopped with the gateway. Plain text "
            "on 127.0.0.1 only: another --host needs --superlink-certfile/-keyfile/-ca-certfile.",
        ),
    ] = False,
    superlink_port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="With --with-superlink: its port (0: a free one)."),
    ] = 9092,
    superlink_certfile: SuperLinkFile = None,
    superlink_keyfile: SuperLinkFile = None,
    superlink_ca_certfile: SuperLinkFile = None,
) -> None:
    """Serve the gateway API (one process: the long-poll queues live in it)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.core.config import Settings
    from gateway.training.deployment import LocalFederation, TLSFiles

    tls_files = [superlink_certfile, superlink_keyfile, superlink_ca_certfile]
    federation: LocalFederation | None = None
    if with_superlink:
        if flower_superlink:
            _fail(ValueError("give either --with-superlink or --flower-superlink, not both"))
        tls = None
        if superlink_certfile and superlink_keyfile and superlink_ca_certfile:
            tls = TLSFiles(superlink_certfile, superlink_keyfile, superlink_ca_certfile)
        elif any(tls_files):
            _fail(
                ValueError(
                    "TLS for the SuperLink needs all of --superlink-certfile, "
                    "--superlink-keyfile and --superlink-ca-certfile"
                )
            )
        federation = LocalFederation(
            home=(state_dir / "superlink").resolve(), port=superlink_port, host=host, tls=tls
        )
        try:
            federation.start_superlink()
        except (ValueError, RuntimeError, TimeoutError) as err:
            federation.stop()
            _fail(err)
        flower_superlink = federation.address
        flower_insecure = tls is None
        typer.echo(
            f"Flower SuperLink on {host}:{federation.port} (log {federation.home}/superlink.log); "
            f"nodes join with: varde node run ... --flower-superlink <this host>:{federation.port}"
            + (" --flower-insecure" if tls is None else " --flower-root-certificates <CA file>"),
            err=True,
        )
    elif any(tls_files):
        _fail(ValueError("--superlink-certfile/-keyfile/-ca-certfile go with --with-superlink"))
    # uvicorn re-raises SIGTERM after its graceful shutdown; as KeyboardInterrupt it unwinds
    # through ``finally`` below, so the SuperLink is stopped with the gateway.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        settings = Settings(
            state_dir=state_dir,
            database_url=database_url,
            flower_superlink=flower_superlink,
            flower_insecure=flower_insecure,
            flower_root_certificates=(
                federation.tls.ca_certfile
                if federation is not None and federation.tls is not None
                else None
            ),
        )
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            workers=1,
            ws="none",
            timeout_graceful_shutdown=3,
        )
    except KeyboardInterrupt:
        pass
    finally:
        if federation is not None:
            federation.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@node_app.command("run")
def node_run(
    policy: Annotated[Path, typer.Option(help="policies/<site>.yaml; missing file = deny all.")],
    gateway: Annotated[str, typer.Option(help="Gateway URL (the node only connects out).")],
    data: Annotated[Path, typer.Option(help="Registry file (.parquet or .csv).")],
    state_dir: Annotated[Path, typer.Option(help="Node state: key, ledger, audit.")],
    enroll_token: Annotated[str | None, typer.Option(help="One-time token (first start).")] = None,
    site: Annotated[
        str | None, typer.Option(help="Site name (needed only without a policy).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32)] = 4,
    console_port: Annotated[
        int | None, typer.Option(help="Also serve the staff console on 127.0.0.1 at this port.")
    ] = None,
    flower_superlink: Annotated[
        str | None,
        typer.Option(
            help="host:port of the gateway's Flower SuperLink: also run a Flower SuperNode "
            "(federated training, connecting out only) with this node's policy, data and ledger."
        ),
    ] = None,
    flower_insecure: Annotated[
        bool, typer.Option(help="Plain text to the SuperLink (127.0.0.1 only).")
    ] = False,
    flower_root_certificates: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="CA (PEM) of a TLS SuperLink."),
    ] = None,
) -> None:
    """Run a node: enroll if needed, then long-poll the gateway and answer work."""
    from nodes.policy import PolicyError
    from nodes.runner import SuperNodeSettings, run_node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        supernode = None
        if flower_superlink is not None:
            supernode = SuperNodeSettings(
                flower_superlink,
                insecure=flower_insecure,
                root_certificates=flower_root_certificates,
            )
        elif flower_insecure or flower_root_certificates is not None:
            raise ValueError("--flower-insecure/--flower-root-certificates need --flower-superlink")
        run_node(
            policy_path=policy,
            gateway_url=gateway,
            data_path=data,
            state_dir=state_dir,
            enroll_token=enroll_token,
            site=site,
            workers=workers,
            console_port=console_port,
            supernode=supernode,
        )
    except (PolicyError, VardeError, FileNotFoundError, RuntimeError, ValueError) as err:
        _fail(err)
    except KeyboardInterrupt:
        pass


def _sessions(state_dir: Path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    from gateway.core.config import Settings
    from gateway.core.db import make_engine, make_sessionmaker

    settings = Settings(state_dir=state_dir, database_url=database_url)
    state_dir.mkdir(parents=True, exist_ok=True)
    return make_sessionmaker(make_engine(settings.db_url))


@project_app.command("add")
def project_add(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    state_dir: StateDir = Path(".varde/gateway"),
) -> None:
    """Create a project."""
    from gateway.admin import add_project

    try:
        add_project(_sessions(state_dir), name, description)
    except VardeError as err:
        _fail(err)
    typer.echo(f"project {name} created")


@researcher_app.command("add")
def researcher_add(
    name: str,
    project: Annotated[list[str], typer.Option("--project", help="Project (repeatable).")],
    state_dir: StateDir = Path(".varde/gateway"),
) -> None:
    """Create a researcher and print their bearer token (shown once)."""
    from gateway.admin import add_researcher

    try:
        token = add_researcher(_sessions(state_dir), name, project)
    except VardeError as err:
        _fail(err)
    typer.echo(token)


@admin_app.command("grant")
def admin_grant(
    researcher: str, project: str, state_dir: StateDir = Path(".varde/gateway")
) -> None:
    """Add a researcher to a project."""
    from gateway.admin import grant

    try:
        grant(_sessions(state_dir), researcher, project)
    except VardeError as err:
        _fail(err)
    typer.echo(f"{researcher} may now query {project}")


@admin_app.command("enroll-token")
def admin_enroll_token(
    site: str,
    valid_hours: Annotated[float, typer.Option(min=0.01)] = 24.0,
    state_dir: StateDir = Path(".varde/gateway"),
) -> None:
    """Print a one-time enrollment token for a new site."""
    from gateway.admin import enrollment_token

    try:
        token = enrollment_token(_sessions(state_dir), site, dt.timedelta(hours=valid_hours))
    except VardeError as err:
        _fail(err)
    typer.echo(token)


@app.command()
def query(
    spec: Annotated[Path, typer.Argument(help="Query JSON file ('-' for stdin).")],
    gateway: Annotated[str, typer.Option(envvar="VARDE_GATEWAY")],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN")],
) -> None:
    """Run one query and print per-site and network tables."""
    from varde.client import VardeClient, VardeHTTPError
    from varde.report import render

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


def _print_training(result: Any, out: Any) -> None:
    """Coefficients, per-site spending and job figures as tables (rich, on ``out``)."""
    from rich.table import Table

    status = result.status
    out.print(f"training job {status.id}: {status.state}, round {status.round} of {status.rounds}")
    coefficients = result.coefficients
    if len(coefficients):
        table = Table(title=f"Coefficients after round {status.round}")
        table.add_column("term")
        table.add_column("coefficient", justify="right")
        for term, value in coefficients.items():
            table.add_row(str(term), f"{value:.4f}")
        out.print(table)
    sites = Table(title="Sites")
    sites.add_column("site")
    sites.add_column("rounds", justify="right")
    # Sites whose project accounts in zCDP charged rho: then say which measure each paid.
    mixed = bool((result.sites["measure"] == "rho").any())
    sites.add_column("spent" if mixed else "epsilon spent", justify="right")
    if mixed:
        sites.add_column("measure")
    for site, row in result.sites.iterrows():
        cells = [str(site), str(row["rounds_completed"]), f"{row['spent']:.4g}"]
        sites.add_row(*cells, *([str(row["measure"])] if mixed else []))
    out.print(sites)
    for site, row in result.sites.iterrows():
        if row["refusal"]:
            out.print(f"{site} stopped: {row['refusal']}", soft_wrap=True)
    if status.guarantee:
        out.print(f"Privacy of the coefficients: {status.guarantee}", soft_wrap=True)
    evaluation = result.metrics
    if not evaluation.empty:
        table = Table(title="Evaluation on held-out patients (DP)")
        table.add_column("scope")
        names = [str(c) for c in evaluation.columns]
        columns = [c for c in names if c != "refusal" and not c.endswith("_pm95")]
        for col in columns:
            table.add_column(col + (" (±95%)" if f"{col}_pm95" in names else ""), justify="right")

        def shown(row: Any, col: str) -> str:
            pm = row.get(f"{col}_pm95")
            if pm is None or pm != pm:  # absent or NaN
                return _cell(row[col])
            value = float(row[col])
            digits = 0 if abs(value) >= 10 else 3
            return f"{value:.{digits}f}±{float(pm):.{digits}f}"

        for scope, row in evaluation.iterrows():
            table.add_row(str(scope), *(shown(row, c) for c in columns))
        out.print(table)
        if "refusal" in evaluation.columns:
            for scope, why in evaluation["refusal"].dropna().items():
                out.print(f"{scope} did not evaluate: {why}", soft_wrap=True)
    summary = Table(title="Job")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, value in result.summary.items():
        summary.add_row(str(name), _cell(value))
    out.print(summary)


def _cell(value: Any) -> str:
    """A number for a table; '-' for a missing one (NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if number != number else f"{number:.4g}"


@app.command()
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

    from varde.client import TrainingProgress, TrainingTimeout, VardeClient, VardeHTTPError

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
    _print_training(result, out)
    if not result.ok:
        typer.echo(f"error: training job {result.id} failed: {result.status.detail}", err=True)
        raise typer.Exit(code=1)


@app.command()
def trainings(
    gateway: Annotated[str, typer.Option(envvar="VARDE_GATEWAY")],
    token: Annotated[str, typer.Option(envvar="VARDE_TOKEN")],
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """List your training jobs, newest first."""
    from varde.client import VardeClient, VardeHTTPError

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


@app.command()
def demo(
    once: Annotated[bool, typer.Option(help="Print the example results and exit.")] = False,
    rows: Annotated[int, typer.Option(min=1000, help="Tumours per site.")] = 50_000,
    seed: Annotated[int, typer.Option()] = 0,
    workdir: Annotated[Path, typer.Option("--dir", help="Where data and state go.")] = Path(
        ".demo"
    ),
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Also run a Flower SuperLink and SuperNodes, and train a small federated model "
            "after the queries (about a minute more).",
        ),
    ] = False,
) -> None:
    """Start a gateway and three nodes on 127.0.0.1 and run example queries."""
    from varde.demo import run_demo

    try:
        run_demo(workdir=workdir, rows=rows, seed=seed, once=once, train=train)
    except (RuntimeError, VardeError) as err:
        _fail(err)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
