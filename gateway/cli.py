"""``varde gateway serve`` and ``varde admin ...``: run the central gateway and manage its accounts.

Gateway modules are imported inside the commands, so ``varde --help`` (or a
node's command) never loads the gateway's web stack.
"""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from varde.errors import VardeError
from varde.redaction import install_log_redaction, redact

gateway_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Run the central gateway.", no_args_is_help=True
)
admin_app = typer.Typer(
    pretty_exceptions_show_locals=False,
    help="Researchers, projects and enrollment tokens (gateway side).",
    no_args_is_help=True,
)
project_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Projects.", no_args_is_help=True
)
researcher_app = typer.Typer(
    pretty_exceptions_show_locals=False, help="Researchers.", no_args_is_help=True
)
admin_app.add_typer(project_app, name="project")
admin_app.add_typer(researcher_app, name="researcher")

StateDir = Annotated[Path, typer.Option("--state-dir", help="Gateway state directory (DB, key).")]


def _fail(err: Exception) -> NoReturn:
    typer.echo(f"error: {redact(str(err))}", err=True)
    raise typer.Exit(code=2)


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
        str | None,
        typer.Option(
            envvar="VARDE_DATABASE_URL",
            help="SQLAlchemy URL (default SQLite). From the environment, its password stays "
            "out of the process list.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="VARDE_LOG_LEVEL")] = "warning",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="VARDE_LOG_FORMAT",
            help="text (uvicorn's), or json: one JSON object a line, every record with its "
            "request id (X-Request-ID); --log-level info logs each query and release.",
        ),
    ] = "text",
    flower_superlink: Annotated[
        str | None,
        typer.Option(help="host:port of a Flower SuperLink run elsewhere: enables /v1/trainings."),
    ] = None,
    flower_insecure: Annotated[bool, typer.Option(help="Plain text to the SuperLink.")] = False,
    flower_root_certificates: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="With --flower-superlink: the CA (PEM) that signed that SuperLink's certificate.",
        ),
    ] = None,
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Serve HTTPS with this certificate chain (PEM, server certificate first).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="The private key of --tls-cert (PEM)."),
    ] = None,
    dev_network: Annotated[
        bool,
        typer.Option(
            "--dev-network",
            help="Allow plain http on a --host other than loopback (a development network "
            "only: tokens and released numbers would cross it unencrypted).",
        ),
    ] = False,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers",
            help="Behind a TLS reverse proxy: trust its X-Forwarded-For/-Proto headers "
            "(from --forwarded-allow-ips only). docs/OPERATIONS.md shows the setup.",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(help="With --proxy-headers: the proxy addresses trusted (comma-separated)."),
    ] = "127.0.0.1",
) -> None:
    """Serve the gateway API (SQLite: one process holds the queues; PostgreSQL: replicas).

    Plain http only on loopback (127.0.0.1, ::1, localhost): another --host needs
    --tls-cert/--tls-key, or a TLS reverse proxy in front on loopback, or --dev-network.
    """
    import uvicorn

    from gateway.app import create_app
    from gateway.core.config import Settings
    from gateway.migrations import SchemaNotAtHead
    from gateway.training.deployment import LocalFederation, TLSFiles

    if log_format not in ("text", "json"):
        _fail(ValueError("--log-format must be text or json"))
    if log_format == "json":
        from varde.logs import configure_logging

        configure_logging("json", log_level, component="gateway")
    install_log_redaction()  # tokens and keys never reach the gateway's logs
    try:
        check_listen_tls(host, tls_cert, tls_key, dev_network=dev_network)
    except ValueError as err:
        _fail(err)
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
                else flower_root_certificates
            ),
        )
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            # json: uvicorn's loggers propagate to the root's JSON handler, not its own format
            log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            workers=1,
            ws="none",
            timeout_graceful_shutdown=3,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    except KeyboardInterrupt:
        pass
    except SchemaNotAtHead as err:  # an older PostgreSQL schema: the operator migrates it
        _fail(err)
    finally:
        if federation is not None:
            federation.stop()


