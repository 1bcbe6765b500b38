"""``varde``: one console command for the whole project.

This is the one place that puts both sides' commands together, which is why it
lives in :mod:`launcher`, the only package allowed to import ``gateway`` and
``nodes`` both. Each side's commands live with that side
(:mod:`gateway.cli`, :mod:`nodes.cli`, :mod:`varde_client.cli`) and import
their modules inside the command, so ``varde node run`` on a hospital machine
never loads gateway code and vice versa.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli import admin_app, gateway_app
from launcher.cli_errors import VardeGroup
from nodes.cli import audit_app, node_app, policy_app, synth_command
from varde.errors import VardeError
from varde_client.cli import client_app

app = typer.Typer(
    cls=VardeGroup,
    help="Varde: federated, differentially private cancer-registry queries.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a frame's locals hold tokens (see cli_errors)
)
app.add_typer(gateway_app, name="gateway")
app.add_typer(node_app, name="node")
app.add_typer(admin_app, name="admin")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.registered_commands += [synth_command, *client_app.registered_commands]


@app.callback()
def options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="VARDE_DEBUG",
            help="On an error, also print the traceback (plain, no locals, secrets masked).",
        ),
    ] = False,
) -> None:
    """Varde: federated, differentially private cancer-registry queries."""


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
    console: Annotated[
        bool,
        typer.Option(
            "--console",
            help="Also serve each node's staff console on 127.0.0.1 and print the URLs and a "
            "staff login.",
        ),
    ] = False,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="site=FILE: that site runs on your registry file (common schema, or the "
            "source of its --mapping); repeat per site. Never overwritten.",
        ),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--mapping", help="site=FILE: that site reads its data through your mapping file."
        ),
    ] = None,
) -> None:
    """Start a gateway and three nodes on 127.0.0.1 and run example queries."""
    from launcher.demo import run_demo

    try:
        run_demo(
            workdir=workdir,
            rows=rows,
            seed=seed,
            once=once,
            train=train,
            consoles=console,
            data=site_files("--data", data or []),
            mappings=site_files("--mapping", mapping or []),
        )
    except (RuntimeError, VardeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err


def site_files(flag: str, pairs: list[str]) -> dict[str, Path]:
    """``site=FILE`` pairs as a dict; a missing ``=``, a repeated site or a missing file fails.

    >>> site_files("--data", ["oslo=a.csv"])
    {'oslo': PosixPath('a.csv')}
    """
    out: dict[str, Path] = {}
    for pair in pairs:
        site, sep, file = pair.partition("=")
        if not sep or not site or not file:
            raise typer.BadParameter(f"{flag} {pair!r}: use site=FILE")
        if site in out:
            raise typer.BadParameter(f"{flag}: site {site!r} given twice")
        out[site] = Path(file)
    return out


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
