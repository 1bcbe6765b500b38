"""``varde node init`` and ``varde node doctor``: join the network, and check a node's set-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nodes.cli.common import CaFile, DevNetwork, fail

setup_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True)


@setup_app.command("init")
def node_init(
    gateway: Annotated[
        str, typer.Option(help="The gateway's URL, https://... (from its operator).")
    ],
    token: Annotated[
        str, typer.Option(help="The one-time enrollment token (varde admin enroll-token).")
    ],
    site: Annotated[
        str | None, typer.Option(help="This site's name, as the token was made for.")
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="The node directory to create (must not exist).")
    ] = Path("varde-node"),
    data: Annotated[
        Path | None, typer.Option(help="The registry file (checked now, used by 'node run').")
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="The site's mapping file (checked now, with --data).")
    ] = None,
    ca_file: CaFile = None,
    dev_network: DevNetwork = False,
) -> None:
    """Create a node directory (key, config, deny-all policy, starter mapping) and enroll it.

    Everything is checked before the one-time token is spent; on any failure no
    directory is left behind.
    """
    from nodes.node_init import InitError, InitRequest, init_node

    req = InitRequest(
        gateway_url=gateway,
        token=token,
        directory=directory,
        site=site,
        data=data,
        mapping=mapping,
        ca_file=ca_file,
        dev_network=dev_network,
    )
    try:
        result = init_node(req)
    except InitError as err:
        fail(str(err))
    cfg = result.config
    where = result.directory
    typer.echo(f"node {cfg.site} enrolled at {cfg.gateway_url}; directory {where}")
    typer.echo(f"  this node's key:   {result.key_fingerprint}  ({where}/keys/node_key.pem)")
    typer.echo(f"  gateway key pinned: {result.gateway_key_fingerprint}")
    typer.echo(f"  policy: {where / cfg.policy} DENIES EVERYTHING until staff edit it")
    typer.echo(f"  starter mapping: {where}/mapping.yaml")
    if cfg.data is None and cfg.mapping is None:
        typer.echo(f"  no data yet: set data: (or mapping:) in {where}/config.yaml")
    typer.echo(f"next: varde node doctor --config {where}/config.yaml")
    typer.echo(f"then: varde node run --config {where}/config.yaml")


@setup_app.command("doctor")
def node_doctor(
    config: Annotated[Path, typer.Option(help="DIR/config.yaml written by 'varde node init'.")],
    ca_file: CaFile = None,
    dev_network: DevNetwork = False,
) -> None:
    """Check config, key, policy, data, proxy, TLS, clock and the gateway's view of this key.

    Prints each check as ok / warn / fail with the fix; exits 1 if any failed.
    Changes nothing and takes no work from a running node. ``--ca-file`` and
    ``--dev-network`` override the config's (to try a fix before writing it).
    """
    from nodes.doctor import diagnose

    checks = diagnose(config, ca_file=ca_file, dev_network=dev_network or None)
    for check in checks:
        typer.echo(check.render())
    failed = [c.name for c in checks if c.status == "fail"]
    warned = [c.name for c in checks if c.status == "warn"]
    if failed:
        typer.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"all checks passed{f' ({len(warned)} warning(s))' if warned else ''}")