def check_listen_tls(
    host: str, tls_cert: Path | None, tls_key: Path | None, *, dev_network: bool
) -> None:
    """Refuse a listening setup that would carry tokens in plain text off this machine.

    Why here and not in uvicorn: uvicorn serves plain http on any address it is
    given. Researchers' bearer tokens, enrollment tokens and released numbers
    cross this link, so plain http is allowed only on loopback (where a TLS
    reverse proxy on the same machine may terminate TLS) or when the operator
    says explicitly that this is a development network.
    """
    from varde.processes import is_loopback

    if (tls_cert is None) != (tls_key is None):
        raise ValueError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    if tls_cert is None and not is_loopback(host) and not dev_network:
        raise ValueError(
            f"refusing plain http on --host {host}: give --tls-cert and --tls-key, or listen "
            "on 127.0.0.1 behind a TLS reverse proxy (--proxy-headers), or add --dev-network "
            "on a development network"
        )


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sessions(state_dir: Path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    from gateway.core.config import Settings
    from gateway.core.db import make_engine, make_sessionmaker
    from gateway.migrations import SchemaNotAtHead

    settings = Settings(state_dir=state_dir, database_url=database_url)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return make_sessionmaker(make_engine(settings.db_url))
    except SchemaNotAtHead as err:
        _fail(err)


@gateway_app.command("migrate")
def gateway_migrate(
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="VARDE_DATABASE_URL",
            help="SQLAlchemy URL of the shared database (default: the SQLite in --state-dir).",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Only say whether the schema is at head (exit 1 if not)."),
    ] = False,
) -> None:
    """Bring the gateway database's schema to this version's head (run once per upgrade).

    Replicas on PostgreSQL refuse to start on an older schema: stop them, run this
    once, start them again. An embedded SQLite is upgraded at start-up anyway.
    """
    from sqlalchemy import create_engine

    from gateway import migrations
    from gateway.core.config import Settings

    settings = Settings(state_dir=state_dir, database_url=database_url)
    if settings.database_url is None:
        state_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            found = migrations.current(conn)
        if check:
            typer.echo(f"schema revision {found or 'none'}; head {migrations.head()}")
            if found != migrations.head():
                raise typer.Exit(code=1)
            return
        try:
            before, after = migrations.upgrade(engine)
        except migrations.SchemaNotAtHead as err:
            _fail(err)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"schema already at head ({after}); nothing to do")
    else:
        typer.echo(f"schema upgraded from {before or 'empty'} to {after}")


AdminDatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="VARDE_DATABASE_URL",
        help="The gateway's database, if not the SQLite one in --state-dir.",
    ),
]


@project_app.command("add")
def project_add(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
) -> None:
    """Create a project."""
    from gateway.admin import add_project

    try:
        add_project(_sessions(state_dir, database_url), name, description)
    except VardeError as err:
        _fail(err)
    typer.echo(f"project {name} created")


@researcher_app.command("add")
def researcher_add(
    name: str,
    project: Annotated[list[str], typer.Option("--project", help="Project (repeatable).")],
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
) -> None:
    """Create a researcher and print their bearer token (shown once)."""
    from gateway.admin import add_researcher

    try:
        token = add_researcher(_sessions(state_dir, database_url), name, project)
    except VardeError as err:
        _fail(err)
    typer.echo(token)


@admin_app.command("grant")
def admin_grant(
    researcher: str,
    project: str,
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
) -> None:
    """Add a researcher to a project."""
    from gateway.admin import grant

    try:
        grant(_sessions(state_dir, database_url), researcher, project)
    except VardeError as err:
        _fail(err)
    typer.echo(f"{researcher} may now query {project}")


@admin_app.command("enroll-token")
def admin_enroll_token(
    site: str,
    expires: Annotated[
        str | None,
        typer.Option(help="How long the token is valid: 48h, 2d, 90m, 1h30m (default 24h)."),
    ] = None,
    valid_hours: Annotated[
        float | None, typer.Option(min=0.01, help="The same in hours (older form).")
    ] = None,
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
) -> None:
    """Print a one-time enrollment token for a site (also to re-admit a revoked one)."""
    from gateway.admin import enrollment_token, parse_duration

    try:
        if expires is not None and valid_hours is not None:
            raise ValueError("give --expires or --valid-hours, not both")
        valid_for = (
            parse_duration(expires)
            if expires is not None
            else dt.timedelta(hours=24.0 if valid_hours is None else valid_hours)
        )
        token = enrollment_token(_sessions(state_dir, database_url), site, valid_for)
    except (VardeError, ValueError) as err:
        _fail(err)
    typer.echo(token)


@admin_app.command("nodes")
def admin_nodes(
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Every enrolled node: last seen, version, key fingerprint and state."""
    from gateway.admin import list_nodes

    nodes = list_nodes(_sessions(state_dir, database_url))
    if as_json:
        for node in nodes:
            typer.echo(node.model_dump_json())
        return
    if not nodes:
        typer.echo("no enrolled nodes (make a token: varde admin enroll-token SITE --expires 48h)")
        return
    rows = [
        (
            n.site,
            f"{n.last_seen:%Y-%m-%d %H:%M:%S}" if n.last_seen else "-",
            n.version or "-",
            n.key_fingerprint,
            n.state,
        )
        for n in nodes
    ]
    head = ("site", "last seen (UTC)", "version", "key", "state")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@admin_app.command("revoke")
def admin_revoke(
    site: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the gateway audit).")] = "",
    state_dir: StateDir = Path(".varde/gateway"),
    database_url: AdminDatabaseUrl = None,
) -> None:
    """Refuse a node from now on (its polls get 403, audited); a new token re-admits it."""
    from gateway.admin import revoke_node

    try:
        revoke_node(_sessions(state_dir, database_url), site, reason)
    except VardeError as err:
        _fail(err)
    typer.echo(
        f"site {site} revoked: its polls are refused from now on; to re-admit it, "
        f"give it a new token (varde admin enroll-token {site} --expires 48h)"
    )
